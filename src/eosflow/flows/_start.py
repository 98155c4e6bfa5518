r"""Where a prediction starts: the first step at which a run is within the phase-I distance of Γ.

Arora, Li & Panigrahi (2022), Thm 4.3: from $x_0$ in the basin of Γ, within $\Theta(1/\eta)$
steps the iterate is $O(\eta)$-close to Γ and $\Phi(x_t)$ stays $O(\eta)$-close to $\Phi(x_0)$.
At the Edge of Stability the iterate then oscillates across Γ along $v_1$ with
$|a_t| + |a_{t+1}| \approx \ell$, $a_t = \langle v_1, x_t - \Phi(x_t)\rangle$, where
$\ell = \eta$ for normalized GD and $\ell = \eta\sqrt{\lambda_1/2}$ for GD on $\sqrt L$
(docs/theory.md, "Numerical signatures"). So each of two consecutive distances is at most $\ell$.
"""

import numpy as np

from .._types import Array
from ..optim import METHODS

# the methods with a limiting flow; normalized GD's (g = log lambda_1) oscillates by eta,
# GD on sqrt(L)'s by eta * sqrt(lambda_1 / 2)
_FLOWS = {name: m.flow_log for name, m in METHODS.items() if m.flow_constant is not None}


def phase_one_distance(eta: float, *, method: str = "normalized_gd",
                       lambda_1: Array | float | None = None) -> np.ndarray:
    r"""$\ell$: the two-step oscillation amplitude $|a_t| + |a_{t+1}|$ at the Edge of Stability:
    $\eta$ (normalized GD) or $\eta\sqrt{\lambda_1/2}$ (GD on $\sqrt L$; needs ``lambda_1``,
    a scalar or one value per step)."""
    if method not in _FLOWS:
        raise ValueError(f"method must be one of {sorted(_FLOWS)}, got {method!r}.")
    if not eta > 0:
        raise ValueError(f"eta must be positive, got {eta!r}.")
    if _FLOWS[method]:
        return np.asarray(float(eta))
    if lambda_1 is None:
        raise ValueError(f"method={method!r} needs lambda_1 (the scale is "
                         "eta * sqrt(lambda_1 / 2)).")
    return float(eta) * np.sqrt(np.asarray(lambda_1, np.float64) / 2)


def distance_estimate(grad_norm: Array, lambda_1: Array) -> np.ndarray:
    r"""$\|\nabla L(x_t)\| / \lambda_1$: a cheap estimate of the distance to Γ near Γ.

    With $\nabla L(x) \approx \nabla^2 L(\Phi)(x - \Phi)$, it equals $|a_t|$ once the
    iterate is aligned with $v_1$ and is at most $\|x_t - \Phi(x_t)\|$ otherwise (so it
    may call a start early before alignment; pass true distances when they are measured).
    """
    return np.asarray(grad_norm, np.float64) / np.asarray(lambda_1, np.float64)


def prediction_start(distances: Array, eta: float, *, method: str = "normalized_gd",
                     lambda_1: Array | float | None = None, factor: float = 1.5,
                     steps: Array | None = None) -> int | None:
    r"""The first step where the run is within the phase-I distance of Γ, or ``None``.

    Rule: with $d_t$ = ``distances[t]`` ($\|x_t - \Phi(x_t)\|$, or
    :func:`distance_estimate`) and $\ell_t$ = :func:`phase_one_distance`, the start is the
    first $t$ with $\max(d_t, d_{t+1}) \le$ ``factor`` $\cdot\,\ell_t$ — two consecutive
    iterates, because at the Edge of Stability the iterate alternates sides of Γ with
    $d_t + d_{t+1} \approx \ell$; ``factor`` (default 1.5) is the slack of the $O(\eta)$.
    NaN distances (not measured) never qualify.

    Args:
        distances: $d_t$ along the run (one per recorded step).
        eta: the learning rate $\eta$.
        method: ``"normalized_gd"`` or ``"sqrt_loss_gd"``.
        lambda_1: $\lambda_1$ (scalar or per step) for ``"sqrt_loss_gd"``.
        factor: the slack on $\ell$.
        steps: the step number of each distance (default ``0, 1, ...``); the returned value
            is taken from it.

    Returns:
        The step (from ``steps``) where the prediction starts, or ``None`` if the run never
        comes that close.

    Example:
        >>> prediction_start([0.5, 0.2, 0.012, 0.004, 0.011, 0.003], 0.01)
        2
    """
    d = np.asarray(distances, np.float64)
    if d.ndim != 1:
        raise ValueError(f"distances must be one-dimensional, got shape {d.shape}.")
    if not factor > 0:
        raise ValueError(f"factor must be positive, got {factor!r}.")
    ell = np.broadcast_to(phase_one_distance(eta, method=method, lambda_1=lambda_1), d.shape)
    if d.size < 2:
        return None
    close = d <= factor * ell
    both = close[:-1] & close[1:]
    hits = np.flatnonzero(both)
    if hits.size == 0:
        return None
    t = int(hits[0])
    if steps is None:
        return t
    steps = np.asarray(steps)
    if steps.shape != d.shape:
        raise ValueError(f"steps must have the shape of distances {d.shape}, got {steps.shape}.")
    return int(steps[t])
