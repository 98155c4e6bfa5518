"""Figures of ``eosflow verify``: tracking-error rates and the flow-clock collapse."""

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .. import runner as rd
from ._style import (
    FORMATS,
    _close,
    _colors,
    _figure,
    _legend_below,
    _staggered,
    _style,
    _text,
    _untangle_ticks,
    _value_ticks,
    save_figure,
)

# one per learning rate in the collapse figure (with _staggered markers): curves that
# coincide stay distinguishable
LINESTYLES = ("-", "-.", ":", (0, (6, 2)))  # "--" is the flow's

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
        _untangle_ticks(fig, ax_e)  # η values close on a log axis: no two labels collide
    return fig


def collapse_figure(verify: str | os.PathLike | dict):
    r"""$\lambda_1(\Phi(x_t))$ against $\tau = \eta^2 t$ for every $\eta$ of each tracked
    (toy, method), beside $\lambda_1$ along the predicted flow $X(\tau)$: runs at different
    learning rates collapse onto one curve.

    Curves that collapse lie on top of each other, so each $\eta$ has its own line style and
    marker, and its markers are staggered (curve $i$ of $n$ marks points $i, i + n, i + 2n,
    \ldots$ of the common $\tau$ grid): every curve stays visible where they coincide. The
    legend's title says so.

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
        fig, axes = _figure(rows, cols, 4.0 * rows)
        for ax, t in zip(axes, tracks, strict=False):
            taus = np.asarray(t["taus"], np.float64)
            flow = np.asarray(t.get("lambda_flow") or [], np.float64)
            if len(flow) == len(taus):
                ax.plot(taus, flow, color="black", ls="--", lw=1.2, label="flow $X(\\tau)$")
            etas = t.get("etas") or []
            colors = _colors(len(etas))
            for i, (eta, lam, color) in enumerate(zip(etas, t["lambda_runs"], colors,
                                                      strict=False)):
                ax.plot(taus, np.asarray(lam, np.float64), color=color, lw=1.0,
                        ls=LINESTYLES[i % len(LINESTYLES)], label=f"η = {eta:.3g}",
                        **_staggered(i, len(etas), len(taus)))
            ax.set_title(f"{_text(t.get('toy', '?'))}, {_text(t.get('method', '?'))}")
            ax.set_xlabel(r"$\tau = \eta^2 t$")
            ax.set_ylabel(r"$\lambda_1(\Phi(x_t))$")
            _legend_below(ax, title="markers staggered along τ", title_fontsize=8)
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

