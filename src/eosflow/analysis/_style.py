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
    "processes": "Processes from one initialization (arXiv 2410.24206). Left: the training "
    "loss of the discrete run (grey) and its two-step mean (black), the loss at the midpoint "
    "iterates (w_{t-1} + 2w_t + w_{t+1})/4, gradient flow (stable, dashed), the central flow's "
    "predicted time-averaged loss L + ½⟨Σ, H⟩ and its own L(w) (dotted). Right: λ1 of the "
    "discrete run, gradient flow and the central flow against 2/η.",
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
    batch = f", B = {c['batch_size']}" if c.get("batch_size") else ""
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
