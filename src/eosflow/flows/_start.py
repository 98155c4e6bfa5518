r"""Where a prediction starts: the first step at which a run is within the phase-I distance of Γ.

Arora, Li & Panigrahi (2022), Thm 4.3: from $x_0$ in the basin of Γ, within $\Theta(1/\eta)$
steps the iterate is $O(\eta)$-close to Γ and $\Phi(x_t)$ stays $O(\eta)$-close to $\Phi(x_0)$.
At the Edge of Stability the iterate then oscillates across Γ along $v_1$ with
$|a_t| + |a_{t+1}| \approx \ell$, $a_t = \langle v_1, x_t - \Phi(x_t)\rangle$, where
$\ell = \eta$ for normalized GD and $\ell = \eta\sqrt{\lambda_1/2}$ for GD on $\sqrt L$
(docs/theory.md, "Numerical signatures"). So each of two consecutive distances is at most $\ell$.

:func:`cycle_start` places an iterate there directly: $\Phi(x) + \tfrac{\ell}{2} v_1$, the
symmetric two-step cycle across Γ, where phase I would take it.
"""

from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from .._types import Array, PyTree
from ..curvature import top_eigenpairs
from ..optim import METHODS
from ._project import ProjectResult, project_solve

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


class CycleStart(eqx.Module):
    r"""The start of the two-step cycle across Γ (:func:`cycle_start`).

    Attributes:
        value: $\Phi(x) + \tfrac{\ell}{2} v_1$, a PyTree like ``x``.
        projection: the :class:`ProjectResult` of $\Phi(x)$ (its ``converged``, ``grad_norm``,
            ``distance`` $= \|x - \Phi(x)\|$).
        eigen: the :class:`eosflow.curvature.EigenResult` of $\lambda_1$, $v_1$ at $\Phi(x)$.
        lambda_1: $\lambda_1$ at $\Phi(x)$, in loss units per squared parameter unit.
        half_width: $\ell/2$, the displacement along $v_1$, in parameter units.
    """

    value: PyTree
    projection: ProjectResult
    eigen: Any
    lambda_1: Float[Array, ""]
    half_width: Float[Array, ""]

    @property
    def converged(self) -> bool:
        """Φ(x) reached its ``gtol`` and the eigen-solve its ``tol``."""
        return bool(self.projection.converged) and bool(self.eigen.converged)


def cycle_start(loss_fn: Callable[[PyTree], Array], x: PyTree, eta: float, *,
                method: Literal["normalized_gd", "sqrt_loss_gd"] = "normalized_gd",
                residual_fn: Callable | None = None,
                project_kwargs: dict[str, Any] | None = None, tol: float = 1e-4,
                throw: bool = True) -> CycleStart:
    r"""$\Phi(x) + \tfrac{\ell}{2} v_1$: where phase I of normalized GD or GD on $\sqrt L$
    would bring the iterate from ``x`` (Arora, Li & Panigrahi 2022, arXiv 2205.09745,
    Thm 4.3), placed there directly.

    $\Phi(x)$ by :func:`project_solve`; $\lambda_1$, $v_1$ at $\Phi(x)$ by
    :func:`eosflow.curvature.top_eigenpairs`; $\ell$ = :func:`phase_one_distance`
    ($\eta$, or $\eta\sqrt{\lambda_1/2}$). From there the method's step along $v_1$ is
    $\ell$ to first order, so the iterate alternates between $\pm\ell/2$ — the
    symmetric two-step cycle — from its first step, and $\Phi$ of every later iterate
    follows the limiting flow from $\Phi(x)$ up to $O(\eta)$ with no phase-I drift. $v_1$'s
    sign is the one pointing from $\Phi(x)$ toward ``x`` (arbitrary when ``x`` is on Γ
    to rounding). Call it outside ``jit``.

    Args:
        loss_fn: $L$ on PyTrees like ``x``.
        x: the point to start from (e.g. the last iterate of a GD warm-up).
        eta: the method's learning rate $\eta > 0$.
        method: ``"normalized_gd"`` or ``"sqrt_loss_gd"``.
        residual_fn, project_kwargs: passed to :func:`project_solve` (``project_kwargs``
            without ``throw``, which is this function's).
        tol: relative tolerance of the $\lambda_1$, $v_1$ solve.
        throw: raise when $\Phi(x)$ does not converge or a Hessian-vector product is not
            finite; with ``False`` the result's ``converged`` says so (``value`` is
            computed from the unconverged results all the same). An eigen-solve that spends
            its budget short of ``tol`` never raises: ``converged`` reports it.

    Returns:
        A :class:`CycleStart`.

    Raises:
        ValueError: an unknown ``method``, a non-positive ``eta``, or ``throw`` in
            ``project_kwargs``.
        ProjectionError: the projection failed and ``throw=True``.
        RuntimeError: a non-finite Hessian-vector product at $\Phi(x)$ and ``throw=True``
            (:func:`eosflow.curvature.top_eigenpairs`'s equinox runtime error).

    Example:
        >>> import jax.numpy as jnp
        >>> from eosflow.problems import toy_a
        >>> toy = toy_a()  # L = (1 + x^2) y^2: Γ = {y = 0}, v1 = e_y, lambda1 = 2(1 + x^2)
        >>> r = cycle_start(toy.loss_fn, jnp.array([0.0, 0.3]), 0.1)
        >>> [round(float(a), 6) for a in r.value], round(float(r.lambda_1), 6)
        ([0.0, 0.05], 2.0)
    """
    phase_one_distance(eta, method=method, lambda_1=1.0)  # checks method and eta first
    if "throw" in (project_kwargs or {}):
        raise ValueError("project_kwargs: give throw as cycle_start's own argument.")
    proj = project_solve(loss_fn, x, residual_fn=residual_fn, throw=throw,
                         **(project_kwargs or {}))
    eig = top_eigenpairs(loss_fn, proj.value, 1, tol=tol, throw=throw)
    lam = eig.eigenvalues[0]
    v1 = jax.tree.map(lambda v: v[0], eig.eigenvectors)
    toward = sum(jnp.vdot(v, a - p) for v, a, p in zip(
        jax.tree.leaves(v1), jax.tree.leaves(x), jax.tree.leaves(proj.value), strict=True))
    half = phase_one_distance(eta, method=method, lambda_1=float(lam)) / 2
    step = float(half) if float(toward) >= 0 else -float(half)
    value = jax.tree.map(lambda p, v: p + (step * v).astype(p.dtype), proj.value, v1)
    return CycleStart(value, proj, eig, lam, jnp.asarray(half, lam.dtype))
