r"""Diagnostics of a run against the theory (docs/theory.md, "Numerical signatures").

For an iterate $x_t$ with $\Phi_t = \Phi(x_t)$ and $(\lambda_1, v_1)$ the top eigenpair of
$\nabla^2 L(\Phi_t)$:

* $a_t = \langle v_1, x_t - \Phi_t\rangle$, whose sign alternates at the Edge of Stability;
* $\theta_t$, the angle between $\tilde x_t = \nabla^2 L(\Phi_t)(x_t - \Phi_t)$ and $v_1$;
* the stableness
  $S_t = \eta_t \sup_{s \in [0, \eta_t]} \lambda_1(\nabla^2 L(x_t - s\nabla L(x_t)))$,
  and the harmonic sum $1/S_t + 1/S_{t+1}$ (≈ 1 for normalized GD, Thm 4.7);
* the two-step sums $\sqrt{L_t - L^*} + \sqrt{L_{t+1} - L^*}$ (≈ $\eta\sqrt{\lambda_1/2}$ for
  normalized GD, ≈ $\eta\lambda_1/2$ for GD on $\sqrt L$; Thms 4.7, 4.8).

Each function works on one point and is jittable and vmappable.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from .._errors import check_int
from .._types import Array, PyTree
from ..curvature import hessian_operator, top_eigenpairs
from ._project import FlowRESULTS, project_solve


def _top(loss_fn, x):
    dtype = jnp.result_type(*jax.tree.leaves(x))
    tol = 1e-10 if dtype == jnp.float64 else 1e-5
    res = top_eigenpairs(loss_fn, x, 1, tol=tol, throw=False)
    return res.eigenvalues[0], jax.tree.map(lambda a: a[0], res.eigenvectors)


def phi_diagnostics(loss_fn: Callable[[PyTree], Array], x: PyTree,
                    **project_kwargs) -> dict[str, Array | PyTree]:
    r"""$\Phi(x)$, $\|x - \Phi\|$, $\lambda_1(\Phi)$, $a = \langle v_1, x-\Phi\rangle$, $\theta$.

    Returns a dict with ``phi`` (a PyTree like ``x``), ``phi_dist``, ``lambda_phi``,
    ``a_t``, ``theta`` (radians, in $[0, \pi/2]$; the sign of $v_1$ is arbitrary) and
    ``phi_ok`` (whether the projection converged; it never raises: ``throw=False``).
    """
    proj = project_solve(loss_fn, x, **{"throw": False, **project_kwargs})
    phi = proj.value
    lam, v1 = _top(loss_fn, phi)
    d = optax.tree.sub(x, phi)
    a = optax.tree.vdot(v1, d)
    xt = hessian_operator(loss_fn, phi).mv(d)
    norm = optax.tree.norm(xt)
    cos = jnp.abs(optax.tree.vdot(xt, v1)) / jnp.where(norm > 0, norm, 1.0)
    return {
        "phi": phi,
        "phi_dist": optax.tree.norm(d),
        "lambda_phi": lam,
        "a_t": a,
        "theta": jnp.arccos(jnp.clip(cos, 0.0, 1.0)),
        "phi_ok": proj.result == FlowRESULTS.successful,
    }


def stableness(loss_fn: Callable[[PyTree], Array], x: PyTree, eta_t: Array | float,
               *, num_points: int = 9) -> Array:
    r"""$S_L(x, \eta_t) = \eta_t \sup_{s\in[0,\eta_t]} \lambda_1(\nabla^2 L(x - s\nabla L(x)))$.

    The supremum is taken over ``num_points`` equally spaced $s$ (endpoints included): a
    lower bound that is exact when $\lambda_1$ is monotone along the segment.
    """
    num_points = check_int("num_points", num_points)
    g = jax.grad(loss_fn)(x)
    ss = jnp.linspace(0.0, 1.0, num_points) * eta_t
    lams = jax.vmap(lambda s: _top(loss_fn, optax.tree.add_scale(x, -s, g))[0])(ss)
    return eta_t * jnp.max(lams)


def harmonic_sum(S: Array) -> Array:
    r"""$1/S_t + 1/S_{t+1}$ along a sequence of stableness values (length $n - 1$)."""
    S = jnp.asarray(S)
    return 1 / S[:-1] + 1 / S[1:]


def two_step_sqrt_loss(loss: Array, loss_min: float = 0.0) -> Array:
    r"""$\sqrt{L_t - L^*} + \sqrt{L_{t+1} - L^*}$ along a sequence of losses."""
    r = jnp.sqrt(jnp.maximum(jnp.asarray(loss) - loss_min, 0.0))
    return r[:-1] + r[1:]
