"""Power iteration, for comparison: it finds the largest-*magnitude* eigenvalue."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._errors import check_int
from .._tree import nonfinite, pow2_scaled, ravel
from .._types import Array, Bool, Float, Int, PRNGKeyArray, PyTree
from ._lanczos import random_vector
from ._operator import operator_from
from ._results import RESULTS, finish, nan_where


class PowerResult(eqx.Module):
    """Result of :func:`power_iteration`."""

    eigenvalue: Float[Array, ""]
    eigenvector: PyTree
    num_matvecs: Int[Array, ""]
    converged: Bool[Array, ""]
    result: RESULTS


def power_iteration(
    loss_fn: Any,
    params: PyTree | None = None,
    *,
    v0: PyTree | None = None,
    rtol: float = 1e-3,
    max_iters: int = 1000,
    batches: PyTree | None = None,
    key: PRNGKeyArray | None = None,
    throw: bool = True,
) -> PowerResult:
    r"""Power iteration $v \leftarrow Hv/\|Hv\|$ with the Rayleigh quotient as the estimate.

    This converges to the eigenvalue of largest **magnitude**, which is the sharpness only
    when $\lambda_1 \ge |\lambda_{\min}|$, and slowly when the top two nearly tie. It stops
    when the estimate changes by at most ``rtol``$\cdot\|Hv\|$ (PyHessian's rule, made
    relative to the spectrum's scale: $\|Hv\| \ge |v^\top H v|$ estimates $\|H\|$, so the
    test is invariant under scaling the loss and is met on a zero Hessian, where the estimate
    is 0), which says nothing about its error. eosflow keeps it for comparison; use
    :func:`top_eigenpairs`. If a product is 0 (a zero Hessian, or ``v`` in its null space)
    the vector is kept and the estimate is 0.

    Args:
        loss_fn: a loss, a matvec or a :class:`~eosflow.curvature.HessianOperator`, as for
            :func:`top_eigenpairs`.
        params: the point (every leaf real floating point).
        v0: start vector like ``params``; default random from ``key`` (as is a zero one).
        rtol: relative change at which to stop, in ``(0, 1)``.
        max_iters: at most this many products.
        batches: optional batches summed by the Hessian.
        key: PRNG key of the random start; default ``jax.random.key(0)``.
        throw: raise if a product is inf or nan; with ``False``, ``result`` says so and the
            eigenvalue is nan.

    Returns:
        A :class:`PowerResult` (``result``: successful, max_matvecs_reached or nonfinite).

    Raises:
        ValueError: ``rtol`` or ``max_iters`` out of range (before tracing).
        TypeError: ``max_iters`` not an int, or a leaf of ``params`` not real floating point.

    Example:
        >>> import jax.numpy as jnp
        >>> A = jnp.diag(jnp.array([2.0, -5.0, 1.0]))
        >>> res = power_iteration(lambda v: A @ v, jnp.ones(3), rtol=1e-8)
        >>> round(float(res.eigenvalue), 4)  # the magnitude winner, not the top
        -5.0
    """
    if not (isinstance(rtol, int | float) and 0 < rtol < 1):
        raise ValueError(f"rtol must be a float in (0, 1), got {rtol!r}.")
    max_iters = check_int("max_iters", max_iters)
    op = operator_from(loss_fn, params, batches=batches)
    key = jax.random.key(0) if key is None else key
    if v0 is None:
        x0 = jax.random.normal(key, (op.size,), op.dtype)
    else:
        x0 = ravel(v0)[0].astype(op.dtype)
    spare = random_vector(key, op.size, op.dtype)
    return _power(loss_fn, params, batches, x0, spare, float(rtol), max_iters, throw)


@eqx.filter_jit
def _power(fn, params, batches, x0, spare, rtol, max_iters, throw):
    op = operator_from(fn, params, batches=batches, linearize=True)

    def body(carry):
        v, lam, _, n, bad = carry
        w = op.matvec(v)
        bad = bad | nonfinite(w)
        w, peak = pow2_scaled(w)  # exact rescaling: no square or product under- or overflows
        new = jnp.vdot(v, w) * peak
        norm = jnp.linalg.norm(w)
        nv = jnp.where(norm > 0, w / jnp.where(norm > 0, norm, 1), v)
        done = jnp.abs(new - lam) <= rtol * norm * peak
        return nv, new, done, n + 1, bad

    def cond(carry):
        _, _, done, n, bad = carry
        return ~done & (n < max_iters) & ~bad

    x0 = pow2_scaled(x0)[0]
    norm0 = jnp.linalg.norm(x0)
    # a zero (or not finite) start is replaced by a random one, as top_eigenpairs does
    v = jnp.where(norm0 > 0, x0 / jnp.where(norm0 > 0, norm0, 1), spare / jnp.linalg.norm(spare))
    zero = jnp.zeros((), bool)
    init = (v, jnp.asarray(jnp.inf, op.dtype), zero, jnp.zeros((), jnp.int32), zero)
    v, lam, done, n, bad = jax.lax.while_loop(cond, body, init)
    result = RESULTS.where(
        bad, RESULTS.nonfinite, RESULTS.where(done, RESULTS.successful,
                                              RESULTS.max_matvecs_reached)
    )
    lam = finish("power_iteration", result, nan_where(bad, lam), throw)
    return PowerResult(lam, op.unravel(v), n, done & ~bad, result)
