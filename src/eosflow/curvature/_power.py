"""Power iteration, for comparison: it finds the largest-*magnitude* eigenvalue."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._tree import ravel
from .._types import Array, Bool, Float, Int, PRNGKeyArray, PyTree
from ._operator import operator_from


class PowerResult(eqx.Module):
    """Result of :func:`power_iteration`."""

    eigenvalue: Float[Array, ""]
    eigenvector: PyTree
    num_matvecs: Int[Array, ""]
    converged: Bool[Array, ""]


def power_iteration(
    loss_fn: Any,
    params: PyTree | None = None,
    *,
    v0: PyTree | None = None,
    rtol: float = 1e-3,
    max_iters: int = 1000,
    batches: PyTree | None = None,
    key: PRNGKeyArray | None = None,
) -> PowerResult:
    r"""Power iteration $v \leftarrow Hv/\|Hv\|$ with the Rayleigh quotient as the estimate.

    This converges to the eigenvalue of largest **magnitude**, which is the sharpness only
    when $\lambda_1 \ge |\lambda_{\min}|$, and slowly when the top two nearly tie. It stops
    when the estimate changes by less than ``rtol`` relative (PyHessian's rule), which says
    nothing about its error. eosflow keeps it for comparison; use :func:`top_eigenpairs`.

    Example:
        >>> import jax.numpy as jnp
        >>> A = jnp.diag(jnp.array([2.0, -5.0, 1.0]))
        >>> res = power_iteration(lambda v: A @ v, jnp.ones(3), rtol=1e-8)
        >>> round(float(res.eigenvalue), 4)  # the magnitude winner, not the top
        -5.0
    """
    if not (isinstance(rtol, int | float) and rtol > 0):
        raise ValueError(f"rtol must be a positive float, got {rtol!r}.")
    if not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"max_iters must be a positive int, got {max_iters!r}.")
    op = operator_from(loss_fn, params, batches=batches)
    key = jax.random.key(0) if key is None else key
    if v0 is None:
        x0 = jax.random.normal(key, (op.size,), op.dtype)
    else:
        x0 = ravel(v0)[0].astype(op.dtype)
    return _power(loss_fn, params, batches, x0, float(rtol), max_iters)


@eqx.filter_jit
def _power(fn, params, batches, x0, rtol, max_iters):
    op = operator_from(fn, params, batches=batches, linearize=True)

    def body(carry):
        v, lam, _, n = carry
        w = op.matvec(v)
        new = jnp.vdot(v, w)
        nv = w / jnp.linalg.norm(w)
        change = jnp.abs(new - lam) / (jnp.abs(lam) + 1e-6)
        return nv, new, change < rtol, n + 1

    def cond(carry):
        _, _, done, n = carry
        return ~done & (n < max_iters)

    v = x0 / jnp.linalg.norm(x0)
    init = (v, jnp.asarray(jnp.inf, op.dtype), jnp.zeros((), bool), jnp.zeros((), jnp.int32))
    v, lam, done, n = jax.lax.while_loop(cond, body, init)
    return PowerResult(lam, op.unravel(v), n, done)
