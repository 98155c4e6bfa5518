r"""The training figure of a run (``figures/training.png``): the panel of Cohen et al. 2021
(loss; $\lambda_1$ with its edge) and, for normalized GD and GD on $\sqrt L$, the stableness
$S_t$ and the harmonic sum $1/S_t + 1/S_{t+1}$ of Arora, Li & Panigrahi 2022 (Thm 4.7).

Readable by construction: $\lambda_2, \lambda_3, \ldots$ each in its own colour; an edge
far from the curves named in the legend instead of squashing them; legends below the axes;
the time $\eta t$ on a secondary axis when the trajectories share one $\eta$.
"""
from collections.abc import Sequence

import numpy as np

from .. import runner as rd
from ._style import (
    HARMONIC,
    SHARPNESS,
    RunLike,
    _clip_to_data,
    _colors,
    _common_lr,
    _eta_t_axis,
    _figure,
    _legend_below,
    _line,
    _load,
    _log_y,
    _mark_onsets,
    _style,
    _threshold_label,
    _title,
    _wants_log,
)
from ._summary import (
    Point,
    eos_onset,
    harmonic_sums,
    is_adaptive,
    lambda_thresholds,
    method_of,
    pairing_steps,
    points,
    stableness,
)

# --- the Cohen et al. panel ----------------------------------------------------------------------


def cohen_panel(run: RunLike):
    """The training panel of a run: loss, λ1 with the stability threshold, and for
    normalized GD / GD on √L the stableness and its harmonic sum.

    One line per trajectory (per sweep point, coloured, named in the loss panel's legend).

    Every panel's x axis is the step t, with the time η·t on a secondary axis on top
    when all trajectories share one η. Legends sit below their axes (they never cover a
    curve); the held-out loss (``test_loss``) and the full-batch loss of mini-batch runs
    are drawn beside the training loss when the run has them.

    Returns:
        A ``matplotlib.figure.Figure``: two axes (loss, λ1) for fixed-step optimizers,
        four (loss, λ1, η_t·λ1, harmonic sum) for normalized GD and GD on √L.
    """
    run = _load(run)
    pts = points(run)
    if not pts:
        raise rd.RunDirError(f"{run.path} has no metrics yet: nothing to plot.")
    adaptive = is_adaptive(run.config)
    with _style():
        fig, axes = _figure(2 if adaptive else 1, 2, 7.4 if adaptive else 4.4)
        colors = _colors(len(pts))
        multi = len(pts) > 1
        ax_loss, ax_lam = axes[0], axes[1]
        losses = np.concatenate([np.asarray(p.get("loss"), np.float64).ravel() for p in pts])
        for p, color in zip(pts, colors, strict=True):
            full = p.get("full_loss")  # mini-batch runs: "loss" is the step's batch loss
            _line(ax_loss, p.steps, p.get("loss"), color=color, alpha=0.5 if full is not None
                  else 1.0, label=p.label if multi else (
                      "mini-batch loss" if full is not None else "training loss"))
            test = p.get("test_loss")
            if test is not None:
                keep = np.isfinite(np.asarray(test, np.float64))
                ax_loss.plot(p.steps[keep], np.asarray(test)[keep], color=color, ls="--",
                             marker="s", ms=2.5, lw=1.0, label=None if multi else "held-out loss")
            if full is not None:
                keep = np.isfinite(np.asarray(full, np.float64))
                ax_loss.plot(p.steps[keep], np.asarray(full)[keep], color=color, marker="o",
                             ms=3, lw=1.2, label=None if multi else "full-batch loss")
        if _wants_log(losses, 1.0):
            _log_y(ax_loss, losses)
        ax_loss.set_xlabel("step t")
        ax_loss.set_ylabel(r"loss $L(x_t)$")
        ax_loss.set_title("loss")
        handles, _ = ax_loss.get_legend_handles_labels()
        if multi:  # the colours name the points; the line styles, the kinds of loss
            from matplotlib.lines import Line2D

            if any(p.get("test_loss") is not None for p in pts):
                handles.append(Line2D([], [], color="0.3", ls="--", marker="s", ms=2.5,
                                      label="held-out loss"))
            if any(p.get("full_loss") is not None for p in pts):
                handles.append(Line2D([], [], color="0.3", marker="o", ms=3,
                                      label="full-batch loss"))
        _legend_below(ax_loss, handles=handles)

        _sharpness_axes(ax_lam, pts, colors, multi=multi)
        if adaptive:
            _stableness_axes(axes[2], pts, colors)
            _harmonic_axes(axes[3], pts, colors)
        lr = _common_lr(pts)
        for ax in axes:
            _eta_t_axis(ax, lr)
        fig.suptitle(_title(run, "training"))
    return fig


PRECOND = r"$\lambda_1(P^{-1}H)$"
# lambda_2, lambda_3, ... in a single run's panel: tab10's orange, green, red, purple, brown
# (lambda_1 is blue, the threshold black)
LAMBDA_COLORS = ("tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def _sharpness_axes(ax, pts: Sequence[Point], colors, *, multi: bool) -> None:
    has_lam = drew_thr = has_pre = False
    drawn: list[np.ndarray] = []  # the curves, to keep the y axis on them
    thresholds: list[np.ndarray] = []
    thr_lines = []
    for p, color in zip(pts, colors, strict=True):
        lam = p.get("lambda_1")
        if lam is None or not np.isfinite(np.asarray(lam, np.float64)).any():
            continue
        has_lam = True
        # adaptive methods (Adam, RMSProp): their edge is on lambda_1(P^-1 H); the raw
        # lambda_1, far below it, is drawn faint on the same (log) axis
        pre = p.get("precond_lambda_1")
        if pre is not None and np.isfinite(np.asarray(pre, np.float64)).any():
            has_pre = True
            drawn += [np.asarray(pre, np.float64), np.asarray(lam, np.float64)]
            _line(ax, p.steps, pre, color=color, label=None if multi else PRECOND)
            _line(ax, p.steps, lam, color=color, alpha=0.45, lw=0.8, ls=":",
                  label=None if multi else r"$\lambda_1$ (raw)")
        else:
            drawn.append(np.asarray(lam, np.float64))
            _line(ax, p.steps, lam, color=color, label=None if multi else r"$\lambda_1$")
        if not multi:  # lambda_2, lambda_3, ...: each its own colour, thinner
            for i in range(2, 10):
                lam_i = p.get(f"lambda_{i}")
                if lam_i is None:
                    break
                drawn.append(np.asarray(lam_i, np.float64))
                _line(ax, p.steps, lam_i, color=LAMBDA_COLORS[(i - 2) % len(LAMBDA_COLORS)],
                      lw=0.9, label=rf"$\lambda_{i}$")
        bs = p.get("batch_sharpness")  # mini-batch runs: the quantity that sits at 2/eta
        if bs is not None and np.isfinite(np.asarray(bs, np.float64)).any():
            drawn.append(np.asarray(bs, np.float64))
            _line(ax, p.steps, bs, color=color, ls="-.", marker=".", ms=3,
                  label=None if multi else "batch sharpness")
        mb = p.get("minibatch_lambda_1")  # lambda_1 of fixed mini-batch losses
        if mb is not None and np.isfinite(np.asarray(mb, np.float64)).any():
            drawn.append(np.asarray(mb, np.float64))
            _line(ax, p.steps, mb, color=color, ls=":", marker="^", ms=3,
                  label=None if multi else r"mini-batch $\lambda_1$ (fixed batches)")
        # a threshold only for methods with a fixed edge (normalized GD and GD on sqrt L
        # have none: their EoS test is the harmonic sum; see the optimizer records)
        thr = (lambda_thresholds(p.config, p.steps) if method_of(p.config).edge is not None
               else np.full(len(p.steps), np.nan))
        if np.isfinite(thr).any():
            thr_lines += ax.plot(p.steps, thr, color=color if multi else "black", ls="--",
                                 lw=1.0, label=None if multi else _threshold_label(p.config))
            thresholds.append(thr)
            drew_thr = True
    if has_pre:
        ax.set_yscale("log")
    # a threshold far from the curves (a run below its edge, a warm-up's 2/eta) is named,
    # not drawn: the axis stays on the data
    off = _clip_to_data(ax, drawn, np.concatenate(thresholds) if thresholds else np.zeros(0),
                        _threshold_label(pts[0].config) if pts else "edge")
    if not has_lam:
        ax.text(0.5, 0.5, "sharpness not tracked\n(eig_every = None)", ha="center",
                va="center", transform=ax.transAxes)
    elif multi:  # the colours are named in the loss panel's legend
        from matplotlib.lines import Line2D

        _mark_onsets(ax, pts, colors, label=False)
        handles = [Line2D([], [], color="0.3", label=PRECOND if has_pre else r"$\lambda_1$")]
        if has_pre:
            handles.append(Line2D([], [], color="0.3", alpha=0.45, lw=0.8, ls=(0, (1, 3)),
                                  label=r"raw $\lambda_1$ (faint)"))
        if any(p.get("batch_sharpness") is not None for p in pts):
            handles.append(Line2D([], [], color="0.3", ls="-.", marker=".",
                                  label="batch sharpness"))
        if any(p.get("minibatch_lambda_1") is not None for p in pts):
            handles.append(Line2D([], [], color="0.3", ls=":", marker="^",
                                  label=r"mini-batch $\lambda_1$ (fixed batches)"))
        if drew_thr:
            handles.append(Line2D([], [], color="0.3", ls="--",
                                  label=off or _threshold_label(pts[0].config)))
        handles.append(Line2D([], [], color="0.3", ls=":", label="EoS onset"))
        _legend_below(ax, handles=handles)
    else:
        _mark_onsets(ax, pts, ["0.3"])
        if off and thr_lines:
            thr_lines[0].set_label(off)
        _legend_below(ax)
    ax.set_xlabel("step t")
    ax.set_ylabel(SHARPNESS)
    ax.set_title("sharpness")
    if has_pre:
        ax.set_ylabel(PRECOND + r" (raw $\lambda_1$ dotted)")
        ax.set_title("preconditioned sharpness")


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
    _legend_below(ax)


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
    _legend_below(ax)
