"""Spectral density of the Hessian by stochastic Lanczos quadrature (SLQ)."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._errors import check_int
from .._types import Array, Float, Int, PRNGKeyArray, PyTree
from . import _lanczos as kr
from ._operator import operator_from
from ._results import RESULTS, finish, nan_where


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
    result: RESULTS

    def moment(self, p: int) -> Array:
        """Estimate of $\\frac1n \\operatorname{tr} H^p$."""
        return jnp.mean(jnp.sum(self.weights * self.nodes**p, axis=1))

    def density(self, grid: Array, sigma: float | None = None) -> Array:
        """The density smoothed by a Gaussian of width ``sigma`` on ``grid`` (integrates to 1).

        Args:
            grid: points (1-D, sorted) at which to evaluate the density, in eigenvalue units.
            sigma: Gaussian width; default :func:`smoothing_width` of the nodes and ``grid``.

        Returns:
            The density on ``grid``, shape ``grid.shape``, in 1/eigenvalue units.
        """
        grid = jnp.asarray(grid)
        if sigma is None:
            sigma = smoothing_width(self.nodes, grid)
        d = grid[:, None, None] - self.nodes[None]
        g = jnp.exp(-0.5 * (d / sigma) ** 2) / (sigma * jnp.sqrt(2 * jnp.pi))
        return jnp.mean(jnp.sum(self.weights[None] * g, axis=2), axis=1)


def smoothing_width(nodes: Array, grid: Array | None = None) -> Array:
    r"""The default Gaussian width for a density over Ritz ``nodes``, shared by its figure.

    $\sigma = \max(0.01\,\text{span},\ 10^{-3} \max|\theta|,\ \Delta)$: 1% of the nodes'
    span, floored by the spectrum's scale (so a degenerate spectrum, all nodes equal, keeps a
    width proportional to its eigenvalue) and by the grid spacing $\Delta$ (a Gaussian
    narrower than the grid would be missed between its points, so the density would not
    integrate to 1 on it). When every node is 0 and there is no grid (or a one-point grid)
    there is no scale at all and the width is 1.

    Args:
        nodes: Ritz values, any shape, eigenvalue units; non-finite ones are ignored.
        grid: optional 1-D evaluation grid, sorted.

    Returns:
        A positive scalar, in eigenvalue units.

    Example:
        >>> import jax.numpy as jnp
        >>> round(float(smoothing_width(jnp.full((2, 5), 3.0))), 6)  # a point mass at 3
        0.003
    """
    nodes = jnp.asarray(nodes)
    finite = jnp.isfinite(nodes)
    lo = jnp.min(jnp.where(finite, nodes, jnp.inf))
    hi = jnp.max(jnp.where(finite, nodes, -jnp.inf))
    span = jnp.where(hi >= lo, hi - lo, 0)
    scale = jnp.max(jnp.where(finite, jnp.abs(nodes), 0))
    width = jnp.maximum(0.01 * span, 1e-3 * scale)
    if grid is not None:
        grid = jnp.asarray(grid)
        if grid.size > 1:
            width = jnp.maximum(width, (jnp.max(grid) - jnp.min(grid)) / (grid.size - 1))
    return jnp.where(width > 0, width, 1.0)


def spectral_density(
    loss_fn: Any,
    params: PyTree | None = None,
    *,
    num_iters: int = 40,
    num_probes: int = 4,
    batches: PyTree | None = None,
    key: PRNGKeyArray | None = None,
    throw: bool = True,
) -> SpectralDensity:
    r"""Stochastic Lanczos quadrature: ``num_probes`` Lanczos runs of ``num_iters`` products.

    Args:
        loss_fn: a loss, a matvec or a :class:`~eosflow.curvature.HessianOperator`, as for
            :func:`top_eigenpairs`.
        params: the point (every leaf real floating point).
        num_iters: Lanczos steps per probe, below the dimension.
        num_probes: Rademacher probes.
        batches: optional batches summed by the Hessian.
        key: PRNG key of the probes; default ``jax.random.key(0)``.
        throw: raise if a product is inf or nan; with ``False``, ``result`` says so and the
            nodes are nan (never a finite, wrong spectrum).

    Returns:
        A :class:`SpectralDensity` (nodes and weights per probe); on a zero Hessian every
        node is 0 and the weights sum to 1.

    Raises:
        ValueError: ``num_iters`` or ``num_probes`` out of range (before tracing).
        TypeError: ``num_iters`` or ``num_probes`` not an int, or a leaf of ``params`` not
            real floating point.

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
    num_iters = check_int("num_iters", num_iters)
    num_probes = check_int("num_probes", num_probes)
    op = operator_from(loss_fn, params, batches=batches)
    if num_iters + 1 > op.size:
        raise ValueError(f"num_iters must be below the dimension {op.size}, got {num_iters}.")
    key = jax.random.key(0) if key is None else key
    return _slq(loss_fn, params, batches, key, num_iters, num_probes, throw)


@eqx.filter_jit
def _slq(fn, params, batches, key, num_iters, num_probes, throw):
    op = operator_from(fn, params, batches=batches, linearize=True)

    def probe(k):
        z = jax.random.rademacher(k, (op.size,), op.dtype)
        # a breakdown continues from a shift of the probe itself (random signs): no second
        # random draw in the compiled loop
        state = kr.init_state(z[None], num_iters, z)
        state = jax.lax.fori_loop(0, num_iters, lambda _, s: kr.extend(s, op.matvec, 1), state)
        theta, Y, _ = kr.ritz(state, 1)
        return theta * state.scale, Y[0] ** 2, state.nonfinite

    nodes, weights, bad = jax.lax.map(probe, jax.random.split(key, num_probes))
    bad = jnp.any(bad)
    result = RESULTS.where(bad, RESULTS.nonfinite, RESULTS.successful)
    nodes = finish("spectral_density", result, nan_where(bad, nodes), throw)
    count = jnp.asarray(num_iters * num_probes, jnp.int32)
    return SpectralDensity(nodes, weights, op.size, count, result)
