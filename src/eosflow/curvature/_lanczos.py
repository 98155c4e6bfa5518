r"""Block Krylov–Schur Lanczos with full reorthogonalisation, on flat vectors.

The basis is kept as rows of ``V`` and the projected operator as the coefficients
``T[:, i] = V (A q_i)`` that full reorthogonalisation computes anyway. With a start block of
``b`` vectors, multiplying basis vector ``q_j`` adds the remainder of ``A q_j`` as basis vector
``q_{j+b}`` (band Lanczos), so after ``j`` products

$$A V_j^\top = V_{j+b}^\top T_{:j+b,\,:j},$$

and for a Ritz pair $(\theta, y)$ of $S = T_{:j,:j}$ the residual is
$\|A V_j^\top y - \theta V_j^\top y\| = \|T_{j:j+b,\,:j}\, y\|$: free. A thick restart keeps the
top Ritz vectors and the ``b`` pending vectors; the relation keeps its form (Krylov–Schur,
Stewart 2001). Breakdowns (an invariant subspace) continue from a new direction: a cyclic
shift of one random vector drawn at the start (``spare``), orthogonalised against the
basis. Drawing random numbers inside the loop instead would put a threefry generator in
every compiled solve several times over: ~0.8 s of XLA compile time each on CPU.

Every routine here is jittable and vmappable; sizes are static.
"""

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from .._tree import ravel
from .._types import Array, Float, Int, PRNGKeyArray, PyTree
from ._operator import flat_operator
from ._results import RESULTS, finish, nan_where


class KrylovState(NamedTuple):
    """The state of a block Krylov–Schur iteration (flat vectors as rows)."""

    V: Array  # (m + b, n): orthonormal rows q_0 .. q_{j+b-1}; the rest zero
    T: Array  # (m + b, m): T[:, i] = coefficients of A q_i in the basis, for i < j
    j: Array  # number of basis vectors multiplied by A
    num_matvecs: Array
    nonfinite: Array  # a product returned inf or nan
    spare: Array  # (n,): random entries; its cyclic shifts replace a broken-down direction


def _orthogonalize(V: Array, w: Array) -> tuple[Array, Array]:
    """Remove from ``w`` its components along the rows of ``V`` (twice is enough)."""
    h = V @ w
    w = w - h @ V
    h2 = V @ w
    return w - h2 @ V, h + h2


def _new_direction(V: Array, spare: Array, shift: Array | int) -> Array:
    """A unit vector orthogonal to the rows of ``V``: ``spare`` shifted cyclically by
    ``shift`` (a permutation of i.i.d. random entries is as generic as a fresh draw)."""
    r = jnp.roll(spare, shift)
    r, _ = _orthogonalize(V, r)
    return r / jnp.linalg.norm(r)


def _breakdown_tol(dtype) -> float:
    return float(jnp.finfo(dtype).eps) ** 0.75


def init_state(V0: Array, m: int, spare: Array) -> KrylovState:
    """Orthonormalise the start block ``V0`` (b, n) into a basis with room for ``m`` products;
    a zero or dependent row is replaced by a shift of ``spare`` (n,), a vector of random
    entries (e.g. ``jax.random.normal``) kept for later breakdowns."""
    b, n = V0.shape
    dtype = V0.dtype
    spare = spare.astype(dtype)
    V = jnp.zeros((m + b, n), dtype)
    for i in range(b):  # b is small and static
        w, _ = _orthogonalize(V, V0[i])
        norm = jnp.linalg.norm(w)
        scale = jnp.linalg.norm(V0[i])
        bad = ~(norm > _breakdown_tol(dtype) * scale) | ~jnp.isfinite(norm)
        q = jnp.where(bad, _new_direction(V, spare, i + 1), w / jnp.where(bad, 1, norm))
        V = V.at[i].set(q)
    T = jnp.zeros((m + b, m), dtype)
    zero = jnp.zeros((), jnp.int32)
    return KrylovState(V, T, zero, zero, jnp.zeros((), bool), spare)


def extend(state: KrylovState, matvec: Callable[[Array], Array], b: int) -> KrylovState:
    """Multiply basis vector ``q_j`` by ``A`` and append the remainder as ``q_{j+b}``."""
    V, T, j = state.V, state.T, state.j
    w = matvec(V[j])
    nonfinite = ~jnp.all(jnp.isfinite(w))
    w = jnp.where(nonfinite, 0, w)
    w, h = _orthogonalize(V, w)
    beta = jnp.linalg.norm(w)
    scale = jnp.sqrt(jnp.sum(h**2) + beta**2)
    breakdown = ~(beta > _breakdown_tol(V.dtype) * scale)
    # shifts 1..b served the start block; each product gets its own after them
    q = jnp.where(breakdown, _new_direction(V, state.spare, state.num_matvecs + b + 1),
                  w / jnp.where(breakdown, 1, beta))
    V = V.at[j + b].set(q)
    T = T.at[:, j].set(h.at[j + b].set(jnp.where(breakdown, 0, beta)))
    return KrylovState(
        V, T, j + 1, state.num_matvecs + 1, state.nonfinite | nonfinite, state.spare
    )


def ritz(state: KrylovState, b: int) -> tuple[Array, Array, Array]:
    """Ritz values (descending), coefficient vectors and residual norms of the active basis.

    Only the first ``j`` entries are meaningful; the rest are padding that sorts last.
    """
    m = state.T.shape[1]
    active = jnp.arange(m) < state.j
    S = state.T[:m, :m]
    S = 0.5 * (S + S.T)
    S = jnp.where(active[:, None] & active[None, :], S, 0)
    fill = -(2 * jnp.linalg.norm(S) + 1)
    S = S + jnp.diag(jnp.where(active, 0, fill))
    theta, Y = jnp.linalg.eigh(S)
    theta, Y = theta[::-1], Y[:, ::-1]
    pending = jax.lax.dynamic_slice_in_dim(state.T, state.j, b, axis=0)
    residuals = jnp.linalg.norm(pending @ Y, axis=0)
    return theta, Y, residuals


def error_bounds(theta: Array, residuals: Array, j: Array, *, gap: bool = False) -> Array:
    r"""Error estimates for the descending Ritz values ``theta``.

    Without ``gap``: the residual norms $\|r_i\|$. For symmetric $A$ some eigenvalue lies
    within $\|r_i\|$ of $\theta_i$ (Bauer–Fike), so this is a bound.

    With ``gap``: the smaller of $\|r_i\|$ and the quadratic cluster estimate
    $\sum_{l \le p} \|r_l\|^2 / \delta_p$ over every top cluster $p \ge i$, with
    $\delta_p = \theta_p - (\theta_{p+1} + \|r_{p+1}\|)$. This is a bound only if the Ritz
    values have resolved every eigenvalue above $\theta_{p+1}$; an eigenvalue the Krylov space
    has not yet seen (one member of a tight cluster, say) makes it optimistic. It is the
    ARPACK-style estimate: far cheaper to satisfy, to be used where its risk is measured.
    """
    if not gap:
        return residuals
    m = theta.shape[0]
    cum = jnp.cumsum(residuals**2)
    gaps = theta[:-1] - theta[1:] - residuals[1:]
    valid = (jnp.arange(m - 1) + 1 < j) & (gaps > 0)
    quad = jnp.where(valid, cum[:-1] / jnp.where(valid, gaps, 1), jnp.inf)
    quad = jnp.append(jax.lax.cummin(quad, reverse=True), jnp.inf)
    return jnp.minimum(residuals, quad)


def restart(state: KrylovState, Y: Array, theta: Array, p: int, b: int) -> KrylovState:
    """Thick restart at ``j == m``: keep the top ``p`` Ritz vectors and the pending block."""
    V, T = state.V, state.T
    m = T.shape[1]
    Yp = Y[:, :p]
    U = Yp.T @ V[:m]
    newV = jnp.zeros_like(V).at[:p].set(U).at[p : p + b].set(V[m : m + b])
    newT = jnp.zeros_like(T)
    newT = newT.at[:p, :p].set(jnp.diag(theta[:p]))
    newT = newT.at[p : p + b, :p].set(T[m : m + b] @ Yp)
    return state._replace(V=newV, T=newT, j=jnp.asarray(p, jnp.int32))


class LanczosResult(eqx.Module):
    """The output of :func:`lanczos`: all Ritz pairs of the Krylov space, descending."""

    ritz_values: Float[Array, " m"]
    ritz_vectors: PyTree  # leading axis m
    residuals: Float[Array, " m"]
    num_matvecs: Int[Array, ""]
    tridiagonal: Float[Array, "m m"]  # the projected matrix, in basis order (q_0 = v0)
    result: RESULTS


def lanczos(
    matvec: Callable[[PyTree], PyTree],
    v0: PyTree,
    num_iters: int,
    *,
    key: PRNGKeyArray | None = None,
    throw: bool = True,
) -> LanczosResult:
    r"""``num_iters`` steps of Lanczos with full reorthogonalisation.

    Builds an orthonormal basis $q_0 = v_0/\|v_0\|, q_1, \dots$ of the Krylov space
    $\mathcal K_m(A, v_0)$ ($m$ = ``num_iters``) and returns every Ritz pair of $A$ on it, with
    the residual norms $\|A u - \theta u\|$ read off the Lanczos relation (no extra
    products). Jittable and vmappable.

    Args:
        matvec: ``v -> A v`` on PyTrees shaped like ``v0`` (``A`` symmetric).
        v0: the start vector; need not be normalised.
        num_iters: number of products with ``A``; static, at most ``dim - 1``.
        key: used only if the space becomes invariant early (then continued randomly).
        throw: raise if a product is inf or nan; with ``False`` the result says so
            (``result == RESULTS.nonfinite``) and the Ritz values are nan.

    Returns:
        A :class:`LanczosResult`. ``tridiagonal`` is the projected matrix in basis order; its
        eigenvectors' first components give the Gauss quadrature weights of
        :func:`spectral_density`. Half-precision ``v0`` runs the recurrence in float32; the
        Ritz vectors come back in ``v0``'s dtype.

    Raises:
        ValueError: ``num_iters`` is not a positive int below the dimension.
        TypeError: a leaf of ``v0`` is not a real floating-point array.

    Example:
        >>> import jax.numpy as jnp
        >>> A = jnp.diag(jnp.array([4.0, 4.0, 2.0, 2.0, -3.0, -3.0]))  # 3 distinct values
        >>> res = lanczos(lambda v: A @ v, jnp.ones(6), 3)  # so 3 steps are exact
        >>> [round(float(x), 4) for x in res.ritz_values]
        [4.0, 2.0, -3.0]
    """
    if not isinstance(num_iters, int) or isinstance(num_iters, bool) or num_iters < 1:
        raise ValueError(f"num_iters must be a positive int, got {num_iters!r}.")
    op = flat_operator(matvec, v0)
    n = op.size
    if num_iters + 1 > n:
        raise ValueError(
            f"num_iters = {num_iters} needs dimension > {num_iters}, got {n}; use "
            f"num_iters <= {n - 1}, or materialise the matrix and call eigh."
        )
    key = jax.random.key(0) if key is None else key
    flat0 = ravel(v0)[0].astype(op.dtype)
    state = init_state(flat0[None], num_iters, jax.random.normal(key, (n,), op.dtype))
    state = jax.lax.fori_loop(0, num_iters, lambda _, s: extend(s, op.matvec, 1), state)
    theta, Y, res = ritz(state, 1)
    vectors = jax.vmap(op.unravel)(Y.T @ state.V[:num_iters])
    S = state.T[:num_iters, :num_iters]
    result = RESULTS.where(state.nonfinite, RESULTS.nonfinite, RESULTS.successful)
    theta = finish("lanczos", result, nan_where(state.nonfinite, theta), throw)
    return LanczosResult(theta, vectors, res, state.num_matvecs, 0.5 * (S + S.T), result)

