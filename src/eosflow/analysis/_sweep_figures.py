"""Figures over several runs: a sweep's summary and an overlay of runs."""

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import runner as rd
from ._style import (
    FORMATS,
    HARMONIC,
    HMEAN,
    SHARPNESS,
    RunLike,
    _clip_to_data,
    _close,
    _colors,
    _common_lr,
    _eta_t_axis,
    _figure,
    _legend_below,
    _line,
    _load,
    _log_y,
    _staggered,
    _style,
    _text,
    _threshold_label,
    _untangle_ticks,
    _value_ticks,
    _wants_log,
    save_figure,
)
from ._summary import (
    Point,
    harmonic_sums,
    is_adaptive,
    lambda_thresholds,
    method_of,
    pairing_steps,
    point_headline,
    points,
    stableness,
    two_step_harmonic_mean,
)

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
            if method_of(p.config).quantity != "sharpness":
                _use_preconditioned(h, p)
            rows.append(h)
    return rows



def _use_preconditioned(h: dict[str, Any], p: Point) -> None:
    """For a method whose edge is on the preconditioned sharpness (Adam, RMSProp: the
    record's ``quantity``), put λ1(P⁻¹H) (``precond_lambda_1``) where the row has the raw
    λ1: its last value and its mean from the EoS onset on (None where not recorded)."""
    pre = p.get("precond_lambda_1")
    pre = np.full(len(p.steps), np.nan) if pre is None else np.asarray(pre, np.float64)
    ok = np.isfinite(pre)
    h["lambda_final"] = float(pre[ok][-1]) if ok.any() else None
    onset = h.get("eos_onset_step")
    after = ok & (p.steps >= onset) if onset is not None else np.zeros_like(ok)
    h["mean_lambda_after_onset"] = float(pre[after].mean()) if after.any() else None


def _column(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else r[key] for r in rows], np.float64)


def sweep_figure(runs: RunLike | Sequence[RunLike]):
    r"""Sweep summary over the points of a vmapped sweep, or over several single runs.

    Left, fixed-step optimizers: $\lambda_1$ at the end (circles) and its mean after the EoS
    onset (squares) against the threshold $2/\eta$ (or its momentum analogue), with
    $y = x$ (EoS); for Adam and RMSProp the quantity whose edge it is, the preconditioned
    sharpness $\lambda_1(P^{-1}H)$, against its edge (the optimizer record's ``quantity``);
    normalized GD / √L GD: $\lambda_1$ against $\eta$. A line far above or below the points
    (no run reached EoS) is named in the legend, not drawn, so the points keep the axis.
    Right, against
    $\eta$: the stableness at the end and its mean after the onset, $S = \eta\lambda_1$
    (line at 2) for fixed-step optimizers, the harmonic sum $1/S_t + 1/S_{t+1}$ (line at 1)
    for normalized GD and GD on √L.
    """
    single = isinstance(runs, str | os.PathLike | rd.Run)
    runs = [_load(r) for r in ([runs] if single else runs)]
    if not runs:
        raise ValueError("runs: give at least one run (a sweep, or several single runs).")
    rows = _sweep_rows(runs)
    adaptive = all(is_adaptive(r["config"]) for r in rows)
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
        pre = method_of(rows[0]["config"]).quantity != "sharpness"
        sym = r"$\lambda_1(P^{-1}H)$" if pre else r"$\lambda_1$"
        ax_l.plot(x, fin, "o", color="C0", label=f"{sym} at the end")
        if np.isfinite(mean).any():
            ax_l.plot(x, mean, "s", mfc="none", ms=8, color="C1",
                      label=f"mean {sym} after EoS onset")
        eos_line = None
        if not adaptive:
            v = np.concatenate([x, fin, mean])
            v = v[np.isfinite(v) & (v > 0)]
            if len(v):  # over the thresholds' range: y = x is where the points would sit
                xs = x[np.isfinite(x) & (x > 0)]
                lo, hi = (xs.min() / 1.1, xs.max() * 1.1) if len(xs) else (v.min(), v.max())
                (eos_line,) = ax_l.plot([lo, hi], [lo, hi], color="black", ls="--", lw=1.0,
                                        label="$y = x$ (EoS)")
        if _value_ticks(ax_l, x) and not adaptive:
            _log_y(ax_l, np.concatenate([x, fin, mean]))
        if eos_line is not None:  # far above the points (no run reached EoS): name it
            off = _clip_to_data(ax_l, [fin, mean], x, "$y = x$ (EoS)", values=False)
            if off:
                eos_line.set_label(off)
        ax_l.set_ylabel(r"preconditioned sharpness $\lambda_1(P^{-1}H)$" if pre
                        else r"sharpness $\lambda_1$")
        ax_l.set_title(("preconditioned " if pre else "") + "sharpness across the sweep")

        if adaptive:
            fin_s, mean_s = "harmonic_sum_final", "mean_harmonic_sum_after_onset"
            ylabel, level = HARMONIC, 1.0
        else:
            fin_s, mean_s = "eta_lambda_final", "mean_eta_lambda_after_onset"
            # the definition's first clause (its preconditioner goes in the caption)
            short = method_of(rows[0]["config"]).stableness_label.split(", ")[0]
            ylabel = "stableness $S$ = " + _text(short)
            level = 2.0
        ax_r.plot(lr, _column(rows, fin_s), "o", color="C0", label="at the end")
        mean_v = _column(rows, mean_s)
        if np.isfinite(mean_v).any():
            ax_r.plot(lr, mean_v, "s", mfc="none", ms=8, color="C1", label="mean after onset")
        else:
            ax_r.plot([], [], "s", mfc="none", ms=8, color="C1",
                      label="mean after onset (none reached EoS)")
        eos = ax_r.axhline(level, color="black", ls="--", lw=1.0, label=f"EoS: {level:g}")
        off = _clip_to_data(ax_r, [_column(rows, fin_s), mean_v], np.array([level]), "EoS")
        if off:
            eos.set_label(off)
        _value_ticks(ax_r, lr)
        ax_r.set_xlabel(r"learning rate $\eta$")
        ax_r.set_ylabel(ylabel)
        ax_r.set_title("stableness across the sweep")
        for ax in (ax_l, ax_r):  # below the axes: the points may sit anywhere
            _legend_below(ax)
        names = list(dict.fromkeys(_text(r.config.get("name", r.path.name)) for r in runs))
        title = ", ".join(names[:3]) + ("" if len(names) <= 3 else f", … ({len(names)} runs)")
        opt = runs[0].config.get("optimizer", "?")
        fig.suptitle(f"{title}: sweep summary ({opt}, {len(rows)} points)")
        for ax in (ax_l, ax_r):  # close values of η: no two tick labels collide
            _untangle_ticks(fig, ax)
    return fig


# --- comparison ----------------------------------------------------------------------------------


def compare_figure(runs: Sequence[RunLike]):
    """Several runs (or sweep points) overlaid against the step: loss (log y), λ1 with each
    fixed-step run's threshold dashed (and the batch sharpness of mini-batch runs
    dash-dotted, in the run's colour), and the two-step harmonic mean of the stableness
    (line at 2). The legend names each run (and sweep point). When every run has the same
    η, the top panel carries the time η·t on a secondary axis."""
    runs = [_load(r) for r in runs]
    if not runs:
        raise ValueError("runs: give at least one run directory to compare.")
    series: list[Point] = []
    for run, name in zip(runs, _run_names(runs), strict=True):
        for p in points(run):
            label = _text(name) if p.index is None else f"{_text(name)}: {p.label}"
            series.append(Point(label, p.index, p.config, p.columns))
    with _style():
        fig, axes = _figure(3, 1, 6.8, sharex=True)
        colors = _colors(len(series))
        ax_loss, ax_lam, ax_s = axes
        losses = []
        many = len(series) > 1
        batch = False
        for i, (p, color) in enumerate(zip(series, colors, strict=True)):
            # several runs may coincide: each its own marker, staggered along the steps
            mark = _staggered(i, len(series), min(len(p.steps), 4000)) if many else {}
            loss = np.asarray(p.get("loss"), np.float64)
            losses.append(loss)
            _line(ax_loss, p.steps, loss, color=color, label=p.label, **mark)
            lam = p.get("lambda_1")
            if lam is not None:
                fin = np.isfinite(np.asarray(lam, np.float64))
                _line(ax_lam, p.steps, lam, color=color,
                      **(_staggered(i, len(series), int(fin.sum())) if many else {}))
                thr = lambda_thresholds(p.config, p.steps)
                if np.isfinite(thr).any():
                    ax_lam.plot(p.steps, thr, color=color, ls="--", lw=0.9)
            bs = p.get("batch_sharpness")  # mini-batch runs: the quantity that sits at 2/eta
            bs = None if bs is None else np.asarray(bs, np.float64)
            if bs is not None and np.isfinite(bs).any():
                ok = np.isfinite(bs)
                ax_lam.plot(p.steps[ok], bs[ok], color=color, ls="-.", lw=1.0, marker="x",
                            ms=3)
                batch = True
            st = stableness(p)
            if st is not None:
                hm = two_step_harmonic_mean(st[1], pairing_steps(p.config, st[0]))
                ok = np.isfinite(hm)
                _line(ax_s, st[0][:-1][ok], hm[ok], color=color, lw=0.9,
                      **(_staggered(i, len(series), int(ok.sum())) if many else {}))
        if _wants_log(np.concatenate(losses), 1.0):
            _log_y(ax_loss, np.concatenate(losses))
        ax_loss.set_ylabel("training loss")
        ax_loss.legend(loc="best", title="markers staggered along t" if many else None,
                       title_fontsize=8)
        lams = [np.asarray(p.get("lambda_1"), np.float64) for p in series
                if p.get("lambda_1") is not None]
        if lams and _wants_log(np.concatenate(lams)):  # runs of very different sharpness
            _log_y(ax_lam, np.concatenate(lams))
        ax_lam.set_ylabel(SHARPNESS)
        ax_lam.plot([], [], color="0.3", ls="--", lw=0.9, label=r"$2/\eta$ (fixed-step runs)")
        if batch:
            ax_lam.plot([], [], color="0.3", ls="-.", lw=1.0, marker="x", ms=3,
                        label="batch sharpness (mini-batch runs)")
        ax_lam.legend(loc="best")
        # mini-batch runs: S_t is formed from the batch sharpness (see stableness)
        ax_s.axhline(2.0, color="black", ls="--", lw=1.0,
                     label="EoS: 2" + (r" ($S_t = \eta\,$batch sharpness for SGD)" if batch
                                       else ""))
        ax_s.set_ylabel(HMEAN)
        ax_s.set_xlabel("step t")
        ax_s.legend(loc="best")
        _eta_t_axis(ax_loss, _common_lr(series))  # runs of one eta: their time eta*t on top
        names = _run_names(runs)
        title = ", ".join(names[:4]) + ("" if len(names) <= 4 else f", … ({len(names)} runs)")
        fig.suptitle(f"{title}: comparison")
    return fig


def _run_names(runs: Sequence[rd.Run]) -> list[str]:
    """Each run's name; runs that share a name are told apart by the configuration fields
    in which they differ (``"sgd (batch_size=8)"``), or else by their folder."""
    names = [str(r.config.get("name", r.path.name)) for r in runs]
    if len(set(names)) == len(names):
        return names
    keys = sorted({k for r in runs for k in r.config} - {"name"})
    differ = [k for k in keys if len({repr(r.config.get(k)) for r in runs}) > 1]
    out = []
    for name, run in zip(names, runs, strict=True):
        if names.count(name) == 1:
            out.append(name)
        elif differ:
            out.append(f"{name} ({', '.join(f'{k}={run.config.get(k)}' for k in differ)})")
        else:
            out.append(f"{name} ({run.path.name})")
    return out


def plot_sweep(run_dir: RunLike | Sequence[RunLike], out_dir: str | os.PathLike | None = None,
               *, formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write the sweep summary (:func:`sweep_figure`) of a vmapped sweep, or of several
    single runs (then ``out_dir`` is required); default ``RUN/figures/sweep.*``. Several runs
    at one learning rate (a grid over another field, e.g. ``batch_size``) are overlaid
    against the step instead (:func:`compare_figure`, with batch sharpness where recorded)."""
    many = not isinstance(run_dir, str | os.PathLike | rd.Run)
    runs = [_load(r) for r in (run_dir if many else [run_dir])]
    if out_dir is None:
        if len(runs) != 1:
            raise ValueError("out_dir: required when summarising several runs; "
                             "pass the folder to write sweep.png into.")
        out_dir = runs[0].path / "figures"
    lrs = {float(r.config.get("lr", np.nan)) for r in runs}
    # several runs at one learning rate (a grid over batch_size, widths, ...): a summary
    # against eta would stack them on one x; overlay them against the step instead
    one_lr = many and len(runs) > 1 and len(lrs) == 1 and not any(r.sweep for r in runs)
    fig = compare_figure(runs) if one_lr else sweep_figure(runs)
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
