r"""Headline numbers of a saved run, as pure functions of :func:`~eosflow.experiments.load_run`.

The central quantity is the *stableness* $S_t$ of step $t$: the sharpness measured in units
of the step that the optimizer takes along it, scaled so that the Edge of Stability is
$S_t \approx 2$ for every method:

* ``gd``, ``normalized_gd``, ``sqrt_loss_gd``: $S_t = \eta_t\lambda_1(x_t)$, the run's
  ``eta_lambda`` column, with $\eta_t$ the effective step (``eff_lr``: $\eta$,
  $\eta/\|\nabla L\|$, $\eta/(2\sqrt{L - L^*})$).
* ``momentum`` (heavy ball, ``optax.sgd`` convention) and ``nesterov``:
  $S_t = 2\lambda_1/\lambda_{\rm crit}$ with $\lambda_{\rm crit} = (2 + 2\beta)/\eta$ and
  $(2 + 2\beta)/((1 + 2\beta)\eta)$ (Cohen et al. 2021, arXiv 2103.00065, App. B).
* ``rmsprop`` and ``adam``: $S_t = 2\lambda_1(P^{-1}H)/\lambda_{\rm crit}$ with the
  preconditioned sharpness (the run's ``precond_lambda_1`` column) and $\lambda_{\rm crit}$
  $= 2/\eta$ (RMSProp) or $(2 + 2\beta_1)/((1 - \beta_1)\eta)$ (Adam; Cohen et al.,
  arXiv 2207.14484); undefined (None) for runs that did not record it.
* Steps of a GD warm-up (``warmup_steps``) use $S_t = \eta_t\lambda_1$ whatever follows;
  those of an Adam warm-up (``warmup_optimizer="adam"``) have none.
* Mini-batch runs (``batch_size``) of the fixed-step methods: the same formulas with the
  *batch sharpness* (the run's ``batch_sharpness`` column) in place of $\lambda_1$, as
  $S_t = \eta\,\mathrm{BS}$ for SGD. With mini-batches it is batch sharpness, not the
  full-batch $\lambda_1$, that rises to $2/\eta$ and stays there (Andreyev & Beneventano,
  *Edge of Stochastic Stability*, arXiv 2412.20553); $\lambda_1$ stays below.

For plain GD $S_t$ is constant in $\eta$ and EoS means $S_t \approx 2$. For normalized GD
and GD on $\sqrt L$ it oscillates, and the prediction (Arora, Li & Panigrahi 2022,
arXiv 2205.09745, Thm 4.7/4.8) is the harmonic sum $1/S_t + 1/S_{t+1} \approx 1$, not
$S_t \approx 2$. The *two-step harmonic mean* $H_t = 2/(1/S_t + 1/S_{t+1})$ covers both:
it equals $S_t$ when $S$ is constant and is 2 exactly when the harmonic sum is 1. The EoS
onset is the first step at which $H_t$ reaches 1.9.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..optim import CUSTOM, Method, custom_method, method
from ..runner import Run

ONSET_LEVEL = 1.9


def method_of(config: dict[str, Any]) -> Method:
    """The optimizer record (:class:`eosflow.optim.Method`) a saved configuration names; for
    a custom optax transformation (``"optimizer": "custom"``) the record built from the edge
    the run recorded (:func:`eosflow.optim.custom_method`)."""
    name = config.get("optimizer", "gd")
    if name == CUSTOM:
        info = config.get("custom_optimizer") or {}
        if info.get("like"):
            return custom_method(like=info["like"])
        return custom_method(edge=info.get("edge"))
    return method(name)


def is_adaptive(config: dict[str, Any]) -> bool:
    """Whether the run's step size η_t changes every step (the harmonic sum is the test)."""
    return method_of(config).adaptive_step

SWEEP_SYMBOLS = {"lr": "η", "momentum": "β", "seed": "seed", "loss_min": "L*"}


@dataclass(frozen=True)
class Point:
    """One trajectory of a run: the run itself, or one point of a vmapped sweep.

    Attributes:
        label: a short name for legends, e.g. ``"η = 0.05"`` for a sweep point, else the
            run's name.
        index: the point's index in the sweep, None for a single run.
        config: the run's configuration with this point's swept values applied.
        columns: the metric columns of this point (1-D), only the rows where it was still
            running (``valid``).
    """

    label: str
    index: int | None
    config: dict[str, Any]
    columns: dict[str, np.ndarray]

    @property
    def steps(self) -> np.ndarray:
        return self.columns["step"]

    def get(self, name: str) -> np.ndarray | None:
        return self.columns.get(name)


def points(run: Run) -> list[Point]:
    """The trajectories of ``run``: one :class:`Point`, or one per point of a sweep (none
    when no metrics were recorded yet)."""
    m = run.metrics
    if "step" not in m:
        return []
    sweep = run.sweep
    name = str(run.config.get("name", run.path.name))
    if not sweep:
        cols = dict(m)
        if "valid" in cols and len(cols["valid"]):
            keep = np.asarray(cols["valid"], bool)
            cols = {k: v[keep] for k, v in cols.items()}
        return [Point(name, None, dict(run.config), cols)]
    n = len(next(iter(sweep.values())))
    out = []
    for j in range(n):
        values = {k: v[j] for k, v in sweep.items()}
        cols = {k: (v if v.ndim == 1 else v[:, j]) for k, v in m.items()}
        if "point_step" in cols:  # record_every > 1: the point's own step (where it stopped)
            cols["step"] = cols.pop("point_step")
        if "valid" in cols and len(cols["valid"]):
            keep = np.asarray(cols["valid"], bool)
            cols = {k: v[keep] for k, v in cols.items()}
        config = {**run.config, **values}
        out.append(Point(point_label(values), j, config, cols))
    return out


def point_label(values: dict[str, float]) -> str:
    """``{"lr": 0.05}`` -> ``"η = 0.05"`` (several fields joined by commas)."""
    parts = []
    for k, v in values.items():
        sym = SWEEP_SYMBOLS.get(k, k)
        parts.append(f"{sym} = {int(v)}" if k == "seed" else f"{sym} = {v:g}")
    return ", ".join(parts)


# --- thresholds and stableness --------------------------------------------------------------


def lambda_threshold(config: dict[str, Any]) -> float | None:
    r"""The (preconditioned) sharpness at which the configured optimizer turns unstable on a
    quadratic: its record's edge.

    $2/\eta$ for GD, $(2 + 2\beta)/\eta$ for heavy-ball momentum, $(2 + 2\beta)/((1 +
    2\beta)\eta)$ for Nesterov; for RMSProp ($2/\eta$) and Adam ($(2 + 2\beta_1)/((1 -
    \beta_1)\eta)$) a threshold on the *preconditioned* sharpness $\lambda_1(P^{-1}H)$ (the
    record's ``quantity``); None for normalized GD and GD on $\sqrt L$, whose step changes
    every step. A GD warm-up is ignored here (see :func:`lambda_thresholds`).

    Example:
        >>> lambda_threshold({"optimizer": "gd", "lr": 0.01})
        200.0
    """
    m = method_of(config)
    if m.edge is None:
        return None
    return float(m.edge(float(config["lr"]), float(config.get("momentum", 0.9))))


def lambda_thresholds(config: dict[str, Any], steps: np.ndarray) -> np.ndarray:
    """:func:`lambda_threshold` at each of ``steps``, with ``2/warmup_lr`` during a GD
    warm-up and NaN where no fixed threshold exists (an Adam warm-up). After the warm-up the
    threshold is on the method's ``quantity`` (the preconditioned sharpness for Adam and
    RMSProp)."""
    steps = np.asarray(steps)
    main = lambda_threshold(config)
    out = np.full(steps.shape, np.nan if main is None else main, np.float64)
    warm = int(config.get("warmup_steps") or 0)
    if warm:
        lr0 = config.get("warmup_lr") or config["lr"]
        first = method_of({"optimizer": config.get("warmup_optimizer", "gd")})
        fixed = first.edge is not None and first.quantity == "sharpness"
        out[steps < warm] = first.edge(float(lr0), 0.9) if fixed else np.nan
    return out


def stableness_name(config: dict[str, Any]) -> str:
    """How :func:`stableness` is defined for this configuration (for tables and labels)."""
    label = method_of(config).stableness_label
    if stableness_from_batch_sharpness(config):
        return label.replace("λ1", "BS") + ", BS = batch sharpness (arXiv 2412.20553)"
    return label


def stableness_from_batch_sharpness(config: dict[str, Any]) -> bool:
    """Whether the stableness of this run is formed from its batch sharpness: mini-batch runs
    of the fixed-step methods on the plain sharpness (SGD, momentum)."""
    m = method_of(config)
    return (config.get("batch_size") is not None and m.quantity == "sharpness"
            and not m.adaptive_step)


def stableness(point: Point) -> tuple[np.ndarray, np.ndarray] | None:
    """``(steps, S)`` at the steps where the sharpness was measured, or None without it.

    See the module docstring for the definition of $S_t$ per optimizer.
    """
    lam = point.get("lambda_1")
    if lam is None:
        return None
    lam = np.asarray(lam, np.float64)
    measured = np.isfinite(lam)
    # decimated rows (record_every) carry the step each lambda_1 was measured at
    at = point.get("lambda_step")
    steps = (point.steps if at is None else np.asarray(at, np.int64))[measured]
    lam = lam[measured]
    eta_lam = point.get("eta_lambda")
    if eta_lam is None:
        eff = point.get("eff_lr")
        eta_lam = (
            np.asarray(eff, np.float64)[measured] * lam if eff is not None
            else np.full(lam.shape, np.nan)
        )
    else:
        eta_lam = np.asarray(eta_lam, np.float64)[measured]
    m = method_of(point.config)
    warm = steps < int(point.config.get("warmup_steps") or 0)
    first = method_of({"optimizer": point.config.get("warmup_optimizer", "gd")})
    if not first.step_stableness:  # an Adam warm-up: undefined
        eta_lam = np.where(warm, np.nan, eta_lam)
    if m.quantity != "sharpness":  # 2 lambda_1(P^-1 H) / edge, where it was recorded
        pre = point.get("precond_lambda_1")
        pre = (np.full(lam.shape, np.nan) if pre is None
               else np.asarray(pre, np.float64)[measured])
        s = np.where(warm, eta_lam, 2.0 * pre / lambda_threshold(point.config))
    elif stableness_from_batch_sharpness(point.config) and point.get("batch_sharpness") is not None:
        bs = np.asarray(point.get("batch_sharpness"), np.float64)[measured]
        s = 2.0 * bs / lambda_threshold(point.config)
    elif m.step_stableness:
        s = eta_lam
    else:
        s = np.where(warm, eta_lam, 2.0 * lam / lambda_threshold(point.config))
    return steps, s




def _clock_divisor(config: dict[str, Any]) -> float | None:
    """``d`` in the flow clock s = η²(t − t_w)/d: 1/c of the method's limiting flow."""
    c = method_of(config).flow_constant
    return None if c is None else 1.0 / c


def flow_clock_name(config: dict[str, Any]) -> str | None:
    """``"η²t/4"`` (normalized GD), ``"η²t/8"`` (GD on √L), None for other optimizers."""
    return method_of(config).flow_clock


def flow_clock(point: Point) -> tuple[np.ndarray, np.ndarray] | None:
    r"""``(s, λ1)`` at the steps where $\lambda_1$ was measured after the warm-up, on the
    limiting flow's own clock $s = \eta^2 (t - t_w)/4$ (normalized GD) or $/8$ (GD on $\sqrt
    L$), $t_w$ = ``warmup_steps``; None for other optimizers or without $\lambda_1$.

    On this clock both limiting flows read $dX/ds = -\partial\Phi\,\nabla g$ ($g = \log
    \lambda_1$ or $\lambda_1$; Arora, Li & Panigrahi 2022, Thm 4.4 and its √L analogue), the
    time of the paper's figures: runs at different $\eta$ that follow the flow from the same
    start draw the same curve, up to $O(\eta)$.

    Example:
        >>> cols = {"step": np.arange(5.0), "lambda_1": np.array([4.0, np.nan, 3.0, np.nan, 2.0])}
        >>> s, lam = flow_clock(Point("p", None, {"optimizer": "normalized_gd", "lr": 0.2,
        ...                                       "warmup_steps": 2}, cols))
        >>> s.round(4).tolist(), lam.tolist()
        ([0.0, 0.02], [3.0, 2.0])
    """
    c = _clock_divisor(point.config)
    lam = point.get("lambda_1")
    if c is None or lam is None:
        return None
    lam = np.asarray(lam, np.float64)
    t_w = int(point.config.get("warmup_steps") or 0)
    keep = np.isfinite(lam) & (point.steps >= t_w)
    eta = float(point.config["lr"])
    return eta**2 * (np.asarray(point.steps, np.float64)[keep] - t_w) / c, lam[keep]


def two_step_average(point: Point) -> tuple[np.ndarray, np.ndarray] | None:
    r"""``(steps t, ½(λ1(x_t) + λ1(x_{t+1})))`` over the pairs of consecutive measured steps.

    Normalized GD and GD on $\sqrt L$ oscillate across Γ, so λ1 at $x_t$ and $x_{t+1}$
    differ by $O(\eta)$ in alternating directions; their average is what the limiting flow
    predicts (to $O(\eta)$), not either measurement. None without λ1 or without a pair.

    Example:
        >>> cols = {"step": np.arange(5), "lambda_1": np.array([4.0, 2.0, np.nan, 3.0, 5.0])}
        >>> two_step_average(Point("p", None, {}, cols))
        (array([0, 3]), array([3., 4.]))
    """
    lam = point.get("lambda_1")
    if lam is None:
        return None
    lam = np.asarray(lam, np.float64)
    steps = np.asarray(point.steps)
    ok = np.isfinite(lam[:-1]) & np.isfinite(lam[1:]) & (np.diff(steps) == 1)
    if not ok.any():
        return None
    return steps[:-1][ok], 0.5 * (lam[:-1][ok] + lam[1:][ok])


def collapse(run: Run) -> dict[str, Any] | None:
    r"""How well the $\lambda_1$ curves of an ``lr`` sweep of normalized GD or GD on $\sqrt L$
    agree on the flow's clock (:func:`flow_clock`); None for other runs.

    The reference is the point with the largest $\eta$. Each other point's measured
    $\lambda_1$ is compared with the reference's (linearly interpolated in $s$) over the
    range both cover, $0 \le s \le s_{\rm common}$:

    * ``max_rel_diff`` and ``median_rel_diff``: of $|\lambda_1 - \lambda_1^{\rm ref}| /
      \lambda_1^{\rm ref}$ over all those comparisons;
    * ``reference_fall``: the relative fall of the reference's $\lambda_1$ over the same
      range, $(\lambda_1^{\rm ref}(0) - \lambda_1^{\rm ref}(s_{\rm common})) /
      \lambda_1^{\rm ref}(0)$; agreement means little when this is small;
    * ``clock`` (e.g. ``"η²t/4"``), ``s_common``, ``reference_lr``, ``lrs``.
    """
    if not run.sweep or set(run.sweep) != {"lr"}:
        return None
    curves = []
    for p in points(run):
        fc = flow_clock(p)
        if fc is None or len(fc[0]) < 2:
            return None
        curves.append((float(p.config["lr"]), *fc))
    curves.sort(key=lambda c: -c[0])
    (lr_ref, s_ref, lam_ref), others = curves[0], curves[1:]
    s_common = min(float(c[1].max()) for c in curves)
    if not others or s_common <= 0:
        return None
    rel = []
    for _, s, lam in others:
        m = s <= s_common
        ref = np.interp(s[m], s_ref, lam_ref)
        rel.append(np.abs(lam[m] - ref) / np.abs(ref))
    rel = np.concatenate(rel)
    lam0, lam1 = lam_ref[0], float(np.interp(s_common, s_ref, lam_ref))
    return {
        "clock": flow_clock_name(run.config),
        "s_common": s_common,
        "reference_lr": lr_ref,
        "lrs": [c[0] for c in curves],
        "max_rel_diff": float(rel.max()),
        "median_rel_diff": float(np.median(rel)),
        "reference_fall": float((lam0 - lam1) / lam0),
    }


def _nonconsecutive(steps: np.ndarray | None, n: int) -> np.ndarray:
    """Mask of the ``n - 1`` successive pairs whose steps are not t, t + 1 (none if no steps)."""
    if steps is None:
        return np.zeros(max(n - 1, 0), bool)
    return np.diff(np.asarray(steps)) != 1


def harmonic_sums(s: np.ndarray, steps: np.ndarray | None = None) -> np.ndarray:
    """$1/S_t + 1/S_{t+1}$ over successive entries of ``s`` (length ``len(s) - 1``); with
    ``steps``, NaN for pairs that are not two consecutive steps."""
    s = np.asarray(s, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = 1.0 / s[:-1] + 1.0 / s[1:]
    return np.where(_nonconsecutive(steps, len(s)), np.nan, h)


def two_step_harmonic_mean(s: np.ndarray, steps: np.ndarray | None = None) -> np.ndarray:
    r"""$H_t = 2/(1/S_t + 1/S_{t+1})$; NaN where $S_t$ or $S_{t+1}$ is not positive and
    finite (and, with ``steps``, where the pair is not two consecutive steps). Length
    ``len(s) - 1``."""
    s = np.asarray(s, np.float64)
    ok = np.isfinite(s) & (s > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = 2.0 / harmonic_sums(s, steps)
    return np.where(ok[:-1] & ok[1:], h, np.nan)


def pairing_steps(config: dict[str, Any], steps: np.ndarray) -> np.ndarray | None:
    r"""``steps`` for normalized GD and GD on √L, whose $S_t$ alternates from step to step,
    so only consecutive steps make a pair (the runner measures $\lambda_1$ at steps $t$ and
    $t + 1$ for them); None for fixed-step optimizers, whose successive measurements pair."""
    return steps if is_adaptive(config) else None


def eos_onset(steps: np.ndarray, s: np.ndarray, *, level: float = ONSET_LEVEL,
              consecutive: bool = False) -> int | None:
    r"""The EoS onset step: the first recorded step $t$ with $H_t \ge$ ``level``.

    ``steps`` and ``s`` are the steps where the sharpness was measured and the stableness
    there (:func:`stableness`). $H_t = 2/(1/S_t + 1/S_{t'})$ pairs each measurement with
    the next one, $t'$ (the next step, $t + 1$, when the sharpness is measured every step;
    the next measurement otherwise; only $t' = t + 1$ with ``consecutive``, as for
    normalized GD and GD on $\sqrt L$). Pairs with a non-positive or non-finite member never
    count. Returns $t$, the first step of the first qualifying pair, or None if no pair
    qualifies.

    Example:
        >>> eos_onset(np.arange(5), np.array([1.0, 1.5, 1.8, 2.0, 2.0]))  # H_2 = 1.895
        3
    """
    h = two_step_harmonic_mean(s, steps if consecutive else None)
    hit = np.flatnonzero(h >= level)
    return int(np.asarray(steps)[hit[0]]) if len(hit) else None


# --- headline numbers -------------------------------------------------------------------------


def _num(x) -> float | int | None:
    """A JSON-able number: Python int/float, None for NaN/inf/missing."""
    if x is None:
        return None
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    x = float(x)
    return x if math.isfinite(x) else None


def _finite(x: np.ndarray | None) -> np.ndarray:
    if x is None:
        return np.zeros(0)
    x = np.asarray(x, np.float64)
    return x[np.isfinite(x)]


def _last(x: np.ndarray | None) -> float | None:
    f = _finite(x)
    return float(f[-1]) if len(f) else None


def _first(x: np.ndarray | None) -> float | None:
    f = _finite(x)
    return float(f[0]) if len(f) else None


def _mean(x: np.ndarray) -> float | None:
    f = _finite(x)
    return float(np.mean(f)) if len(f) else None


def point_headline(point: Point, *, level: float = ONSET_LEVEL) -> dict[str, Any]:
    """The per-trajectory headline numbers of :func:`headline` for one :class:`Point`."""
    cfg = point.config
    lam_col = point.get("lambda_1")
    out: dict[str, Any] = {
        "label": point.label,
        "lr": _num(cfg.get("lr")),
        "steps": len(point.steps),
        "last_step": _num(point.steps[-1]) if len(point.steps) else None,
        "loss_initial": _first(point.get("loss")),
        "loss_final": _last(point.get("loss")),
        "accuracy_final": _last(point.get("accuracy")),
        "lambda_threshold": _num(lambda_threshold(cfg)),
        "stableness": stableness_name(cfg),
        "eos_level": level,
        "eos_onset_step": None,
        "lambda_initial": _first(lam_col),
        "lambda_max": _num(np.max(_finite(lam_col))) if len(_finite(lam_col)) else None,
        "lambda_at_onset": None,
        "lambda_final": _last(lam_col),
        "mean_lambda_after_onset": None,
        "lambda_fall": None,
        "mean_eta_lambda_after_onset": None,
        "median_eta_lambda_after_onset": None,
        "mean_harmonic_sum_after_onset": None,
        "num_estimates": 0,
        "eig_matvecs_per_estimate": None,
        "eig_converged_fraction": None,
    }
    kicks = point.get("num_kicks")
    out["num_kicks"] = int(kicks[-1]) if kicks is not None and len(kicks) else None
    out["test_loss_final"] = _last(point.get("test_loss"))
    out["test_accuracy_final"] = _last(point.get("test_accuracy"))
    out.update(_batch_sharpness_numbers(point))
    st = stableness(point)
    if st is None:
        return out
    steps, s = st
    measured = np.isfinite(np.asarray(lam_col, np.float64))
    # record_every > 1: a row's eig_matvecs are summed over its window's eig_solves solves
    solves = point.get("eig_solves")
    solves = measured.astype(np.int64) if solves is None else np.asarray(solves)
    out["num_estimates"] = int(solves[measured].sum())
    mv = point.get("eig_matvecs")
    if mv is not None and measured.any():
        out["eig_matvecs_per_estimate"] = float(np.sum(np.asarray(mv)[measured])
                                                / np.sum(solves[measured]))
    solved = converged_rows(point.get("eig_converged"), lam_col)
    if solved is not None and len(solved):
        out["eig_converged_fraction"] = float(np.mean(solved))
    pair = pairing_steps(cfg, steps)
    onset = eos_onset(steps, s, level=level, consecutive=pair is not None)
    if onset is None:
        return out
    lam = np.asarray(lam_col, np.float64)[measured]
    after = steps >= onset
    lam_onset = float(lam[np.searchsorted(steps, onset)])
    lam_final = out["lambda_final"]
    out["eos_onset_step"] = onset
    out["lambda_at_onset"] = _num(lam_onset)
    out["mean_lambda_after_onset"] = _mean(lam[after])
    if lam_final is not None and lam_onset != 0:
        out["lambda_fall"] = _num((lam_onset - lam_final) / lam_onset)
    out["mean_eta_lambda_after_onset"] = _mean(s[after])
    fin = _finite(s[after])
    out["median_eta_lambda_after_onset"] = float(np.median(fin)) if len(fin) else None
    if is_adaptive(cfg):
        out["mean_harmonic_sum_after_onset"] = _mean(harmonic_sums(s, pair)[after[:-1]])
    return out


def _batch_sharpness_numbers(point: Point) -> dict[str, Any]:
    """A mini-batch run's batch sharpness: the last value, and the means of it and of λ1 over
    the measurements in the last third of the run (the Edge of Stochastic Stability's test:
    batch sharpness ≈ 2/η there, λ1 below); all None for full-batch runs."""
    keys = ("batch_sharpness_final", "batch_sharpness_last_third", "lambda_last_third",
            "minibatch_lambda_last_third")
    bs = point.get("batch_sharpness")
    if bs is None or not len(point.steps):
        return dict.fromkeys(keys)
    at = point.get("lambda_step")  # decimated rows: the step each measurement was made at
    steps = np.asarray(point.steps if at is None else at, np.float64)
    late = steps >= 2.0 * float(point.steps[-1]) / 3.0

    def late_mean(name):
        col = point.get(name)
        return None if col is None else _mean(np.asarray(col, np.float64)[late])

    return dict(zip(keys, (_last(bs), late_mean("batch_sharpness"), late_mean("lambda_1"),
                           late_mean("minibatch_lambda_1")), strict=True))


def headline(run: Run, *, level: float = ONSET_LEVEL) -> dict[str, Any]:
    r"""The numbers a report quotes about ``run``, all JSON-able (None where undefined).

    Run-wide: ``name``, ``optimizer``, ``lr``, ``steps_config``, ``state`` and ``message``
    (how the run ended), ``hvps_total`` (Hessian-vector products spent on curvature),
    ``hvps_per_estimate`` (``hvps_total`` over the number of sharpness estimates, all
    points of a sweep together, alignment products included), ``wall_seconds`` and
    ``seconds_per_step`` (compiled stepping time, curvature included).

    Per trajectory (at the top level for a single run; a list ``points`` of dicts for a
    sweep, with ``sweep`` holding the grid):

    * ``eos_onset_step``: :func:`eos_onset` of the stableness (first step where the
      two-step harmonic mean of $S_t$ reaches ``level`` = 1.9); None if never.
    * ``mean_eta_lambda_after_onset``: the arithmetic mean of $S_t$ over the measured steps
      $t \ge$ onset ($\eta\lambda_1$ for GD, $\eta_t\lambda_1$ for normalized GD / GD
      on $\sqrt L$, see ``stableness``). For normalized GD this mean is dominated by the
      huge $S_t$ of steps that land near a minimum (tiny gradient); the harmonic sum
      below is the quantity the theory predicts.
    * ``median_eta_lambda_after_onset``: the median of the same $S_t$ (robust to those).
    * ``mean_harmonic_sum_after_onset`` (normalized GD and GD on $\sqrt L$ only): the
      mean of $1/S_t + 1/S_{t+1}$ over the pairs that start at or after the onset
      (theory: 1).
    * ``lambda_initial``, ``lambda_max``, ``lambda_at_onset``, ``lambda_final`` (the
      last measured $\lambda_1$), ``mean_lambda_after_onset``, and ``lambda_fall`` =
      (λ_onset − λ_final)/λ_onset, the relative fall of $\lambda_1$ after the onset.
    * ``lambda_threshold``: $2/\eta$ (GD) or its momentum analogue, None otherwise.
    * Mini-batch runs: ``batch_sharpness_final``, and ``batch_sharpness_last_third`` and
      ``lambda_last_third``, the means of batch sharpness and $\lambda_1$ over the
      measurements at steps $t \ge \frac23 T$ (Andreyev & Beneventano, arXiv 2412.20553:
      batch sharpness ≈ $2/\eta$, $\lambda_1$ below), and ``minibatch_lambda_last_third``
      (with ``minibatch_lambda_batches``: λ1 of fixed mini-batch losses, above both); None
      for full-batch runs. Their
      stableness is formed from the batch sharpness (see the module docstring).
    * ``test_loss_final``, ``test_accuracy_final``: the held-out metrics at their last
      evaluation (None without a test split).
    * ``loss_initial``, ``loss_final``, ``accuracy_final``, ``steps`` (recorded steps),
      ``last_step``, ``num_estimates``, ``eig_matvecs_per_estimate``,
      ``eig_converged_fraction``, ``num_kicks`` (normalized GD / √L GD kicks at ∇L ≈ 0).

    ``prediction`` (None when the run makes no prediction): :func:`prediction_comparison`,
    whose ``status`` is ``"ok"`` or ``"failed"`` (with its ``reason``) and ``max_rel_gap`` the
    largest relative gap between the run's two-step average of λ1 and the predicted λ1;
    :func:`prediction_line` formats it as one line.

    A sweep over ``lr`` of normalized GD or GD on $\sqrt L$ also gets ``collapse``
    (:func:`collapse`: do the λ1 curves agree on the flow's clock η²t/4 or η²t/8?).

    Curvature fields are None for runs that did not track the sharpness.
    """
    pts = points(run)
    per = [point_headline(p, level=level) for p in pts]
    st = run.status
    hvps = st.get("hvps_total")
    estimates = sum(p["num_estimates"] for p in per)
    wall = st.get("wall_seconds")
    steps_run = st.get("step", max((p["steps"] for p in per), default=0))
    out: dict[str, Any] = {
        "name": run.config.get("name", run.path.name),
        "optimizer": run.config.get("optimizer"),
        "lr": _num(run.config.get("lr")),
        "steps_config": _num(run.config.get("steps")),
        "state": st.get("state"),
        "message": st.get("message") or "",
        "hvps_total": _num(hvps),
        "hvps_per_estimate": _num(hvps / estimates) if hvps is not None and estimates else None,
        "wall_seconds": _num(wall),
        "seconds_per_step": _num(wall / steps_run) if wall is not None and steps_run else None,
    }
    from ._prediction import prediction_comparison  # it builds on this module

    out["prediction"] = prediction_comparison(run)
    if run.sweep:
        if "lr" in run.sweep:
            out["lr"] = None  # one per point
        out["sweep"] = {k: [float(x) for x in v] for k, v in run.sweep.items()}
        out["points"] = per
        out["collapse"] = collapse(run)
    elif per:
        per[0].pop("label")
        out.update({k: v for k, v in per[0].items() if k != "lr"})
    return out


def converged_rows(conv: Any, lam: Any = None) -> np.ndarray | None:
    """Whether each eigen-solve converged, over the rows where one ran.

    ``eig_converged`` is 1.0 or 0.0 on a row with a solve and nan ("no measurement") on a
    row without. Older runs stored a boolean column with False on rows without a solve;
    there the solved rows are those where ``lam`` (lambda_1) is finite.
    """
    if conv is None:
        return None
    conv = np.asarray(conv)
    if conv.dtype == bool:
        if lam is None:
            return conv
        return conv[np.isfinite(np.asarray(lam, np.float64))]
    conv = np.asarray(conv, np.float64)
    return conv[np.isfinite(conv)] > 0.5
