"""Hutchinson's stochastic estimate of the Hessian trace."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._errors import check_int
from .._tree import nonfinite
from .._types import Array, Float, Int, PRNGKeyArray, PyTree
from ._operator import operator_from
from ._results import RESULTS, finish, nan_where


class TraceResult(eqx.Module):
    """Result of :func:`hutchinson_trace`: the estimate, its standard error, the cost."""

    trace: Float[Array, ""]
    stderr: Float[Array, ""]
    num_matvecs: Int[Array, ""]
    result: RESULTS


def hutchinson_trace(
    loss_fn: Any,
    params: PyTree | None = None,
    *,
    num_samples: int = 64,
    batches: PyTree | None = None,
    key: PRNGKeyArray | None = None,
    throw: bool = True,
) -> TraceResult:
    r"""$\operatorname{tr} H \approx \frac1s \sum_{i=1}^s z_i^\top H z_i$, Rademacher $z_i$.

    The estimator is unbiased; ``stderr`` is the sample standard deviation over
    $\sqrt{s}$. Costs ``num_samples`` Hessian-vector products.

    Args:
        loss_fn: a loss, a matvec or a :class:`~eosflow.curvature.HessianOperator`, as for
            :func:`top_eigenpairs`.
        params: the point (every leaf real floating point).
        num_samples: number of Rademacher probes, at least 2.
        batches: optional batches summed by the Hessian.
        key: PRNG key of the probes; default ``jax.random.key(0)``.
        throw: raise if a product is inf or nan; with ``False``, ``result`` says so and the
            trace and its standard error are nan.

    Returns:
        A :class:`TraceResult`; 0 (not nan) on a zero Hessian.

    Raises:
        ValueError: ``num_samples`` below 2 (before tracing).
        TypeError: ``num_samples`` not an int, or a leaf of ``params`` not real floating
            point.

    References:
        Hutchinson, *A stochastic estimator of the trace of the influence matrix for
        Laplacian smoothing splines* (1990).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> A = jnp.diag(jnp.arange(1.0, 5.0))  # trace 10; Rademacher probes are exact here
        >>> float(hutchinson_trace(lambda v: A @ v, jnp.zeros(4), num_samples=3).trace)
        10.0
    """
    num_samples = check_int("num_samples", num_samples, 2)
    key = jax.random.key(0) if key is None else key
    operator_from(loss_fn, params, batches=batches)  # validate before tracing
    return _hutchinson(loss_fn, params, batches, key, num_samples, throw)


@eqx.filter_jit
def _hutchinson(fn, params, batches, key, num_samples, throw):
    op = operator_from(fn, params, batches=batches, linearize=True)

    def sample(_, k):
        z = jax.random.rademacher(k, (op.size,), op.dtype)
        return None, jnp.vdot(z, op.matvec(z))

    _, vals = jax.lax.scan(sample, None, jax.random.split(key, num_samples))
    bad = nonfinite(vals)
    result = RESULTS.where(bad, RESULTS.nonfinite, RESULTS.successful)
    trace, stderr = nan_where(bad, (jnp.mean(vals), jnp.std(vals, ddof=1) / jnp.sqrt(num_samples)))
    trace = finish("hutchinson_trace", result, trace, throw)
    return TraceResult(trace, stderr, jnp.asarray(num_samples, jnp.int32), result)
