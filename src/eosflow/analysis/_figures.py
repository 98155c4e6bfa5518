r"""Figures of saved runs: pure functions of a run directory, written as PNG and SVG.

Each figure has a builder that returns a ``matplotlib.figure.Figure`` (tests inspect its
axes and lines) and the ``plot_*`` functions save them into ``RUN/figures/``:

* :func:`cohen_panel` (``training``): the training loss; $\lambda_1$ with the $2/\eta$ line
  (GD, or its momentum analogue); for normalized GD and GD on $\sqrt L$ the stableness
  $S_t = \eta_t\lambda_1$ with the line at 2 and the harmonic sum $1/S_t + 1/S_{t+1}$ with
  the line at 1 (Arora, Li & Panigrahi 2022, Thm 4.7; Cohen et al. 2021, Fig. 1).
* :func:`flow_figure` (``flow``, normalized GD and GD on $\sqrt L$): $\lambda_1$ against
  the limiting flow's clock $s = \eta^2 t/4$ or $\eta^2 t/8$ after any warm-up, where runs
  at different $\eta$ collapse onto one curve (as in the paper's MNIST figures).
* :func:`prediction_figure` (``prediction``): $\Phi(x_t)$ and $\lambda_1(\Phi(x_t))$ against
  $\tau = \eta^2 t$, overlaid with the limiting flow $X(\tau)$ of ``prediction.npz``.
* :func:`density_figure` (``density``): the Hessian's spectral density at the saved steps.
* :func:`sweep_figure` (``sweep``): $\lambda_1$ at the end and its mean after the EoS onset
  against $2/\eta$ across a sweep, with the line $y = x$.
* :func:`compare_figure` (``compare``): several runs overlaid.
* :func:`verify_figure` (``verify``): the tracking-error rates of ``eosflow verify``.

matplotlib is imported inside the functions (the package imports without it) and only its
object-oriented ``Figure`` API is used: no pyplot, no global state, no display needed.
"""
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..curvature import smoothing_width
from ._prediction import prediction_comparison, prediction_status
from ._processes import has_processes, processes_figure
from ._style import (
    FORMATS,
    SHARPNESS,
    TAU,
    RunLike,
    _close,
    _colors,
    _figure,
    _line,
    _load,
    _log_y,
    _style,
    _threshold_label,
    _title,
    _wants_log,
    save_figure,
)
from ._summary import (
    Point,
    collapse,
    flow_clock,
    flow_clock_name,
    is_adaptive,
    lambda_thresholds,
    method_of,
    points,
    two_step_average,
)
from ._sweep_figures import sweep_figure
from ._training_figure import cohen_panel

# --- prediction against run ----------------------------------------------------------------------


def flow_figure(run: RunLike):
    r"""λ1 against the flow's clock $s = \eta^2 (t - t_w)/4$ or $/8$ (:func:`flow_clock`).

    Per trajectory, the two-step average $\tfrac12(\lambda_1(x_t) + \lambda_1(x_{t+1}))$
    (:func:`two_step_average`; the iterate alternates sides of Γ, so single measurements
    zigzag by $O(\eta)$; they are drawn as faint dots), and the prediction's
    $\lambda_1(X)$ dashed from its start (a dotted vertical line, "prediction starts", which
    says when the run's iterate was moved onto Γ there: ``start_on_gamma``),
    with λ1 at Φ(x_t) as diamonds where the run computed it (:attr:`Run.phi`);
    a failed prediction is written on the axes ("prediction failed: <reason>") in place of
    its curve. The title quotes :func:`collapse` for an ``lr`` sweep, else the largest gap
    between the run and the prediction. None for optimizers without a limiting flow
    (anything but normalized GD and GD on √L) or runs without λ1."""
    import textwrap

    run = _load(run)
    pts = points(run)
    curves = [(p, flow_clock(p)) for p in pts]
    curves = [(p, fc) for p, fc in curves if fc is not None and len(fc[0])]
    if not curves:
        return None
    clock = flow_clock_name(run.config)
    c = 1.0 / method_of(run.config).flow_constant
    t_w = int(run.config.get("warmup_steps") or 0)
    with _style():
        fig, (ax,) = _figure(1, 1, 3.6)
        colors = _colors(len(curves))
        multi = len(curves) > 1
        for (p, (s_, lam)), color in zip(curves, colors, strict=True):
            eta = float(p.config["lr"])
            avg = two_step_average(p)
            if avg is None:  # no consecutive measurements: nothing alternates, draw them
                _line(ax, s_, lam, color=color, marker=".", ms=2, lw=0.9,
                      label=p.label if multi else r"$\lambda_1(x_t)$")
                continue
            ax.plot(s_, lam, ls="none", marker=".", ms=1.5, color=color, alpha=0.3,
                    label=None if multi else r"$\lambda_1(x_t)$ measured")
            if avg is not None:
                steps, lam2 = avg
                keep = steps >= t_w
                _line(ax, eta**2 * (steps[keep] - t_w) / c, lam2[keep], color=color, lw=1.1,
                      label=p.label if multi else
                      r"two-step average $\frac{1}{2}(\lambda_1(x_t) + \lambda_1(x_{t+1}))$")
        st = prediction_status(run)
        pred = run.prediction
        eta0 = float(max(run.sweep["lr"]) if run.sweep and "lr" in run.sweep
                     else run.config["lr"])
        start = st.get("start_step") if st else None
        if start is not None:
            s0 = eta0**2 * (int(start) - t_w) / c
            moved = (run.status.get("start_on_gamma") or {}).get("status") == "ok"
            ax.axvline(s0, color="0.3", ls=":", lw=1.0,
                       label=f"prediction starts (step {int(start)}"
                       + (", iterate moved onto Γ)" if moved else ")"))
        if pred is not None:
            s0 = eta0**2 * (int(start or t_w) - t_w) / c
            ax.plot(s0 + np.asarray(pred["tau"]) / c, pred["lambda_1"], color="black",
                    ls="--", lw=1.3, label=r"$\lambda_1(X)$, predicted flow")
            phi = run.phi
            if phi is not None:  # from the start, where X = Phi(x_start)
                ax.plot(np.append(s0, eta0**2 * (phi["step"] - t_w) / c),
                        np.append(pred["lambda_1"][0], phi["lambda_phi"]), ls="none",
                        marker="D", ms=5, mfc="white", mec="#c62828", mew=1.3,
                        label=r"$\lambda_1(\Phi(x_t))$, the run projected onto $\Gamma$")
        elif st is not None and st["status"] != "ok":
            word = "failed" if st["status"] == "failed" else st["status"]
            msg = "\n".join(textwrap.wrap(f"prediction {word}: {st.get('reason')}", 70))
            ax.text(0.5, 0.5, msg, transform=ax.transAxes, ha="center", va="center",
                    color="#c62828", fontsize=8,
                    bbox=dict(facecolor="white", edgecolor="#c62828", alpha=0.9))
        ax.set_xlabel(f"flow time s = {clock}" + (" after the warm-up" if t_w else ""))
        ax.set_ylabel(SHARPNESS)
        ax.legend(loc="best")
        col = collapse(run)
        cmp = prediction_comparison(run)
        if col:
            title = (f"largest gap between learning rates {100 * col['max_rel_diff']:.1f}% "
                     f"for s ≤ {col['s_common']:.3g}, where λ1 falls "
                     f"{100 * col['reference_fall']:.1f}%")
        elif cmp and cmp.get("max_rel_gap") is not None:
            title = (f"two-step average within {100 * cmp['max_rel_gap']:.1f}% of the "
                     f"prediction; λ1 falls {100 * cmp['lambda_fall']:.0f}% "
                     f"(predicted {100 * cmp['predicted_fall']:.0f}%)")
            if cmp.get("phi_max_rel_gap") is not None:
                title += (f"\nλ1 at Φ(x_t) within {100 * cmp['phi_max_rel_gap']:.1f}% "
                          f"({cmp['phi_num_compared']} projections)")
        elif st is not None and st["status"] == "failed":
            title = "prediction failed"
        else:
            title = "sharpness along the limiting flow's time"
        ax.set_title(title)
        fig.suptitle(_title(run, f"λ1 on the flow's clock {clock}"))
    return fig


def load_prediction(run: RunLike) -> dict[str, Any] | None:
    """``RUN/prediction.npz`` as a dict (``tau``, ``X``, ``lambda``, ``method``), or None."""
    run = _load(run)
    path = run.path / "prediction.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        out: dict[str, Any] = {k: z[k] for k in z.files}
    if "method" in out:
        out["method"] = str(out["method"])
    return out


def _phi_columns(p: Point) -> list[str]:
    names = [k for k in p.columns if k.startswith("phi_") and k[4:].isdigit()]
    return sorted(names, key=lambda k: int(k[4:]))


def has_prediction(run: RunLike) -> bool:
    """Whether :func:`prediction_figure` has anything to draw for ``run``."""
    run = _load(run)
    pts = points(run)
    if run.sweep or not pts:
        return False
    p = pts[0]
    pred = load_prediction(run)  # a re-projection prediction has no X: the flow figure's
    return (pred is not None and "X" in pred) or bool(_phi_columns(p)) or (
        "lambda_phi" in p.columns
    )


def prediction_figure(run: RunLike, *, max_coords: int = 4):
    r"""The run against its limiting flow, on $\tau = \eta^2 t$ ($\eta$ = the config's lr).

    Panels (those the run has data for): coordinates of $\Phi(x_t)$ (columns ``phi_0``,
    ``phi_1``, ...; at most ``max_coords``) with $X(\tau)$; $\lambda_1(\Phi(x_t))$ (column
    ``lambda_phi``) with the flow's $\lambda(\tau)$; the tracking error
    $\|\Phi(x_t) - X(\tau_t)\|$ ($X$ interpolated linearly in $\tau$); and
    $\|x_t - \Phi(x_t)\|$ (``phi_dist``). Both errors are predicted $O(\eta)$: a dotted
    line marks $\eta$.

    Returns:
        A ``Figure``, or None for sweeps and runs with neither flow columns nor a prediction.
    """
    run = _load(run)
    if not has_prediction(run):
        return None
    p = points(run)[0]
    pred = load_prediction(run)
    eta = float(run.config["lr"])
    tau = eta**2 * np.asarray(p.steps, np.float64)
    coords = _phi_columns(p)[:max_coords]
    panels: list[Callable] = []
    if coords or (pred is not None and "X" in pred):
        panels.append(lambda ax: _coords_axes(ax, p, tau, coords, pred, max_coords))
    if "lambda_phi" in p.columns or (pred is not None and "lambda" in pred):
        panels.append(lambda ax: _lambda_phi_axes(ax, p, tau, pred))
    if coords and pred is not None and "X" in pred:
        panels.append(lambda ax: _tracking_axes(ax, p, tau, pred, eta))
    if "phi_dist" in p.columns:
        panels.append(lambda ax: _phi_dist_axes(ax, p, tau, eta))
    with _style():
        n = len(panels)
        nrows, ncols = (1, n) if n <= 2 else (2, 2)
        fig, axes = _figure(nrows, ncols, 3.6 if nrows == 1 else 5.6)
        for ax, draw in zip(axes, panels, strict=False):
            draw(ax)
            ax.set_xlabel(TAU)
        for ax in axes[n:]:
            ax.set_visible(False)
        method = pred.get("method") if pred is not None else None
        what = "run vs limiting flow" + (
            f" of {method}" if method and method != run.config.get("optimizer") else "")
        fig.suptitle(_title(run, what))
    return fig


def _coords_axes(ax, p: Point, tau, coords, pred, max_coords) -> None:
    d = len(coords)
    if pred is not None and "X" in pred:
        d = max(d, min(np.asarray(pred["X"]).shape[1], max_coords))
    colors = _colors(max(d, 1))
    for i in range(d):
        name = f"phi_{i}"
        if name in p.columns:
            _line(ax, tau, p.get(name), color=colors[i], marker=".", ms=3, lw=0.8,
                  label=rf"$\Phi(x_t)_{i}$")
        if pred is not None and "X" in pred:
            ax.plot(pred["tau"], np.asarray(pred["X"])[:, i], color=colors[i], ls="--",
                    lw=1.4, label=rf"$X(\tau)_{i}$")
    ax.set_ylabel("coordinate")
    ax.set_title(r"$\Phi(x_t)$ and the flow $X(\tau)$")
    ax.legend(loc="best", ncols=2 if d > 2 else 1)


def _lambda_phi_axes(ax, p: Point, tau, pred) -> None:
    lam = p.get("lambda_1")
    if lam is not None and np.isfinite(np.asarray(lam, np.float64)).any():
        _line(ax, tau, lam, color="0.6", lw=0.7, label=r"$\lambda_1(x_t)$")
    if "lambda_phi" in p.columns:
        _line(ax, tau, p.get("lambda_phi"), color="C0", marker=".", ms=3, lw=0.8,
              label=r"$\lambda_1(\Phi(x_t))$")
    if pred is not None and "lambda" in pred:
        ax.plot(pred["tau"], pred["lambda"], color="C3", ls="--", lw=1.4,
                label=r"$\lambda_1(X(\tau))$ (flow)")
    ax.set_ylabel(r"sharpness $\lambda_1$")
    ax.set_title("sharpness along the flow")
    ax.legend(loc="best")


def _tracking_axes(ax, p: Point, tau, pred, eta) -> None:
    coords = _phi_columns(p)
    X = np.asarray(pred["X"], np.float64)
    ptau = np.asarray(pred["tau"], np.float64)
    d = min(len(coords), X.shape[1])
    phi = np.stack([np.asarray(p.get(f"phi_{i}"), np.float64) for i in range(d)], axis=1)
    ok = np.all(np.isfinite(phi), axis=1) & (tau <= ptau.max()) & (tau >= ptau.min())
    interp = np.stack([np.interp(tau[ok], ptau, X[:, i]) for i in range(d)], axis=1)
    err = np.linalg.norm(phi[ok] - interp, axis=1)
    ax.plot(tau[ok], err, color="C0", marker=".", ms=3, lw=0.8, label=r"$\|\Phi(x_t) - X(\tau)\|$")
    ax.axhline(eta, color="black", ls=":", lw=1.0, label=rf"$\eta = {eta:g}$")
    if _wants_log(np.append(err, eta), 1.0):
        _log_y(ax, np.append(err, eta))
    ax.set_ylabel("distance")
    ax.set_title(r"tracking error, predicted $O(\eta)$")
    ax.legend(loc="best")


def _phi_dist_axes(ax, p: Point, tau, eta) -> None:
    dist = np.asarray(p.get("phi_dist"), np.float64)
    _line(ax, tau, dist, color="C2", marker=".", ms=3, lw=0.8, label=r"$\|x_t - \Phi(x_t)\|$")
    ax.axhline(eta, color="black", ls=":", lw=1.0, label=rf"$\eta = {eta:g}$")
    if _wants_log(np.append(dist, eta), 1.0):
        _log_y(ax, np.append(dist, eta))
    ax.set_ylabel("distance")
    ax.set_title(r"distance to the minimizers $\Gamma$")
    ax.legend(loc="best")


# --- spectral density ----------------------------------------------------------------------------


def load_densities(run: RunLike) -> list[dict[str, np.ndarray]]:
    """The saved spectral densities (``RUN/density/*.npz``) in step order."""
    run = _load(run)
    folder = run.path / "density"
    out = []
    if folder.is_dir():
        for path in sorted(folder.glob("*.npz")):
            with np.load(path, allow_pickle=False) as z:
                out.append({k: z[k] for k in z.files})
    return sorted(out, key=lambda d: int(d["step"]))


def density_on_grid(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray,
                    sigma: float) -> np.ndarray:
    r"""$\frac1P\sum_p \sum_i w_{p,i}\,\mathcal N(x; \theta_{p,i}, \sigma^2)$ on ``grid``."""
    nodes = np.atleast_2d(np.asarray(nodes, np.float64))
    weights = np.atleast_2d(np.asarray(weights, np.float64))
    d = (np.asarray(grid, np.float64)[:, None, None] - nodes[None]) / sigma
    g = np.exp(-0.5 * d**2) / (sigma * math.sqrt(2 * math.pi))
    return np.mean(np.sum(weights[None] * g, axis=2), axis=1)


def density_figure(run: RunLike, *, num_grid: int = 1000, sigma: float | None = None):
    """The Hessian's spectral density at each saved step, log y.

    ``sigma`` (default :func:`eosflow.curvature.smoothing_width` of all nodes and the grid,
    as for ``SpectralDensity.density``) is shared by every step so that the
    curves compare. A dashed line marks the GD threshold 2/η where one exists.

    Returns:
        A ``Figure`` with one line per saved step, or None when the run saved none.
    """
    run = _load(run)
    dens = load_densities(run)
    if not dens:
        return None
    allnodes = np.concatenate([np.asarray(d["nodes"], np.float64).ravel() for d in dens])
    lo, hi = float(allnodes.min()), float(allnodes.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    grid = np.linspace(lo - 0.05 * span, hi + 0.05 * span, num_grid)
    sigma = float(smoothing_width(allnodes, grid)) if sigma is None else float(sigma)
    pts = points(run)
    with _style():
        fig, (ax,) = _figure(1, 1, 3.8)
        import matplotlib

        cmap = matplotlib.colormaps["viridis"]
        peak = 0.0
        for i, d in enumerate(dens):
            y = density_on_grid(d["nodes"], d["weights"], grid, sigma)
            peak = max(peak, float(y.max()))
            color = cmap(i / max(len(dens) - 1, 1) * 0.9)
            ax.plot(grid, y, color=color, label=f"step {int(d['step'])}")
        cfg = pts[0].config if pts else run.config
        thr = lambda_thresholds(cfg, np.array([pts[0].steps[-1] if pts else 0]))
        if method_of(cfg).quantity != "sharpness":  # a threshold on lambda(P^-1 H), not here
            thr = np.full_like(thr, np.nan)
        if np.isfinite(thr).all():
            label = f"{_threshold_label(cfg)} = {thr[0]:.4g}"
            if lo - 0.05 * span <= thr[0] <= hi + 0.05 * span:
                ax.axvline(thr[0], color="black", ls="--", lw=1.0, label=label)
            else:  # name it in the legend rather than stretch the axis
                ax.plot([], [], color="black", ls="--", lw=1.0,
                        label=label + (" (off the axis)"))
        ax.set_yscale("log")
        ax.set_ylim(bottom=max(peak * 1e-6, 1e-300), top=peak * 3 if peak > 0 else None)
        ax.set_xlabel(r"eigenvalue $\lambda$ of $\nabla^2 L$")
        ax.set_ylabel(rf"density ($\sigma$ = {sigma:.2g})")
        ax.legend(loc="best")
        dim = int(dens[0].get("dim", 0))
        sub = " (sweep point 0)" if run.sweep else ""
        fig.suptitle(_title(run, f"Hessian spectral density, n = {dim}{sub}"))
    return fig


# --- writing -------------------------------------------------------------------------------------


def figure_stems(run: RunLike) -> list[str]:
    """The figures :func:`plot_run` writes for ``run`` (file stems, in order)."""
    run = _load(run)
    if not points(run):  # nothing recorded yet
        return []
    stems = ["training"]
    if is_adaptive(run.config) and any(
            (fc := flow_clock(p)) is not None and len(fc[0]) for p in points(run)):
        stems.append("flow")
    if has_prediction(run):
        stems.append("prediction")
    if load_densities(run):
        stems.append("density")
    if run.sweep:
        stems.append("sweep")
    if not run.sweep and has_processes(run):
        stems.append("processes")
    return stems


# the builder of each figure :func:`figure_stems` can name
BUILDERS: dict[str, Callable[[RunLike], Any]] = {
    "training": cohen_panel, "flow": flow_figure, "prediction": prediction_figure,
    "density": density_figure, "sweep": sweep_figure, "processes": processes_figure,
}


def plot_run(run_dir: RunLike, out_dir: str | os.PathLike | None = None, *,
             formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write every figure that ``run_dir`` has data for (see :func:`figure_stems`).

    Args:
        run_dir: a run directory (or a loaded :class:`~eosflow.experiments.Run`).
        out_dir: where to write; default ``RUN/figures``.
        formats: file formats (matplotlib names), PNG and SVG by default.

    Returns:
        The written paths.
    """
    run = _load(run_dir)
    out = Path(out_dir) if out_dir is not None else run.path / "figures"
    paths: list[Path] = []
    for stem in figure_stems(run):
        fig = BUILDERS[stem](run)
        if fig is not None:
            paths += save_figure(fig, out, stem, formats)
            _close(fig)
    return paths


