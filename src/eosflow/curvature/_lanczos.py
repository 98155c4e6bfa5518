r"""Block Krylov–Schur Lanczos with full reorthogonalisation, on flat vectors.

The basis is kept as rows of ``V`` and the projected operator as the coefficients
``C[i] = V (A q_i)`` that full reorthogonalisation computes anyway (one row per product, so
storing one is a contiguous write). With a start block of ``b`` vectors, multiplying basis
vector ``q_j`` adds the remainder of ``A q_j`` as basis vector ``q_{j+b}`` (band Lanczos), so
after ``j`` products

$$A V_j^\top = V_{j+b}^\top C_{:j,\,:j+b}^\top,$$

and for a Ritz pair $(\theta, y)$ of $S = C_{:j,:j}$ the residual is
$\|A V_j^\top y - \theta V_j^\top y\| = \|C_{:j,\,j:j+b}^\top y\|$: free. A thick restart keeps the
top Ritz vectors and the ``b`` pending vectors; the relation keeps its form (Krylov–Schur,
Stewart 2001). Breakdowns (an invariant subspace) continue from a new direction: a cyclic
shift of one random vector drawn at the start (``spare``, :func:`random_vector`),
orthogonalised against the basis. Drawing random numbers inside the loop instead would put
a generator in every compiled solve several times over (threefry's: ~0.3 s of XLA compile
time each on CPU).

Products are stored divided by ``scale``, the largest power of two not above the largest
entry of any product so far: exact, and it keeps every norm clear of underflow and overflow
at any scale of ``A`` (a float32 Hessian of norm 1e-20 has squared entries below float32's
smallest number, and a residual computed from them is 0). ``C`` and :func:`ritz` are in its
units.

Every routine here is jittable and vmappable; sizes are static.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from .._errors import check_int
from .._tree import nonfinite, pow2_peak, pow2_scaled, ravel
from .._types import Array, Float, Int, PRNGKeyArray, PyTree
from ._operator import flat_operator
from ._results import RESULTS, finish, nan_where


class KrylovState(NamedTuple):
    """The state of a block Krylov–Schur iteration (flat vectors as rows)."""

    V: Array  # (m + b, n): orthonormal rows q_0 .. q_{j+b-1}; the rest zero
    C: Array  # (m, m + b): C[i] = coefficients of A q_i / scale in the basis, for i < j
    j: Array  # number of basis vectors multiplied by A
    num_matvecs: Array
    nonfinite: Array  # a product returned inf or nan
    spare: Array  # (n,): random entries; its cyclic shifts replace a broken-down direction
    scale: Array  # a power of two: C (and so every Ritz value and residual) is in its units


def _append(V: Array, w: Array, row: Array | int, spare: Array,
            shift: Array | int) -> tuple[Array, Array, Array, Array]:
    """Orthogonalise ``w`` against the rows of ``V`` and store its unit remainder as row
    ``row``: the routine that grows a basis by each product (:func:`init_state` builds the
    start block).

    Classical Gram–Schmidt twice ("twice is enough"). The second pass also orthogonalises
    ``spare`` shifted cyclically by ``shift`` (a permutation of i.i.d. random entries is as
    generic as a fresh draw), in the same two products; one pass suffices for it while the
    basis is small next to ``n`` (a random vector has little along it). That unit vector is
    stored instead when ``w`` breaks down (its remainder is below ``eps**0.75`` of its norm,
    ``w`` is zero, or not finite). Returns the new ``V``, the coefficients ``h`` of ``w``
    along the rows of ``V``, the remainder's norm ``beta`` (0 on a breakdown), and whether
    ``w`` had an inf or nan entry.
    """
    bad = nonfinite(w)
    w = jnp.where(bad, 0, w)
    scale = jnp.linalg.norm(w)
    h = V @ w
    W = jnp.stack([w - h @ V, jnp.roll(spare, shift)])
    # two matrix-vector products, not (2, n) @ (n, rows): XLA:CPU runs that one dot 2-4x
    # slower than the pair (the digits MLP's solve spent more on it than on all the rest)
    H = jnp.stack([V @ W[0], V @ W[1]])  # (2, rows of V)
    W = W - H @ V
    h = h + H[0]
    beta = jnp.linalg.norm(W[0])
    breakdown = ~(beta > _breakdown_tol(V.dtype) * scale)
    q = jnp.where(breakdown, W[1] / jnp.linalg.norm(W[1]), W[0] / jnp.where(breakdown, 1, beta))
    return V.at[row].set(q), h, jnp.where(breakdown, 0, beta), bad


def random_vector(key: PRNGKeyArray, n: int, dtype: Any) -> Array:
    """``n`` pseudo-random entries, uniform on [-1, 1): a start or breakdown direction.

    Each entry hashes its index with the key's bits through the 32-bit finaliser of
    MurmurHash3 (Appleby), a bijection with full avalanche. A Krylov start needs entries with
    no relation to the operator, not a stream fit for statistics; this costs XLA:CPU about
    0.05 s to compile where ``jax.random.normal``'s threefry rounds cost about 0.3 s, and
    every compiled solver (and every program that tracks sharpness) carries one.

    Args:
        key: a PRNG key (typed, or raw ``uint32`` key data).
        n: the length (static).
        dtype: a real floating dtype.

    Returns:
        An array of shape ``(n,)`` and dtype ``dtype`` (24 random bits, rounded to ``dtype``:
        1.0 can occur in half precision); the same key gives the same vector.

    Raises:
        TypeError: ``dtype`` is not a real floating dtype.
    """
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"random_vector: dtype must be a real floating dtype, got {dtype}.")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    x = jnp.arange(n, dtype=jnp.uint32)
    for word in jnp.ravel(key).astype(jnp.uint32):  # static: the key's 2 (or 4) words
        x = _fmix32(x * jnp.uint32(0x9E3779B9) + word)
    unit = (x >> 8).astype(jnp.float32) * (2.0**-23)  # 24 bits: exactly [0, 2)
    return (unit - 1).astype(dtype)


def _fmix32(x: Array) -> Array:
    x = (x ^ (x >> 16)) * jnp.uint32(0x85EBCA6B)
    x = (x ^ (x >> 13)) * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _breakdown_tol(dtype) -> float:
    return float(jnp.finfo(dtype).eps) ** 0.75


def init_state(V0: Array, m: int, spare: Array) -> KrylovState:
    """Orthonormalise the start block ``V0`` (b, n) into a basis with room for ``m`` products;
    a zero, dependent or non-finite row is replaced by a shift of ``spare`` (n,), a vector of
    random entries (:func:`random_vector`) kept for later breakdowns.

    Row ``i`` becomes the unit remainder of row ``i`` against rows ``< i``, as Gram–Schmidt
    gives it, by a Householder QR of the block (signs fixed to Gram–Schmidt's): a zero or
    non-finite row, and then the first row whose remainder is below ``eps**0.75`` of its
    norm, one at a time, is replaced by ``spare`` shifted by ``i + 1`` and the block factored
    again. Two QRs of a (n, b) matrix where no row depends on the others: one call each, where
    orthogonalising the rows one by one (a loop of :func:`_append`) costs a solve about
    1.2 ms more on the digits MLP's 55 210 parameters (benchmarks/README.md, issue 17).
    """
    b, n = V0.shape
    dtype = V0.dtype
    spare = spare.astype(dtype)
    V0 = jax.vmap(pow2_scaled)(V0)[0]  # a row of any scale keeps its direction
    shifts = jnp.stack([jnp.roll(spare, i + 1) for i in range(b)])  # static b: a few rows
    # a zero or non-finite row is broken whatever precedes it: replaced before any QR (a
    # zero column would make Householder's next reflector the identity, and the rows after
    # it would be measured against a coordinate axis)
    empty = jax.vmap(nonfinite)(V0) | ~jnp.any(V0 != 0, axis=1)
    X = jnp.where(empty[:, None], shifts, V0)

    def broken(X):  # rows whose remainder against the rows before is below eps**0.75
        R = jnp.linalg.qr(X.T, mode="r")  # (b, b): |R_ii| is row i's remainder's norm
        return ~(jnp.abs(jnp.diag(R)) > _breakdown_tol(dtype) * jnp.linalg.norm(X, axis=1))

    def replace_first(carry):  # the rows after a dependent one were measured against a
        X, bad = carry  # direction of the QR's own choosing: judged again after it
        i = jnp.argmax(bad)
        X = X.at[i].set(shifts[i])
        return X, broken(X) & (jnp.arange(b) > i)  # rows up to i are settled

    # rarely more than the one QR: a dependent row (a repeated vector) is the only case;
    # at most b rounds, each settling the first broken row
    X = jax.lax.while_loop(lambda c: jnp.any(c[1]), replace_first, (X, broken(X)))[0]
    Q, R = jnp.linalg.qr(X.T)
    Q = Q * jnp.where(jnp.diag(R) < 0, -1, 1).astype(dtype)  # R_ii > 0: Gram–Schmidt's
    V = jnp.zeros((m + b, n), dtype).at[:b].set(Q.T)
    C = jnp.zeros((m, m + b), dtype)
    zero = jnp.zeros((), jnp.int32)
    tiny = jnp.asarray(jnp.finfo(dtype).tiny, dtype)  # a power of two: the first product sets it
    return KrylovState(V, C, zero, zero, jnp.zeros((), bool), spare, tiny)


def extend(state: KrylovState, matvec: Callable[[Array], Array], b: int) -> KrylovState:
    """Multiply basis vector ``q_j`` by ``A`` and append the remainder as ``q_{j+b}``.

    The product is divided by ``scale``, first raised to the product's :func:`pow2_peak` if
    that is larger (``C`` rescaled with it: exact, a ratio of powers of two, unless an entry
    falls below the normal range, where it no longer matters).
    """
    V, C, j = state.V, state.C, state.j
    w = matvec(V[j])
    scale = jnp.maximum(state.scale, pow2_peak(w))
    # shifts 1..b served the start block; each product gets its own after them
    V, h, beta, bad = _append(V, w / scale, j + b, state.spare, state.num_matvecs + b + 1)
    C = (C * (state.scale / scale)).at[j].set(h.at[j + b].set(beta))
    return KrylovState(
        V, C, j + 1, state.num_matvecs + 1, state.nonfinite | bad, state.spare, scale
    )


def continuation_first(state: KrylovState, b: int) -> KrylovState:
    """When ``state.j == b`` (``b`` static: a start block of ``b`` rows and one more, the
    ``b`` multiplied), the ``b + 1`` pending rows turned so that the first ``b`` span the
    block's own Krylov continuation and the last is the rest of the extra row: the next
    ``b`` products continue the block, and the extra row waits behind them.

    The pending rows are the extra start row's and the remainders of $A q_0 .. A q_{b-1}$,
    each orthogonalised against the others, so the remainders hold part of the extra row
    and it holds part of them. The parts of $A q_i$ in the pending rows are the rows of
    ``C[:b, b:2b+1]``; an orthogonal ``G`` whose first ``b`` columns span them (a complete
    QR) turns the pending rows (``V``'s rows by ``G^T``, ``C``'s columns by ``G``): the
    Krylov–Schur relation, and with it every Ritz pair and residual, stays exact. Computed
    at every call and selected (no branch).
    """
    rows = slice(b, 2 * b + 1)
    G = jnp.linalg.qr(state.C[:b, rows].T, mode="complete")[0]  # (b + 1, b + 1)
    at = state.j == b
    V = state.V.at[rows].set(jnp.where(at, G.T @ state.V[rows], state.V[rows]))
    C = state.C.at[:, rows].set(jnp.where(at, state.C[:, rows] @ G, state.C[:, rows]))
    return state._replace(V=V, C=C)


def ritz(state: KrylovState, b: int) -> tuple[Array, Array, Array]:
    """Ritz values (descending), coefficient vectors and residual norms of the active basis,
    in units of ``state.scale`` (multiply the values and norms by it).

    Only the first ``j`` entries are meaningful; the rest are padding that sorts last.
    """
    m = state.C.shape[0]
    active = jnp.arange(m) < state.j
    S = jnp.where(active[:, None] & active[None, :], state.C[:, :m], 0)
    fill = -(2 * jnp.linalg.norm(S) + 1)
    S = S + jnp.diag(jnp.where(active, 0, fill))
    theta, Y = jnp.linalg.eigh(S)  # symmetrises S: (S + S^T) / 2
    theta, Y = theta[::-1], Y[:, ::-1]
    pending = jax.lax.dynamic_slice_in_dim(state.C, state.j, b, axis=1)  # (m, b)
    residuals = jnp.linalg.norm(pending.T @ Y, axis=0)
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
    """Thick restart at ``j == m``: keep the top ``p`` Ritz vectors and the pending block
    (``theta`` as :func:`ritz` returns it, in units of ``state.scale``)."""
    V, C = state.V, state.C
    m = C.shape[0]
    Yp = Y[:, :p]
    U = Yp.T @ V[:m]
    newV = jnp.zeros_like(V).at[:p].set(U).at[p : p + b].set(V[m : m + b])
    newC = jnp.zeros_like(C)
    newC = newC.at[:p, :p].set(jnp.diag(theta[:p]))
    newC = newC.at[:p, p : p + b].set(Yp.T @ C[:, m : m + b])
    return state._replace(V=newV, C=newC, j=jnp.asarray(p, jnp.int32))


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
        ValueError: ``num_iters`` is not positive and below the dimension.
        TypeError: ``num_iters`` is not an int, or a leaf of ``v0`` is not a real
            floating-point array.

    Example:
        >>> import jax.numpy as jnp
        >>> A = jnp.diag(jnp.array([4.0, 4.0, 2.0, 2.0, -3.0, -3.0]))  # 3 distinct values
        >>> res = lanczos(lambda v: A @ v, jnp.ones(6), 3)  # so 3 steps are exact
        >>> [round(float(x), 4) for x in res.ritz_values]
        [4.0, 2.0, -3.0]
    """
    num_iters = check_int("num_iters", num_iters)
    op = flat_operator(matvec, v0)
    n = op.size
    if num_iters + 1 > n:
        raise ValueError(
            f"num_iters = {num_iters} needs dimension > {num_iters}, got {n}; use "
            f"num_iters <= {n - 1}, or materialise the matrix and call eigh."
        )
    key = jax.random.key(0) if key is None else key
    flat0 = ravel(v0)[0].astype(op.dtype)
    state = init_state(flat0[None], num_iters, random_vector(key, n, op.dtype))
    state = jax.lax.fori_loop(0, num_iters, lambda _, s: extend(s, op.matvec, 1), state)
    theta, Y, res = ritz(state, 1)
    theta, res = theta * state.scale, res * state.scale
    vectors = jax.vmap(op.unravel)(Y.T @ state.V[:num_iters])
    S = state.C[:, :num_iters] * state.scale
    result = RESULTS.where(state.nonfinite, RESULTS.nonfinite, RESULTS.successful)
    theta = finish("lanczos", result, nan_where(state.nonfinite, theta), throw)
    return LanczosResult(theta, vectors, res, state.num_matvecs, 0.5 * (S + S.T), result)

