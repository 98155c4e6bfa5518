"""Hutchinson's stochastic estimate of the Hessian trace."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._types import Array, Float, Int, PRNGKeyArray, PyTree
from ._operator import operator_from


class TraceResult(eqx.Module):
    """Result of :func:`hutchinson_trace`: the estimate, its standard error, the cost."""

    trace: Float[Array, ""]
    stderr: Float[Array, ""]
    num_matvecs: Int[Array, ""]


def hutchinson_trace(
    loss_fn: Any,
    params: PyTree | None = None,
    *,
    num_samples: int = 64,
    batches: PyTree | None = None,
    key: PRNGKeyArray | None = None,
) -> TraceResult:
    r"""$\operatorname{tr} H \approx \frac1s \sum_{i=1}^s z_i^\top H z_i$, Rademacher $z_i$.

    The estimator is unbiased; ``stderr`` is the sample standard deviation over
    $\sqrt{s}$. Costs ``num_samples`` Hessian-vector products.

    References:
        Hutchinson, *A stochastic estimator of the trace of the influence matrix for
        Laplacian smoothing splines* (1990).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> A = jnp.diag(jnp.arange(1.0, 5.0))  # trace 10; Rademacher probes are exact here
        >>> float(hutchinson_trace(lambda v: A @ v, jnp.zeros(4), num_samples=3).trace)
        10.0
    """
    if not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an int >= 2, got {num_samples!r}.")
    key = jax.random.key(0) if key is None else key
    operator_from(loss_fn, params, batches=batches)  # validate before tracing
    return _hutchinson(loss_fn, params, batches, key, num_samples)


@eqx.filter_jit
def _hutchinson(fn, params, batches, key, num_samples):
    op = operator_from(fn, params, batches=batches, linearize=True)

    def sample(_, k):
        z = jax.random.rademacher(k, (op.size,), op.dtype)
        return None, jnp.vdot(z, op.matvec(z))

    _, vals = jax.lax.scan(sample, None, jax.random.split(key, num_samples))
    stderr = jnp.std(vals, ddof=1) / jnp.sqrt(num_samples)
    return TraceResult(jnp.mean(vals), stderr, jnp.asarray(num_samples, jnp.int32))
