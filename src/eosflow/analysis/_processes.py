r"""The processes of one run side by side (``config.processes``; Cohen, Damian et al.,
*Understanding Optimization in Deep Learning with Central Flows*, ICLR 2025, arXiv
2410.24206): how well the central flow predicts the discrete run's time average.

* :func:`process_comparison`: after the EoS onset of the discrete run, the relative error
  of the central flow's predicted loss $L(w) + \tfrac12\langle\Sigma, H\rangle$ against the
  discrete two-step average $\tfrac12(L(w_t) + L(w_{t+1}))$, of the central flow's own
  $L(w(t))$ against the midpoint's $L(w^*_t)$, and at the end the distance ratio
  $\|w_\text{central} - w^*\| / \|w_\text{stable} - w^*\|$ (the paper: small).
* :func:`processes_figure` (``processes``): the losses of the four processes and their
  sharpness against $2/\eta$.
"""

from typing import Any

import numpy as np

from ._style import RunLike, _figure, _line, _load, _log_y, _title
from ._summary import eos_onset, pairing_steps, points, stableness


def has_processes(run: RunLike) -> bool:
    """Whether the run stepped any process beside the optimizer."""
    return len(_load(run).processes) > 1


def _rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ok = np.isfinite(a) & np.isfinite(b) & (b != 0)
    return np.abs(a[ok] - b[ok]) / np.abs(b[ok])


def _stats(r: np.ndarray) -> dict[str, float | None]:
    if not len(r):
        return {"max": None, "median": None, "mean": None}
    return {"max": float(r.max()), "median": float(np.median(r)), "mean": float(r.mean())}


def process_comparison(run: RunLike) -> dict[str, Any] | None:
    """How the processes of ``run`` compare (a single run; None without processes).

    Returns:
        ``onset`` (the discrete run's EoS onset step, or None), ``steps_compared``
        (rows from the onset to the second-to-last step), ``predicted_vs_two_step``
        (``max``, ``median``, ``mean`` of $|\\hat L_t - \\bar L_t| / \\bar L_t$ over them,
        $\\hat L$ the central flow's predicted loss, $\\bar L_t = \\frac12(L(w_t) +
        L(w_{t+1}))$), ``mean_loss`` (the window means of both and their relative
        difference), ``central_vs_midpoint`` (the same statistics of $L(w(t))$ against
        $L(w^*_t)$), ``distance_ratio`` ($\\|w_c - w^*\\| / \\|w_s - w^*\\|$ at the last row,
        with both distances), ``central_hvps_per_step`` (the central flow's eigen-solves,
        all substeps), each missing where a process is missing.
    """
    run = _load(run)
    procs = run.processes
    if len(procs) == 1 or run.sweep:
        return None
    pts = points(run)
    if not pts:
        return None
    p = pts[0]
    st = stableness(p)
    onset = None if st is None else eos_onset(
        *st, consecutive=pairing_steps(p.config, st[0]) is not None)
    m = run.metrics
    steps = np.asarray(m["step"])
    loss = np.asarray(m["loss"], np.float64)
    two = np.full_like(loss, np.nan)
    two[:-1] = 0.5 * (loss[:-1] + loss[1:])
    after = steps >= (onset if onset is not None else steps[-1] + 1)
    out: dict[str, Any] = {"onset": onset, "steps_compared": int(np.sum(after[:-1]))}
    cen, mid, sta = procs.get("central"), procs.get("midpoint"), procs.get("stable")
    if cen is not None:
        pred = np.asarray(cen["predicted_loss"], np.float64)
        out["predicted_vs_two_step"] = _stats(_rel(pred[after], two[after]))
        ok = after & np.isfinite(two)
        if ok.any():
            a, b = float(pred[ok].mean()), float(two[ok].mean())
            out["mean_loss"] = {"central_predicted": a, "discrete_two_step": b,
                                "relative_difference": abs(a - b) / abs(b)}
    if cen is not None and "eig_matvecs" in cen:
        out["central_hvps_per_step"] = float(np.mean(cen["eig_matvecs"]))
    if cen is not None and mid is not None:
        out["central_vs_midpoint"] = _stats(_rel(np.asarray(cen["loss"], np.float64)[after],
                                                 np.asarray(mid["loss"], np.float64)[after]))
    if cen is not None and sta is not None and "dist_to_midpoint" in cen:
        dc = float(cen["dist_to_midpoint"][-1])
        ds = float(sta["dist_to_midpoint"][-1])
        out["distance_ratio"] = {"central": dc, "stable": ds,
                                 "ratio": dc / ds if ds > 0 else None}
    return out


def comparison_line(c: dict[str, Any] | None) -> str | None:
    """One sentence of :func:`process_comparison`'s numbers (None without any)."""
    if not c:
        return None
    parts = []
    if c.get("onset") is None:
        parts.append("no EoS onset in the discrete run")
    else:
        parts.append(f"after the EoS onset (step {c['onset']}, {c['steps_compared']} steps)")
    pv = c.get("predicted_vs_two_step")
    if pv and pv["max"] is not None:
        parts.append(f"central predicted loss vs the discrete two-step average: relative "
                     f"error max {pv['max']:.3g}, median {pv['median']:.3g}")
    ml = c.get("mean_loss")
    if ml:
        parts.append(f"window means {ml['central_predicted']:.4g} vs "
                     f"{ml['discrete_two_step']:.4g} ({ml['relative_difference']:.3g})")
    cm = c.get("central_vs_midpoint")
    if cm and cm["max"] is not None:
        parts.append(f"L(w_central) vs L(midpoint): max {cm['max']:.3g}, median "
                     f"{cm['median']:.3g}")
    if c.get("central_hvps_per_step") is not None:
        parts.append(f"central flow {c['central_hvps_per_step']:.1f} HVPs/step")
    dr = c.get("distance_ratio")
    if dr and dr["ratio"] is not None:
        parts.append(f"at the end |w_central - w_mid| / |w_stable - w_mid| = "
                     f"{dr['central']:.4g} / {dr['stable']:.4g} = {dr['ratio']:.3g}")
    return "; ".join(parts)


def processes_figure(run: RunLike):
    """Losses of the processes (discrete, its two-step average, midpoint, the central flow's
    prediction and its own loss, stable) and their sharpness against $2/\\eta$ (RMSProp: the
    preconditioned sharpness of the discrete run and the central flow)."""
    run = _load(run)
    procs = run.processes
    if len(procs) == 1:
        return None
    fig, (ax_l, ax_s) = _figure(1, 2, 3.0)
    d = procs["discrete"]
    t = np.asarray(d["step"])
    loss = np.asarray(d["loss"], np.float64)
    vals = [loss]
    _line(ax_l, t, loss, color="0.7", lw=0.6, label="discrete")
    _line(ax_l, t[:-1], 0.5 * (loss[:-1] + loss[1:]), color="k", lw=0.9,
          label="discrete, two-step mean")
    rms = run.config.get("optimizer") == "rmsprop"
    styles = {"midpoint": ("C0", "-", "loss", "midpoint"),
              "stable": ("C2", "--", "loss", "stable (preconditioned flow)" if rms
                         else "stable (gradient flow)"),
              "central": ("C3", "-", "predicted_loss", "central, predicted")}
    for name, (color, ls, col, label) in styles.items():
        if name in procs:
            y = np.asarray(procs[name][col], np.float64)
            vals.append(y)
            _line(ax_l, t, y, color=color, ls=ls, lw=1.0, label=label)
    if "central" in procs:
        _line(ax_l, t, np.asarray(procs["central"]["loss"]), color="C3", ls=":", lw=1.0,
              label="central, L(w)")
    _log_y(ax_l, np.concatenate([v[np.isfinite(v)] for v in vals]))
    ax_l.set(xlabel="step", ylabel="training loss")
    ax_l.legend(fontsize=7)
    lr = float(run.config.get("lr", np.nan))
    # RMSProp's central flow holds the preconditioned sharpness at 2/eta (the stable
    # process records only the raw lambda_1, so it is left out of that panel)
    pre = "precond_lambda_1" in procs.get("central", {})
    col = "precond_lambda_1" if pre else "lambda_1"
    for name, color in (("discrete", "0.5"), ("stable", "C2"), ("central", "C3")):
        lam = procs.get(name, {}).get(col)
        if lam is not None:
            ok = np.isfinite(lam)
            _line(ax_s, t[ok], np.asarray(lam)[ok], color=color, lw=1.0, label=name)
    ax_s.axhline(2 / lr, color="k", ls="--", lw=0.8, label=r"$2/\eta$")
    ax_s.set(xlabel="step", ylabel=r"preconditioned $\lambda_1(P^{-1}H)$" if pre
             else r"sharpness $\lambda_1$")
    if pre:  # from nu = (1 - decay) g^2 the first steps' value is ~10x the edge
        ax_s.set_ylim(0, 2.5 * 2 / lr)
    ax_s.legend(fontsize=7)
    fig.suptitle(_title(run, "processes from one initialization"))
    return fig
