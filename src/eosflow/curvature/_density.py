"""Spectral density of the Hessian by stochastic Lanczos quadrature (SLQ)."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._types import Array, Float, Int, PRNGKeyArray, PyTree
from . import _lanczos as kr
from ._operator import operator_from


class SpectralDensity(eqx.Module):
    r"""Gauss quadrature nodes and weights of the Hessian's spectral measure, per probe.

    For probe $z$ (unit norm) with Lanczos nodes $\theta_i$ and weights $w_i$,
    $\sum_i w_i f(\theta_i) \approx z^\top f(H) z$, exactly for polynomials of degree
    $< 2m$. Averaged over probes this estimates $\frac1n \operatorname{tr} f(H)$.
    """

    nodes: Float[Array, "probes m"]
    weights: Float[Array, "probes m"]
    dim: int = eqx.field(static=True)
    num_matvecs: Int[Array, ""]

    def moment(self, p: int) -> Array:
        """Estimate of $\\frac1n \\operatorname{tr} H^p$."""
        return jnp.mean(jnp.sum(self.weights * self.nodes**p, axis=1))

    def density(self, grid: Array, sigma: float | None = None) -> Array:
        """The density smoothed by a Gaussian of width ``sigma`` on ``grid`` (integrates to 1)."""
        if sigma is None:
            span = jnp.max(self.nodes) - jnp.min(self.nodes)
            sigma = 0.01 * span + 1e-12
        d = grid[:, None, None] - self.nodes[None]
        g = jnp.exp(-0.5 * (d / sigma) ** 2) / (sigma * jnp.sqrt(2 * jnp.pi))
        return jnp.mean(jnp.sum(self.weights[None] * g, axis=2), axis=1)


def spectral_density(
    loss_fn: Any,
    params: PyTree | None = None,
    *,
    num_iters: int = 40,
    num_probes: int = 4,
    batches: PyTree | None = None,
    key: PRNGKeyArray | None = None,
) -> SpectralDensity:
    r"""Stochastic Lanczos quadrature: ``num_probes`` Lanczos runs of ``num_iters`` products.

    References:
        Ghorbani, Krishnan & Xiao, *An Investigation into Neural Net Optimization via Hessian
        Eigenvalue Density*, ICML 2019 (arXiv 1901.10159); Ubaru, Chen & Saad, SIMAX 2017.

    Example:
        >>> import jax.numpy as jnp
        >>> A = jnp.diag(jnp.arange(1.0, 31.0))
        >>> sd = spectral_density(lambda v: A @ v, jnp.zeros(30), num_iters=8, num_probes=2)
        >>> round(float(sd.moment(1)) * 30, 2)  # Rademacher probes: z^T A z / n = tr A / n
        465.0
    """
    if not isinstance(num_iters, int) or num_iters < 1:
        raise ValueError(f"num_iters must be a positive int, got {num_iters!r}.")
    if not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"num_probes must be a positive int, got {num_probes!r}.")
    op = operator_from(loss_fn, params, batches=batches)
    if num_iters + 1 > op.size:
        raise ValueError(f"num_iters must be below the dimension {op.size}, got {num_iters}.")
    key = jax.random.key(0) if key is None else key
    return _slq(loss_fn, params, batches, key, num_iters, num_probes)


@eqx.filter_jit
def _slq(fn, params, batches, key, num_iters, num_probes):
    op = operator_from(fn, params, batches=batches, linearize=True)

    def probe(k):
        k1, k2 = jax.random.split(k)
        z = jax.random.rademacher(k1, (op.size,), op.dtype)
        state = kr.init_state(z[None], num_iters, k2)
        state = jax.lax.fori_loop(0, num_iters, lambda _, s: kr.extend(s, op.matvec, 1), state)
        theta, Y, _ = kr.ritz(state, 1)
        return theta, Y[0] ** 2

    nodes, weights = jax.lax.map(probe, jax.random.split(key, num_probes))
    return SpectralDensity(nodes, weights, op.size, jnp.asarray(num_iters * num_probes))
