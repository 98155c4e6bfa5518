"""House style of eosflow's figures: rc, captions, colours, decimation, saving."""

import io
import itertools
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import runner as rd
from ._summary import (
    Point,
    eos_onset,
    method_of,
    pairing_steps,
    stableness,
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
    "1.9. λ2, λ3, … (when tracked) each have their own colour. A threshold far from the "
    "curves is named in the legend (\"above the axis\") instead of squashing them. Top axis: "
    "the time η·t when the run has one η.",
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
    "log-log axes (the claim is O(η): slope 1, dotted), with the least-squares slope in the "
    "legend; the ticks sit at the η values (a label that would collide with its neighbour "
    "is left out). verify_collapse.png: λ1(Φ(x_t)) of the runs at every η against τ = η²t "
    "beside the flow (dashed); each η has its own line style and markers staggered along τ, "
    "so curves that coincide stay visible.",
    "processes": "Processes from one initialization (arXiv 2410.24206). Left: the training "
    "loss of the discrete run (grey) and its two-step mean (black), the loss at the midpoint "
    "iterates (w_{t-1} + 2w_t + w_{t+1})/4, gradient flow (stable, dashed), the central flow's "
    "predicted time-averaged loss L + ½⟨Σ, H⟩ and its own L(w) (dotted). Right: λ1 of the "
    "discrete run, gradient flow and the central flow against 2/η (RMSProp: the "
    "preconditioned sharpness λ1(P⁻¹H) of the discrete run and of the central flow; its "
    "stable flow is RMSProp's own with Σ = 0).",
    "compare": "Runs overlaid: training loss, sharpness λ1 (dashed: each GD run's 2/η; "
    "dash-dotted: a mini-batch run's batch sharpness) and the two-step harmonic mean of the "
    "stableness S_t, 2/(1/S_t + 1/S_{t+1}), which sits at 2 during EoS for GD and normalized "
    "GD alike, and for SGD with S_t = η·batch sharpness. Each run has its own marker, "
    "staggered along t, so runs that coincide stay visible; top axis: η·t when the runs "
    "share one η.",
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
    batch = f", B = {c['batch_size']}" if c.get("batch_size") else ""
    if "decay" in method_of(c).hyper:  # RMSProp's second moment
        opt += f", decay {float(c.get('decay', math.nan)):g}" + (
            ", bias-corrected" if c.get("bias_correction") else "")
    return f"{_text(name)}: {what} ({opt}, {eta}{batch})"


def _threshold_label(config: dict[str, Any]) -> str:
    return method_of(config).edge_tex or r"$2/\eta$"


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


def _fit_titles(fig) -> None:
    """Wrap the figure's title and each axes title that is wider than the figure (a long
    run name, a sweep's η range), so that none is cut at the figure's edges; a line with
    mathtext is left whole."""
    import textwrap

    from matplotlib.text import Text

    fig.draw_without_rendering()
    width = 0.96 * fig.bbox.width
    texts = [ax.title for ax in fig.axes]
    sup = fig.get_suptitle()
    texts += [t for t in fig.findobj(Text, include_self=False) if sup and t.get_text() == sup]
    for t in texts:
        text = t.get_text()
        lines = text.split("\n")
        chars = max(map(len, lines)) if text else 0
        for _ in range(8):  # narrower until it fits: characters differ in width
            w = t.get_window_extent().width
            if not text or w <= width or chars <= 20:
                break
            chars = max(20, min(chars - 1, int(chars * width / w)))
            t.set_text("\n".join(ln if "$" in ln else textwrap.fill(ln, chars)
                                  for ln in lines))
    fig.draw_without_rendering()


def save_figure(fig, out_dir: str | os.PathLike, stem: str,
                formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write ``fig`` as ``out_dir/stem.<format>`` for each format (atomically); the paths.
    Titles wider than the figure are wrapped first."""
    out = []
    with _style():
        _fit_titles(fig)
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
        _fit_titles(fig)
        fig.savefig(buf, format="png")
    return buf.getvalue()



def _close(fig) -> None:
    fig.clear()

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


def _overlapping(labels) -> bool:
    """Whether any two of the (drawn) text ``labels`` overlap on the canvas."""
    boxes = [t.get_window_extent() for t in labels if t.get_visible() and t.get_text()]
    boxes.sort(key=lambda b: b.x0)
    return any(a.x1 > b.x0 + 0.5 and a.y1 > b.y0 and b.y1 > a.y0
               for a, b in itertools.pairwise(boxes))


def _untangle_ticks(fig, ax) -> None:
    """Make the x tick labels of ``ax`` readable: drawn once and, when any two collide,
    rotated 45°, then 90°, then (left to right) each label that would touch the last one
    kept hidden (its tick stays). A
    legend placed below the axes (:func:`_legend_below`) is moved under the lowered x label.
    """
    fig.draw_without_rendering()
    labels = ax.get_xticklabels()
    if not _overlapping(labels):
        return
    for angle in (45, 90):
        for t in labels:
            t.set_rotation(angle)
            t.set_horizontalalignment("right" if angle < 90 else "center")
            t.set_rotation_mode("anchor" if angle < 90 else "default")
        fig.draw_without_rendering()
        if not _overlapping(labels):
            break
    if _overlapping(labels):  # keep, left to right, each label clear of the last one kept
        shown = sorted((t for t in labels if t.get_text()), key=lambda t: t.get_window_extent().x0)
        last = None
        for t in shown:
            box = t.get_window_extent()
            t.set_visible(last is None or box.x0 > last.x1 + 0.5)
            last = box if t.get_visible() else last
        fig.draw_without_rendering()
    legend = ax.get_legend()
    if legend is not None and getattr(legend, "_eosflow_below", False):
        for _ in range(2):  # the layout moves the axes when the legend moves
            low = min(ax.xaxis.label.get_window_extent().y0,
                      *(t.get_window_extent().y0 for t in labels if t.get_visible()))
            y = ax.transAxes.inverted().transform((0.0, low))[1]
            legend.set_bbox_to_anchor((0.5, y - 0.03), transform=ax.transAxes)
            fig.draw_without_rendering()


def _eta_t_axis(ax, lr: float | None):
    """A secondary x axis on top of a step-axis panel: the time η·t of the run's learning
    rate (the clock on which gradient flow would run); None (and nothing drawn) without one
    fixed positive η."""
    if lr is None or not np.isfinite(lr) or lr <= 0:
        return None
    sec = ax.secondary_xaxis("top", functions=(lambda t: lr * t, lambda s: s / lr))
    sec.set_xlabel(f"time η·t (η = {lr:.3g})", fontsize=8)
    sec.tick_params(labelsize=8)
    return sec


def _common_lr(pts: Sequence[Point]) -> float | None:
    """The learning rate all ``pts`` share (None when they differ or one has none)."""
    lrs = {float(p.config["lr"]) for p in pts if p.config.get("lr") is not None}
    return lrs.pop() if len(lrs) == 1 and len(pts) else None


def _clip_to_data(ax, data: Sequence[np.ndarray], thresholds: np.ndarray,
                  label: str, *, values: bool = True) -> str | None:
    """Keep the y axis on the curves: a threshold far above (or below) them would squash
    them against an edge, so the axis is clipped to the data and the threshold is named in
    the legend instead. Returns that legend text (``"2/η = 200, above the axis"``; without
    the numbers when ``values`` is False), or None when every threshold is in range
    (nothing changed).

    A threshold counts as in range when it lies within half the data's span of it (on a
    log axis: within a factor 1.5), and is then left on the axis.
    """
    vals = np.concatenate([np.asarray(d, np.float64).ravel() for d in data]) if data else []
    vals = np.asarray(vals)[np.isfinite(vals)]
    thr = np.asarray(thresholds, np.float64)
    thr = thr[np.isfinite(thr)]
    if not len(vals) or not len(thr):
        return None
    lo, hi = float(vals.min()), float(vals.max())
    log = ax.get_yscale() == "log"
    if log:
        far_hi, far_lo = hi * 1.5, lo / 1.5
    else:
        span = max(hi - lo, 1e-12 * max(abs(hi), 1.0))
        far_hi, far_lo = hi + 0.5 * span, lo - 0.5 * span
    out = thr[(thr > far_hi) | (thr < far_lo)]
    if not len(out):
        return None
    inside = thr[(thr <= far_hi) & (thr >= far_lo)]
    top = max([hi, *inside])
    bottom = min([lo, *inside])
    if log:
        ax.set_ylim(bottom / 1.15, top * 1.15)
    else:
        pad = 0.08 * max(top - bottom, 1e-12 * max(abs(top), 1.0))
        ax.set_ylim(bottom - pad, top + pad)
    where = "above" if out.min() > hi else "below"
    if not values:
        return f"{label}, {where} the axis"
    shown = np.unique(out)
    fmt = lambda v: f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"  # 2000, not 2e+03
    text = fmt(shown[0]) if len(shown) == 1 else f"{fmt(shown[0])}–{fmt(shown[-1])}"
    return f"{label} = {text}, {where} the axis"


def _legend_below(ax, **kw):
    """The legend of ``ax`` under its x axis (two columns from four entries): outside the
    axes, so it never covers a curve."""
    n = len(kw["handles"]) if "handles" in kw else len(ax.get_legend_handles_labels()[0])
    legend = ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2),
                       ncols=2 if n >= 4 else 1, fontsize=8, **kw)
    legend._eosflow_below = True  # read by _untangle_ticks, which may move it lower
    return legend


# one per series where several may coincide (collapse, comparison): each stays visible
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _staggered(i: int, n: int, length: int, per_curve: int = 6) -> dict[str, Any]:
    """Plot keywords that keep series ``i`` of ``n`` visible where the series coincide: its
    own marker, placed at points ``start, start + every, ...`` with the starts of the ``n``
    series spread over one period (about ``per_curve`` markers each, never on a point
    another series marks)."""
    n = max(n, 1)
    every = max(n, length // (per_curve * n) * n)
    return {"marker": MARKERS[i % len(MARKERS)], "markevery": (i * every // n, every),
            "ms": 4.5, "mfc": "none"}
