r"""A run against its prediction (Arora, Li & Panigrahi 2022, arXiv 2205.09745): the
prediction's status as ``status.json`` records it, the gap between the run's two-step
averaged λ1 and the predicted λ1 on the flow's clock, and the one line a terminal prints."""

from typing import Any

import numpy as np

from ..runner import Run
from ._summary import _num, points, two_step_average


def prediction_status(run: Run) -> dict[str, Any] | None:
    """The run's prediction as ``status.json`` records it (``status`` ``"ok"`` or
    ``"failed"``, ``reason``, ``start_step``, ``method``), read from the prediction files
    when the status has no entry (older runs); None when the run makes no prediction."""
    entry = run.status.get("prediction")
    if isinstance(entry, dict):
        return dict(entry)
    pred, error = run.prediction, run.prediction_error
    if pred is None and error is None:
        if run.config.get("reproject_steps") is not None:
            return {"status": "pending", "reason": "the run has not reached the prediction's "
                    "start (within the phase-I distance of Γ after the warm-up)",
                    "start_step": None, "method": None}
        return None
    return {"status": "ok" if pred is not None else "failed", "reason": error,
            "start_step": run.prediction_start, "method": None}


def prediction_comparison(run: Run) -> dict[str, Any] | None:
    r"""The run against its prediction; None when the run makes none.

    The run's λ1 is the two-step average (:func:`two_step_average`) of its first point at
    the measured pairs from the prediction's start $t_0$; the prediction's λ1 is
    interpolated linearly in $\tau = \eta^2 (t - t_0)$ there (within its range). Keys:

    * ``status`` (``"ok"``, ``"failed"``, ``"pending"``), ``reason``, ``start_step``;
    * ``max_rel_gap``, ``median_rel_gap``: of $|\bar\lambda_1 - \lambda_1^{\rm pred}| /
      \lambda_1^{\rm pred}$ over the run (None when failed or nothing to compare);
    * ``lambda_start``, ``lambda_end`` (the run's two-step averages at the first and last
      compared pair), ``lambda_fall`` = their relative fall, and ``predicted_fall`` (the
      prediction's, over the same τ range); ``num_compared``; ``tau_end``;
    * on Γ itself, where the run computed λ1 at Φ(x_t) (``phi_every``, :attr:`Run.phi`):
      ``phi_max_rel_gap`` of $|\lambda_1(\Phi(x_t)) - \lambda_1^{\rm pred}| /
      \lambda_1^{\rm pred}$ over the checks, ``phi_lambda_end`` (the last check's λ1),
      ``phi_fall`` (its fall from the prediction's start, where $X = \Phi(x_{t_0})$),
      ``phi_num_compared`` (None / 0 without checks). The theory predicts Φ(x_t); x_t
      itself may sit far from Γ along flat directions, where λ1 differs;
    * ``start_on_gamma``: status.json's entry of a run moved onto Γ after its warm-up
      (``status``, ``reason``, ``lambda_1``, ``phi_dist``, ...), or None.
    """
    st = prediction_status(run)
    if st is None:
        return None
    out = {**st, "max_rel_gap": None, "median_rel_gap": None, "lambda_start": None,
           "lambda_end": None, "lambda_fall": None, "predicted_fall": None,
           "num_compared": 0, "tau_end": None, "phi_max_rel_gap": None,
           "phi_lambda_end": None, "phi_fall": None, "phi_num_compared": 0,
           "start_on_gamma": run.status.get("start_on_gamma")}
    pred = run.prediction
    pts = points(run)
    if st["status"] != "ok" or pred is None or not pts:
        return out
    start = int(st.get("start_step") or run.prediction_start or 0)
    tau_p = np.asarray(pred["tau"], np.float64)
    lam_p = np.asarray(pred["lambda_1"], np.float64)
    out["tau_end"] = _num(tau_p[-1])
    eta = float(pts[0].config["lr"])
    out.update(_phi_gaps(run.phi, eta, start, tau_p, lam_p))
    avg = two_step_average(pts[0])
    if avg is None:
        return out
    steps, lam = avg
    tau = eta**2 * (np.asarray(steps, np.float64) - start)
    keep = (steps >= start) & (tau <= tau_p[-1] * (1 + 1e-9))
    if not keep.any():
        return out
    tau, lam = tau[keep], lam[keep]
    ref = np.interp(tau, tau_p, lam_p)
    rel = np.abs(lam - ref) / np.abs(ref)
    out.update(
        max_rel_gap=_num(np.max(rel)), median_rel_gap=_num(np.median(rel)),
        lambda_start=_num(lam[0]), lambda_end=_num(lam[-1]),
        lambda_fall=_num((lam[0] - lam[-1]) / lam[0]),
        predicted_fall=_num((ref[0] - ref[-1]) / ref[0]), num_compared=len(rel))
    return out


def _phi_gaps(phi: dict[str, np.ndarray] | None, eta: float, start: int,
              tau_p: np.ndarray, lam_p: np.ndarray) -> dict[str, Any]:
    """The ``phi_*`` keys of :func:`prediction_comparison` from the run's Φ checks."""
    if phi is None:
        return {}
    tau = eta**2 * (np.asarray(phi["step"], np.float64) - start)
    keep = (tau > 0) & (tau <= tau_p[-1] * (1 + 1e-9)) & np.isfinite(phi["lambda_phi"])
    if not keep.any():
        return {}
    lam = np.asarray(phi["lambda_phi"], np.float64)[keep]
    ref = np.interp(tau[keep], tau_p, lam_p)
    rel = np.abs(lam - ref) / np.abs(ref)
    return {"phi_max_rel_gap": _num(np.max(rel)), "phi_lambda_end": _num(lam[-1]),
            "phi_fall": _num((lam_p[0] - lam[-1]) / lam_p[0]),
            "phi_num_compared": int(keep.sum())}


def prediction_line(h: dict[str, Any]) -> str | None:
    """The one line a terminal summary prints about ``headline(run)["prediction"]``
    (None when the run makes no prediction), e.g. ``prediction: ok from step 9000, λ1
    (two-step average) within 3.1% of the predicted flow (max gap); λ1 falls 110 → 48 (56%),
    predicted 55%`` or ``prediction: FAILED: <reason>``."""
    pr = h.get("prediction")
    if not pr:
        return None
    on = pr.get("start_on_gamma") or {}
    moved = ("start on Γ FAILED: " + str(on.get("reason")) + "; " if on.get("status") == "failed"
             else "")
    if pr["status"] == "failed":
        return f"prediction: {moved}FAILED: {pr.get('reason')}"
    if pr["status"] != "ok":
        return f"prediction: {moved}{pr['status']}: {pr.get('reason')}"
    line = f"prediction: {moved}ok from step {pr.get('start_step')}"
    if on.get("status") == "ok" and on.get("step") == pr.get("start_step"):
        dist = np.ravel(on["phi_dist"])[0]  # a sweep's: one per point, the prediction's first
        line += f" (x_w moved onto Γ there; Φ(x_w) was {dist:.3g} from x_w)"
    if pr.get("max_rel_gap") is not None:
        line += (f", λ1 (two-step average) within {100 * pr['max_rel_gap']:.1f}% of the "
                 f"predicted flow (max gap); λ1 falls {pr['lambda_start']:.4g} → "
                 f"{pr['lambda_end']:.4g} ({100 * pr['lambda_fall']:.0f}%), predicted "
                 f"{100 * pr['predicted_fall']:.0f}%")
    if pr.get("phi_max_rel_gap") is not None:
        line += (f"; λ1 at Φ(x_t) within {100 * pr['phi_max_rel_gap']:.1f}% "
                 f"({pr['phi_num_compared']} checks, falls to {pr['phi_lambda_end']:.4g})")
    if pr.get("substeps") is not None:  # the re-projection flow's step control
        line += f"; {pr['substeps']} re-projection substeps"
        if pr.get("unresolved"):
            line += f", {pr['unresolved']} unresolved at {pr.get('finest')}"
    return line
