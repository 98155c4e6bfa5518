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

import io
import itertools
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..curvature import smoothing_width
from . import _rundir as rd
from ._summary import (
    ADAPTIVE,
    FLOW_CLOCK,
    Point,
    collapse,
    eos_onset,
    flow_clock,
    flow_clock_name,
    harmonic_sums,
    lambda_thresholds,
    pairing_steps,
    point_headline,
    points,
    stableness,
    two_step_harmonic_mean,
)

FORMATS = ("png", "svg")
MAX_POINTS = 4000  # per series; longer series keep each bin's min and max (the envelope)
PAGE_WIDTH = 6.5  # inches: a page of text

CAPTIONS = {
    "training": "Training loss and sharpness λ1 (top Hessian eigenvalue) against steps. "
    "Dashed: the stability threshold 2/η of GD (its momentum analogue for heavy-ball and "
    "Nesterov runs). For normalized GD and GD on √L: the stableness S_t = η_t·λ1 (dashed at "
    "2) and the harmonic sum 1/S_t + 1/S_{t+1}, which the theory puts at 1 during EoS. "
    "Dotted vertical: the EoS onset, where the two-step harmonic mean of S_t first reaches "
    "1.9.",
    "prediction": "The run against its predicted limiting flow on the time scale τ = η²·t: "
    "coordinates of Φ(x_t) (the end of gradient flow from x_t) and λ1 at Φ(x_t), with the "
    "flow X(τ) and λ1(X(τ)) dashed; the tracking error ‖Φ(x_t) − X(τ)‖ and the distance "
    "‖x_t − Φ(x_t)‖ to the manifold of minimizers, both predicted O(η).",
    "flow": "Sharpness λ1 against the limiting flow's own clock s = η²t/4 (normalized GD) or "
    "η²t/8 (GD on √L), counted from the end of any warm-up: runs at different η that follow "
    "the flow on the manifold of minimizers from the same start draw the same curve (up to "
    "O(η)); dashed, λ1 along the predicted flow when the run computed it.",
    "density": "Spectral density of the loss Hessian at the saved steps (stochastic "
    "Lanczos quadrature, Gaussian smoothing), log scale.",
    "sweep": "Sweep summary: λ1 at the last step and its mean after the EoS onset against "
    "the threshold 2/η (GD sits on y = x at EoS); right, the stableness after the onset "
    "(mean η·λ1 for GD, theory 2; mean harmonic sum 1/S_t + 1/S_{t+1} for normalized GD, "
    "theory 1).",
    "verify": "eosflow verify: the tracking error of each limiting flow against η on "
    "log-log axes (the claim is O(η): slope 1, dotted), and λ1 along the flow (dashed) and "
    "along the run with the smallest η (markers), normalized by its start.",
    "compare": "Runs overlaid: training loss, sharpness λ1 (dashed: each GD run's 2/η) "
    "and the two-step harmonic mean of the stableness S_t, 2/(1/S_t + 1/S_{t+1}), which "
    "sits at 2 during EoS for GD and normalized GD alike.",
}

RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.framealpha": 0.85,
    "figure.titlesize": 11,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "svg.fonttype": "none",  # text stays text in SVG
    "svg.hashsalt": "eosflow",  # deterministic SVG ids
    "figure.dpi": 100,
    "savefig.dpi": 150,
}

RunLike = str | os.PathLike | rd.Run

SHARPNESS = r"sharpness $\lambda_1$ of $\nabla^2 L$"
HARMONIC = r"$1/S_t + 1/S_{t+1}$"
HMEAN = r"$2/(1/S_t + 1/S_{t+1})$"
TAU = r"$\tau = \eta^2 t$"


# --- helpers -------------------------------------------------------------------------------------


def _load(run: RunLike) -> rd.Run:
    return run if isinstance(run, rd.Run) else rd.load_run(run)


def _style():
    import matplotlib

    return matplotlib.rc_context(RC)


def _figure(nrows: int, ncols: int, height: float, *, sharex: bool | str = False):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(PAGE_WIDTH, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex)
    return fig, list(axes.flat)


def _colors(n: int) -> list:
    import matplotlib

    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def decimate(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS):
    """Thin a long series to about ``max_points`` points, keeping each bin's min and max.

    Striding would alias oscillations of period 2 (keeping one branch of an EoS
    oscillation); the min/max envelope keeps both branches. NaNs are dropped first.
    """
    x, y = np.asarray(x), np.asarray(y, np.float64)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(y) <= max_points:
        return x, y
    nbins = max_points // 2
    edges = np.linspace(0, len(y), nbins + 1).astype(int)
    keep = []
    for a, b in itertools.pairwise(edges):
        if b <= a:
            continue
        seg = y[a:b]
        keep += sorted({a + int(np.argmin(seg)), a + int(np.argmax(seg))})
    keep = np.asarray(keep)
    return x[keep], y[keep]


def _line(ax, x, y, **kw):
    x, y = decimate(x, y)
    return ax.plot(x, y, **kw)


def _wants_log(values: np.ndarray, ratio: float = 30.0) -> bool:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return bool(len(v)) and bool(np.all(v > 0)) and v.max() / v.min() > ratio


def _log_y(ax, values) -> None:
    """Log y; over less than two decades, ticks at 1-2-5 labelled plainly (0.5, not 5e-1)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if len(v) and v.max() / v.min() < 100:
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())


def _title(run: rd.Run, what: str) -> str:
    c = run.config
    name = c.get("name", run.path.name)
    opt = c.get("optimizer", "?")
    sweep = run.sweep
    if sweep and "lr" in sweep:
        eta = f"η ∈ [{min(sweep['lr']):g}, {max(sweep['lr']):g}]"
    else:
        eta = f"η = {float(c.get('lr', math.nan)):g}"
    return f"{_text(name)}: {what} ({opt}, {eta})"


def _threshold_label(config: dict[str, Any]) -> str:
    labels = {"momentum": r"$(2+2\beta)/\eta$", "nesterov": r"$(2+2\beta)/((1+2\beta)\eta)$"}
    return labels.get(config.get("optimizer"), r"$2/\eta$")


def _text(s: str) -> str:
    """A plain string (a run name) made safe for matplotlib's mathtext."""
    return str(s).replace("$", r"\$")


def _mark_onsets(ax, pts: Sequence[Point], colors, *, label: bool = True) -> None:
    labelled = False
    for p, color in zip(pts, colors, strict=True):
        st = stableness(p)
        onset = None if st is None else eos_onset(
            *st, consecutive=pairing_steps(p.config, st[0]) is not None)
        if onset is not None:
            ax.axvline(onset, color=color, ls=":", lw=1.0,
                       label="EoS onset" if label and not labelled else None)
            labelled = True


def save_figure(fig, out_dir: str | os.PathLike, stem: str,
                formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write ``fig`` as ``out_dir/stem.<format>`` for each format (atomically); the paths."""
    out = []
    with _style():
        for fmt in formats:
            buf = io.BytesIO()
            meta = {"Date": None} if fmt == "svg" else None
            fig.savefig(buf, format=fmt, metadata=meta)
            path = Path(out_dir) / f"{stem}.{fmt}"
            rd.atomic_write_bytes(path, buf.getvalue())
            out.append(path)
    return out


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes (for embedding)."""
    buf = io.BytesIO()
    with _style():
        fig.savefig(buf, format="png")
    return buf.getvalue()


# --- the Cohen et al. panel ----------------------------------------------------------------------


def cohen_panel(run: RunLike):
    """The training panel of a run: loss, λ1 with the stability threshold, and for
    normalized GD / GD on √L the stableness and its harmonic sum.

    One line per trajectory (per sweep point, coloured, named in the loss panel's legend).

    Returns:
        A ``matplotlib.figure.Figure``: two axes (loss, λ1) for fixed-step optimizers,
        four (loss, λ1, η_t·λ1, harmonic sum) for normalized GD and GD on √L.
    """
    run = _load(run)
    pts = points(run)
    if not pts:
        raise rd.RunDirError(f"{run.path} has no metrics yet: nothing to plot.")
    adaptive = run.config.get("optimizer") in ADAPTIVE
    with _style():
        fig, axes = _figure(2 if adaptive else 1, 2, 5.4 if adaptive else 3.6)
        colors = _colors(len(pts))
        multi = len(pts) > 1
        ax_loss, ax_lam = axes[0], axes[1]
        losses = np.concatenate([np.asarray(p.get("loss"), np.float64).ravel() for p in pts])
        for p, color in zip(pts, colors, strict=True):
            _line(ax_loss, p.steps, p.get("loss"), color=color,
                  label=p.label if multi else "training loss")
        if _wants_log(losses, 1.0):
            _log_y(ax_loss, losses)
        ax_loss.set_xlabel("step t")
        ax_loss.set_ylabel(r"training loss $L(x_t)$")
        ax_loss.set_title("loss")
        ax_loss.legend(loc="best")

        _sharpness_axes(ax_lam, pts, colors, multi=multi)
        if adaptive:
            _stableness_axes(axes[2], pts, colors)
            _harmonic_axes(axes[3], pts, colors)
        fig.suptitle(_title(run, "training"))
    return fig


def _sharpness_axes(ax, pts: Sequence[Point], colors, *, multi: bool) -> None:
    has_lam = drew_thr = False
    for p, color in zip(pts, colors, strict=True):
        lam = p.get("lambda_1")
        if lam is None or not np.isfinite(np.asarray(lam, np.float64)).any():
            continue
        has_lam = True
        _line(ax, p.steps, lam, color=color, label=None if multi else r"$\lambda_1$")
        if not multi:
            for i in range(2, 10):
                lam_i = p.get(f"lambda_{i}")
                if lam_i is None:
                    break
                _line(ax, p.steps, lam_i, color=color, alpha=0.45, lw=0.8,
                      label=rf"$\lambda_{i}$")
        thr = lambda_thresholds(p.config, p.steps)
        if np.isfinite(thr).any():
            ax.plot(p.steps, thr, color=color if multi else "black", ls="--", lw=1.0,
                    label=None if multi else _threshold_label(p.config))
            drew_thr = True
    if not has_lam:
        ax.text(0.5, 0.5, "sharpness not tracked\n(eig_every = None)", ha="center",
                va="center", transform=ax.transAxes)
    elif multi:  # the colours are named in the loss panel's legend
        from matplotlib.lines import Line2D

        _mark_onsets(ax, pts, colors, label=False)
        handles = [Line2D([], [], color="0.3", label=r"$\lambda_1$")]
        if drew_thr:
            handles.append(Line2D([], [], color="0.3", ls="--",
                                  label=_threshold_label(pts[0].config)))
        handles.append(Line2D([], [], color="0.3", ls=":", label="EoS onset"))
        ax.legend(handles=handles, loc="best")
    else:
        _mark_onsets(ax, pts, ["0.3"])
        ax.legend(loc="best")
    ax.set_xlabel("step t")
    ax.set_ylabel(SHARPNESS)
    ax.set_title("sharpness")


def _stableness_axes(ax, pts: Sequence[Point], colors) -> None:
    allv = []
    multi = len(pts) > 1
    for p, color in zip(pts, colors, strict=True):
        st = stableness(p)
        if st is None:
            continue
        steps, s = st
        allv.append(s)
        _line(ax, steps, s, color=color, lw=0.8, label=None if multi else r"$S_t$")
    ax.axhline(2.0, color="black", ls="--", lw=1.0, label=r"$S = 2$")
    if allv:
        ax.set_yscale("log" if _wants_log(np.concatenate(allv)) else "linear")
    ax.set_xlabel("step t")
    ax.set_ylabel(r"stableness $S_t = \eta_t\lambda_1$")
    ax.set_title(r"stableness ($\eta_t$ = effective step)")
    ax.legend(loc="best")


def _harmonic_axes(ax, pts: Sequence[Point], colors) -> None:
    allv, after = [], []
    multi = len(pts) > 1
    for p, color in zip(pts, colors, strict=True):
        st = stableness(p)
        if st is None:
            continue
        steps, s = st
        pair = pairing_steps(p.config, steps)
        h = harmonic_sums(s, pair)
        ok = np.isfinite(h)  # pairs of consecutive steps only (see pairing_steps)
        allv.append(h[ok])
        onset = eos_onset(steps, s, consecutive=pair is not None)
        if onset is not None:
            after.append(h[ok & (steps[:-1] >= onset)])
        _line(ax, steps[:-1][ok], h[ok], color=color, lw=0.8, marker="." if ok.mean() < 0.9
              else None, ms=2, label=None if multi else HARMONIC)
    ax.axhline(1.0, color="black", ls="--", lw=1.0, label="theory: 1")
    title = "harmonic sum (Thm 4.7)"
    post = np.concatenate(after) if after else np.zeros(0)
    post = post[np.isfinite(post)]
    if len(post):  # the EoS value 1 matters: a linear axis, Phase I clipped at the top
        ax.set_ylim(0.0, max(3.0, 1.1 * float(post.max())))
        title += ", clipped"
    elif allv:
        ax.set_yscale("log" if _wants_log(np.concatenate(allv)) else "linear")
    _mark_onsets(ax, pts, colors if multi else ["0.3"], label=not multi)
    ax.set_xlabel("step t")
    ax.set_ylabel(HARMONIC)
    ax.set_title(title)
    ax.legend(loc="best")


# --- prediction against run ----------------------------------------------------------------------


def flow_figure(run: RunLike):
    r"""λ1 against the flow's clock $s = \eta^2 (t - t_w)/4$ or $/8$ (:func:`flow_clock`),
    one line per trajectory, with $\lambda_1(X)$ of ``prediction.npz`` dashed when present;
    the title quotes :func:`collapse` for an ``lr`` sweep. None for optimizers without a
    limiting flow (anything but normalized GD and GD on √L) or runs without λ1."""
    run = _load(run)
    pts = points(run)
    curves = [(p, flow_clock(p)) for p in pts]
    curves = [(p, fc) for p, fc in curves if fc is not None and len(fc[0])]
    if not curves:
        return None
    clock = flow_clock_name(run.config)
    with _style():
        fig, (ax,) = _figure(1, 1, 3.6)
        colors = _colors(len(curves))
        for (p, (s_, lam)), color in zip(curves, colors, strict=True):
            _line(ax, s_, lam, color=color, marker=".", ms=2, lw=0.9,
                  label=p.label if len(curves) > 1 else r"$\lambda_1(x_t)$")
        pred = load_prediction(run)
        if pred is not None:
            c = FLOW_CLOCK[run.config["optimizer"]]
            ax.plot(np.asarray(pred["tau"]) / c, pred["lambda"], color="black", ls="--",
                    lw=1.3, label=r"$\lambda_1(X)$, predicted flow")
        ax.set_xlabel(f"flow time s = {clock}" + (" after the warm-up"
                                                 if run.config.get("warmup_steps") else ""))
        ax.set_ylabel(SHARPNESS)
        ax.legend(loc="best")
        col = collapse(run)
        ax.set_title(
            f"largest gap between learning rates {100 * col['max_rel_diff']:.1f}% for "
            f"s ≤ {col['s_common']:.3g}, where λ1 falls {100 * col['reference_fall']:.1f}%"
            if col else "sharpness along the limiting flow's time")
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


# --- sweep summary -------------------------------------------------------------------------------


def _sweep_rows(runs: Sequence[rd.Run]) -> list[dict[str, Any]]:
    """One row per trajectory: its headline numbers, config, and the final stableness."""
    rows = []
    for run in runs:
        for p in points(run):
            h = point_headline(p)
            h["config"] = p.config
            st = stableness(p)
            steps, s = st if st is not None else (np.zeros(0), np.zeros(0))
            fin = np.isfinite(s)
            steps, s = steps[fin], s[fin]
            h["eta_lambda_final"] = float(s[-1]) if len(s) else None
            hs = harmonic_sums(s, pairing_steps(p.config, steps)) if len(s) > 1 else s[:0]
            hs = hs[np.isfinite(hs)]
            h["harmonic_sum_final"] = float(hs[-1]) if len(hs) else None
            rows.append(h)
    return rows


def _value_ticks(ax, values: np.ndarray) -> bool:
    """Log x when the values span more than 3x; tick at the values themselves when few.
    Returns whether the axis went logarithmic."""
    v = np.unique(np.asarray(values, np.float64)[np.isfinite(values)])
    log = _wants_log(v, 3.0)
    if log:
        ax.set_xscale("log")
    if 0 < len(v) <= 8:
        from matplotlib.ticker import NullLocator

        ax.set_xticks(v, [f"{x:.3g}" for x in v])
        ax.xaxis.set_minor_locator(NullLocator())
    return log


def _column(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else r[key] for r in rows], np.float64)


def sweep_figure(runs: RunLike | Sequence[RunLike]):
    r"""Sweep summary over the points of a vmapped sweep, or over several single runs.

    Left, fixed-step optimizers: $\lambda_1$ at the end (circles) and its mean after the EoS
    onset (squares) against the threshold $2/\eta$ (or its momentum analogue), with
    $y = x$ (EoS); normalized GD / √L GD: $\lambda_1$ against $\eta$. Right, against
    $\eta$: the stableness at the end and its mean after the onset, $S = \eta\lambda_1$
    (line at 2) for fixed-step optimizers, the harmonic sum $1/S_t + 1/S_{t+1}$ (line at 1)
    for normalized GD and GD on √L.
    """
    single = isinstance(runs, str | os.PathLike | rd.Run)
    runs = [_load(r) for r in ([runs] if single else runs)]
    if not runs:
        raise ValueError("runs: give at least one run (a sweep, or several single runs).")
    rows = _sweep_rows(runs)
    adaptive = all(r["config"].get("optimizer") in ADAPTIVE for r in rows)
    lr = _column(rows, "lr")
    with _style():
        fig, (ax_l, ax_r) = _figure(1, 2, 4.2)
        fin, mean = _column(rows, "lambda_final"), _column(rows, "mean_lambda_after_onset")
        if adaptive:
            x = lr
            ax_l.set_xlabel(r"learning rate $\eta$")
        else:
            x = _column(rows, "lambda_threshold")
            ax_l.set_xlabel(f"stability threshold {_threshold_label(rows[0]['config'])}")
        ax_l.plot(x, fin, "o", color="C0", label=r"$\lambda_1$ at the end")
        if np.isfinite(mean).any():
            ax_l.plot(x, mean, "s", mfc="none", ms=8, color="C1",
                      label=r"mean $\lambda_1$ after EoS onset")
        if not adaptive:
            v = np.concatenate([x, fin, mean])
            v = v[np.isfinite(v) & (v > 0)]
            if len(v):
                lo, hi = v.min() / 1.1, v.max() * 1.1
                ax_l.plot([lo, hi], [lo, hi], color="black", ls="--", lw=1.0,
                          label="$y = x$ (EoS)")
        if _value_ticks(ax_l, x) and not adaptive:
            _log_y(ax_l, np.concatenate([x, fin, mean]))
        ax_l.set_ylabel(r"sharpness $\lambda_1$")
        ax_l.set_title("sharpness across the sweep")

        if adaptive:
            fin_s, mean_s = "harmonic_sum_final", "mean_harmonic_sum_after_onset"
            ylabel, level = HARMONIC, 1.0
        else:
            fin_s, mean_s = "eta_lambda_final", "mean_eta_lambda_after_onset"
            ylabel = (r"stableness $S = \eta\lambda_1$" if rows[0]["config"].get("optimizer")
                      == "gd" else r"stableness $S = 2\lambda_1/\lambda_{\rm crit}$")
            level = 2.0
        ax_r.plot(lr, _column(rows, fin_s), "o", color="C0", label="at the end")
        mean_v = _column(rows, mean_s)
        if np.isfinite(mean_v).any():
            ax_r.plot(lr, mean_v, "s", mfc="none", ms=8, color="C1", label="mean after onset")
        else:
            ax_r.plot([], [], "s", mfc="none", ms=8, color="C1",
                      label="mean after onset (none reached EoS)")
        ax_r.axhline(level, color="black", ls="--", lw=1.0, label=f"EoS: {level:g}")
        _value_ticks(ax_r, lr)
        ax_r.set_xlabel(r"learning rate $\eta$")
        ax_r.set_ylabel(ylabel)
        ax_r.set_title("stableness across the sweep")
        for ax in (ax_l, ax_r):  # below the axes: the points may sit anywhere
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=1)
        names = list(dict.fromkeys(_text(r.config.get("name", r.path.name)) for r in runs))
        title = ", ".join(names[:3]) + ("" if len(names) <= 3 else f", … ({len(names)} runs)")
        opt = runs[0].config.get("optimizer", "?")
        fig.suptitle(f"{title}: sweep summary ({opt}, {len(rows)} points)")
    return fig


# --- comparison ----------------------------------------------------------------------------------


def compare_figure(runs: Sequence[RunLike]):
    """Several runs (or sweep points) overlaid against the step: loss (log y), λ1 with each
    fixed-step run's threshold dashed, and the two-step harmonic mean of the stableness
    (line at 2). The legend names each run (and sweep point)."""
    runs = [_load(r) for r in runs]
    if not runs:
        raise ValueError("runs: give at least one run directory to compare.")
    series: list[Point] = []
    for run in runs:
        name = str(run.config.get("name", run.path.name))
        for p in points(run):
            label = _text(name) if p.index is None else f"{_text(name)}: {p.label}"
            series.append(Point(label, p.index, p.config, p.columns))
    with _style():
        fig, axes = _figure(3, 1, 6.8, sharex=True)
        colors = _colors(len(series))
        ax_loss, ax_lam, ax_s = axes
        losses = []
        for p, color in zip(series, colors, strict=True):
            loss = np.asarray(p.get("loss"), np.float64)
            losses.append(loss)
            _line(ax_loss, p.steps, loss, color=color, label=p.label)
            lam = p.get("lambda_1")
            if lam is not None:
                _line(ax_lam, p.steps, lam, color=color)
                thr = lambda_thresholds(p.config, p.steps)
                if np.isfinite(thr).any():
                    ax_lam.plot(p.steps, thr, color=color, ls="--", lw=0.9)
            st = stableness(p)
            if st is not None:
                hm = two_step_harmonic_mean(st[1], pairing_steps(p.config, st[0]))
                ok = np.isfinite(hm)
                _line(ax_s, st[0][:-1][ok], hm[ok], color=color, lw=0.9)
        if _wants_log(np.concatenate(losses), 1.0):
            _log_y(ax_loss, np.concatenate(losses))
        ax_loss.set_ylabel("training loss")
        ax_loss.legend(loc="best")
        lams = [np.asarray(p.get("lambda_1"), np.float64) for p in series
                if p.get("lambda_1") is not None]
        if lams and _wants_log(np.concatenate(lams)):  # runs of very different sharpness
            _log_y(ax_lam, np.concatenate(lams))
        ax_lam.set_ylabel(SHARPNESS)
        ax_lam.plot([], [], color="0.3", ls="--", lw=0.9, label=r"$2/\eta$ (fixed-step runs)")
        ax_lam.legend(loc="best")
        ax_s.axhline(2.0, color="black", ls="--", lw=1.0, label="EoS: 2")
        ax_s.set_ylabel(HMEAN)
        ax_s.set_xlabel("step t")
        ax_s.legend(loc="best")
        names = [str(r.config.get("name", r.path.name)) for r in runs]
        title = ", ".join(names[:4]) + ("" if len(names) <= 4 else f", … ({len(names)} runs)")
        fig.suptitle(f"{title}: comparison")
    return fig


# --- eosflow verify -----------------------------------------------------------------------------


def load_verify_json(verify: str | os.PathLike | dict) -> dict[str, Any]:
    """``verify.json`` (as ``eosflow verify`` writes it) as a dict with ``checks`` and
    ``tracking`` lists; a bare list of rows becomes ``{"checks": rows}``."""
    data = verify if isinstance(verify, dict) else rd.read_json(Path(verify))
    if isinstance(data, list):
        return {"checks": data, "tracking": []}
    return data


def _fit_slope(etas: np.ndarray, errors: np.ndarray) -> float | None:
    ok = np.isfinite(errors) & (errors > 0)
    if ok.sum() < 2:
        return None
    return float(np.polyfit(np.log(etas[ok]), np.log(errors[ok]), 1)[0])


def verify_figure(verify: str | os.PathLike | dict):
    r"""The rate figure of ``eosflow verify``: for each (toy, method), the tracking error
    $\max_\tau\|\Phi(x_{\tau/\eta^2}) - X(\tau)\|$ against $\eta$ on log-log axes, with the
    least-squares slope in the legend (the claim is $O(\eta)$: slope 1, checked $\ge 0.8$).

    Returns:
        A ``Figure``, or None when the file has no ``tracking`` entries.
    """
    data = load_verify_json(verify)
    tracks = [t for t in data.get("tracking") or [] if t.get("etas") and t.get("errors")]
    if not tracks:
        return None
    with _style():
        fig, (ax_e,) = _figure(1, 1, 4.2)
        colors = _colors(len(tracks))
        for t, color in zip(tracks, colors, strict=True):
            etas = np.asarray(t["etas"], np.float64)
            errs = np.asarray(t["errors"], np.float64)
            slope = _fit_slope(etas, errs)
            label = f"{_text(t.get('toy', '?'))}, {_text(t.get('method', '?'))}"
            if slope is not None:
                label += f" (slope {slope:.2f})"
            ax_e.plot(etas, errs, "o-", color=color, ms=4, label=label)
        all_e = np.concatenate([np.asarray(t["etas"], np.float64) for t in tracks])
        all_r = np.concatenate([np.asarray(t["errors"], np.float64) for t in tracks])
        ok = np.isfinite(all_r) & (all_r > 0)
        if ok.any():
            e0 = float(np.exp(np.mean(np.log(all_e[ok]))))
            r0 = float(np.exp(np.mean(np.log(all_r[ok]))))
            grid = np.array([all_e.min(), all_e.max()])
            ax_e.plot(grid, r0 * grid / e0, color="black", ls=":", lw=1.0,
                      label=r"$\propto \eta$ (slope 1)")
            ax_e.set_yscale("log")
        _value_ticks(ax_e, all_e)
        ax_e.set_xlabel(r"learning rate $\eta$")
        ax_e.set_ylabel(r"$\max_\tau \|\Phi(x_{\tau/\eta^2}) - X(\tau)\|$")
        ax_e.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
        checks = data.get("checks") or []
        passed = sum(bool(c.get("passed")) for c in checks)
        fig.suptitle(f"eosflow verify: tracking error of the limiting flows, predicted O(η)"
                     f"\n({passed} of {len(checks)} checks passed)")
    return fig


def collapse_figure(verify: str | os.PathLike | dict):
    r"""$\lambda_1(\Phi(x_t))$ against $\tau = \eta^2 t$ for every $\eta$ of each tracked
    (toy, method), beside $\lambda_1$ along the predicted flow $X(\tau)$: runs at different
    learning rates collapse onto one curve.

    Returns:
        A ``Figure``, or None when the file has no runs' sharpness.
    """
    data = load_verify_json(verify)
    tracks = [t for t in data.get("tracking") or [] if t.get("lambda_runs") and t.get("taus")]
    if not tracks:
        return None
    n = len(tracks)
    cols = min(n, 3)
    rows = -(-n // cols)
    with _style():
        fig, axes = _figure(rows, cols, 2.8 * rows)
        for ax, t in zip(axes, tracks, strict=False):
            taus = np.asarray(t["taus"], np.float64)
            flow = np.asarray(t.get("lambda_flow") or [], np.float64)
            if len(flow) == len(taus):
                ax.plot(taus, flow, color="black", ls="--", lw=1.2, label="flow $X(\\tau)$")
            etas = t.get("etas") or []
            colors = _colors(len(etas))
            for eta, lam, color in zip(etas, t["lambda_runs"], colors, strict=False):
                ax.plot(taus, np.asarray(lam, np.float64), "o", color=color, ms=3.5,
                        label=f"η = {eta:.3g}")
            ax.set_title(f"{_text(t.get('toy', '?'))}, {_text(t.get('method', '?'))}")
            ax.set_xlabel(r"$\tau = \eta^2 t$")
            ax.set_ylabel(r"$\lambda_1(\Phi(x_t))$")
            ax.legend(fontsize=8)
        for ax in axes[n:]:
            ax.set_visible(False)
        fig.suptitle("eosflow verify: sharpness of runs at several η against the limiting flow")
    return fig


def plot_verify(verify_json: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write :func:`verify_figure` as ``verify.*`` and :func:`collapse_figure` as
    ``verify_collapse.*`` into ``out_dir`` (default: beside the JSON file); nothing when the
    file has no tracking data."""
    out = Path(out_dir) if out_dir is not None else Path(verify_json).parent
    paths: list[Path] = []
    for builder, stem in ((verify_figure, "verify"), (collapse_figure, "verify_collapse")):
        fig = builder(verify_json)
        if fig is not None:
            paths += save_figure(fig, out, stem, formats)
            _close(fig)
    return paths


# --- writing -------------------------------------------------------------------------------------


def figure_stems(run: RunLike) -> list[str]:
    """The figures :func:`plot_run` writes for ``run`` (file stems, in order)."""
    run = _load(run)
    if not points(run):  # nothing recorded yet
        return []
    stems = ["training"]
    if run.config.get("optimizer") in ADAPTIVE and any(
            (fc := flow_clock(p)) is not None and len(fc[0]) for p in points(run)):
        stems.append("flow")
    if has_prediction(run):
        stems.append("prediction")
    if load_densities(run):
        stems.append("density")
    if run.sweep:
        stems.append("sweep")
    return stems


def _close(fig) -> None:
    fig.clear()


# the builder of each figure :func:`figure_stems` can name
BUILDERS: dict[str, Callable[[RunLike], Any]] = {
    "training": cohen_panel, "flow": flow_figure, "prediction": prediction_figure,
    "density": density_figure, "sweep": sweep_figure,
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


def plot_sweep(run_dir: RunLike | Sequence[RunLike], out_dir: str | os.PathLike | None = None,
               *, formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write the sweep summary (:func:`sweep_figure`) of a vmapped sweep, or of several
    single runs (then ``out_dir`` is required); default ``RUN/figures/sweep.*``."""
    many = not isinstance(run_dir, str | os.PathLike | rd.Run)
    runs = [_load(r) for r in (run_dir if many else [run_dir])]
    if out_dir is None:
        if len(runs) != 1:
            raise ValueError("out_dir: required when summarising several runs; "
                             "pass the folder to write sweep.png into.")
        out_dir = runs[0].path / "figures"
    fig = sweep_figure(runs)
    paths = save_figure(fig, out_dir, "sweep", formats)
    _close(fig)
    return paths


def compare_runs(run_dirs: Sequence[RunLike], out_dir: str | os.PathLike, *,
                 formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write :func:`compare_figure` of ``run_dirs`` as ``out_dir/compare.*``."""
    fig = compare_figure(run_dirs)
    paths = save_figure(fig, out_dir, "compare", formats)
    _close(fig)
    return paths
