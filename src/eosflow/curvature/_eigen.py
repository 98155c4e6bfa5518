"""The top-k largest *algebraic* eigenpairs of a Hessian, warm-startable and cost-counted."""

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from .._errors import check_int
from .._tree import leading_block, nonfinite, pow2_scaled, ravel
from .._types import Array, Bool, Float, Int, PRNGKeyArray, PyTree
from . import _lanczos as kr
from ._operator import FlatOperator, operator_from
from ._results import RESULTS, finish, nan_where

EigenRESULTS = RESULTS  # the codes are shared by every curvature estimator


class EigenResult(eqx.Module):
    """Result of :func:`top_eigenpairs`.

    Attributes:
        eigenvalues: the k largest algebraic eigenvalues, descending.
        eigenvectors: PyTree shaped like ``params`` with a leading axis of length k.
        residuals: $\\|Hv_i - \\lambda_i v_i\\|$.
        error_bounds: what the stopping test compared with ``tol * |eigenvalue|``: the
            residuals, or the cluster-gap estimates with ``criterion="gap"``.
        num_matvecs: Hessian-vector products spent.
        converged: every ``error_bounds[i] <= tol * s_i`` (see below), and with
            ``block_size > k`` the next pair's test of :func:`converged_mask`.
        result: an :class:`EigenRESULTS` code.
        warm_start: the ``v0`` to pass at the next, nearby point (leading axis
            ``block_size``): the top Ritz vectors, each after one step of shifted power
            iteration computed from the products already made ($(H - \\sigma)u_i$
            normalised, $\\sigma = \\min(0, \\theta_{min})$; the Ritz vector where the step
            is not safe), usually closer to the eigenvectors than ``eigenvectors``
            themselves (not when an eigenvalue the Krylov space has not seen lies further
            below $\\sigma$ than $\\theta_i$ lies above it), and not exactly orthonormal.
    """

    eigenvalues: Float[Array, " k"]
    eigenvectors: PyTree
    residuals: Float[Array, " k"]
    error_bounds: Float[Array, " k"]
    num_matvecs: Int[Array, ""]
    converged: Bool[Array, ""]
    result: EigenRESULTS
    warm_start: PyTree


def _flat_block(v0: PyTree, example: PyTree) -> Array:
    if leading_block("v0", v0, example) is None:
        return ravel(v0)[0][None]
    return jax.vmap(lambda t: ravel(t)[0])(v0)


def top_eigenpairs(
    loss_fn: Any,
    params: PyTree | None = None,
    k: int = 1,
    *,
    v0: PyTree | None = None,
    tol: float = 1e-3,
    batches: PyTree | None = None,
    block_size: int | None = None,
    krylov_dim: int | None = None,
    max_matvecs: int | None = None,
    min_matvecs: int | None = None,
    criterion: str = "residual",
    key: PRNGKeyArray | None = None,
    hint: PyTree | None = None,
    batch: PyTree | None = None,
    throw: bool = True,
) -> EigenResult:
    r"""The ``k`` largest algebraic eigenpairs of the Hessian of ``loss_fn`` at ``params``.

    Restarted block Lanczos (Krylov–Schur with full reorthogonalisation) on Hessian-vector
    products. After every product the Ritz pairs are checked; the solve stops as soon as each
    of the top ``k`` satisfies $\|Hv_i - \theta_i v_i\| \le$ ``tol``$\cdot s_i$ with
    $s_i = \max(|\theta_i|,\ $``tol``$\cdot\|H\|)$, $\|H\|$ estimated by the largest
    $|\theta|$ seen (then an eigenvalue lies within ``tol`` relative of each reported one,
    or, for one within ``tol``$\cdot\|H\|$ of 0, within ``tol``$^2\|H\|$; the test is
    invariant under scaling the loss and is met at $\lambda = 0$), and, with
    ``block_size > k``, the next pair is not mostly an eigenvector above the k-th (see
    ``block_size``); or when ``max_matvecs`` is spent. With ``criterion="gap"`` the test is
    on the quadratic cluster-gap estimate $\sum_{l\le p}\|r_l\|^2/\delta_p$ instead (see
    :func:`eosflow.curvature._lanczos.error_bounds`): much cheaper along a trajectory, but an
    estimate, optimistic for a cluster the Krylov space has not resolved.

    *Largest algebraic*: a negative eigenvalue of larger magnitude than $\lambda_1$ is never
    reported as the sharpness (SciPy's ``eigsh`` default ``which='LM'`` does that).

    Warm start: pass the previous result's ``warm_start`` (or ``eigenvectors``) as ``v0``.
    The solver always appends one fresh random direction (from ``key``) to the caller's
    block, and (unless ``min_matvecs`` says less) multiplies every start vector before it
    may stop, so a start with no component along the top eigenvector (``v0 = ones`` on a
    loss whose sharpest direction is ``(1, -1)``, or the old ``eigenvectors[0]`` after
    lambda_1 and lambda_2 trade places) is not stuck below the top: the fresh direction's
    Krylov space sees it. This is not a proof: a start that is an *exact* eigenvector of a
    lower eigenvalue has zero residual at once and still stops there when the fresh
    direction's Rayleigh quotient is below it, so pass back the whole ``warm_start`` (it
    carries the next eigenvectors too), not ``eigenvectors[0]``. A zero vector in ``v0`` is
    replaced by a random one. The start block has the same shape with and without ``v0``
    (when ``v0`` has at most ``k`` vectors), so a cold and a warm call compile once. A good
    start block converges after ``min_matvecs`` products (``block_size + 1`` by default).

    Compiling once: the solver is compiled per ``loss_fn`` object, shape of ``params`` and
    data, and static option (``k``, ``tol``, sizes, ``criterion``, whether ``hint`` is
    given). In a loop, pass the same function and the data as ``batch=`` (or call inside
    your own ``jax.jit``-ed step); a fresh ``lambda`` closing over the data recompiles at
    every call. ``v0``, ``hint`` and ``key`` values never retrace. Across processes, JAX's
    persistent cache keeps compiled programs on disk: ``eosflow`` commands turn it on
    (``EOSFLOW_CACHE_DIR``, ``off`` to disable); in a script, call
    ``jax.config.update("jax_compilation_cache_dir", path)``.

    Args:
        loss_fn: ``loss_fn(params)`` (or ``loss_fn(params, batch)`` with ``batches``); or a
            matvec ``v -> Hv`` with an example vector as ``params``; or a
            :class:`~eosflow.curvature.HessianOperator`, whose own point is used (``params``
            may then be None; given, it must be that point).
        params: the point: a PyTree whose leaves are all real floating-point arrays (a leaf
            that is not, an ``int32`` step counter say, is refused by name: close over it
            in ``loss_fn`` instead). float16 and bfloat16 params are differentiated in their
            own dtype and the Krylov recurrence and small eigenproblem run in float32.
        k: how many eigenpairs, ``1 <= k <= dim``.
        v0: start vector(s): a PyTree like ``params``, optionally with a leading block axis.
        tol: relative accuracy of each eigenvalue.
        batches: optional batches (leading axis) summed by the Hessian.
        block_size: how many start vectors come from ``v0`` (padded with random ones) and
            how many ``warm_start`` returns; default ``max(k, number of vectors in v0)``. The
            solver adds one fresh random vector, so it multiplies ``block_size + 1``: one
            vector more than asked for also keeps a cold solve from stopping on lambda_2
            when lambda_1 nearly ties with it (measured on the digits MLP at EoS,
            lambda_2/lambda_1 = 0.987: 2 of 100 cold single-vector solves stopped 1.3% low;
            none with the wider block). With ``block_size > k`` the k-th pair also waits
            until the next Ritz pair cannot be mostly an eigenvector above it (its bound at
            most half its distance below $\theta_k + $``tol``$\cdot s_k$; see
            :func:`converged_mask`): loose while it lies well below, tight when the two
            close in. Along a trajectory pass ``k + 1`` vectors (see
            :func:`extrapolated_start`): one tracked vector follows its own eigenvalue
            through a crossing of the top two.
        krylov_dim: products between restarts; default ``max(30, 2(k + block_size) + 10)``.
        max_matvecs: budget; default ``max(300, 10 * krylov_dim)``.
        min_matvecs: products before convergence may be declared; default
            ``block_size + 1`` (every start vector, the fresh one included, is examined).
            ``block_size`` lets a warm start whose carried vectors pass the tests stop
            before the fresh direction's product (the runner's warm solves do). Alone, that
            product shows an eigenvalue above the carried block only when the fresh
            direction's Rayleigh quotient (a random vector's is about
            $\operatorname{tr}(H)/n$; ``hint`` moves it toward the hint's) exceeds the
            lowest Ritz value the tests read ($\theta_k$, or $\theta_{k+1}$ with
            ``block_size > k``): it can in a small problem whose bulk lies near the top
            ($n$ = 60 or 100, eigenvalues 10, 9, 8 and the rest 8.5, started from the
            exact $u_2, u_3$: 10 for some random draws, 9 for most, and 9 always without
            it), not on a network (the digits MLP at the Edge of Stability,
            $n$ = 55 210, the gradient as ``hint``: started from the exact $u_2, u_3$,
            solves stop at $\lambda_2$ with it and without it). When the block fails, its
            own Krylov continuation comes first (the next ``block_size`` products are the
            parts of $Hv_i$ new to the block) and the fresh direction after it, multiplied
            only if the block still fails: tracking on the digits MLP at the Edge of
            Stability, 3.31 to 2.79 products per estimate at every step, every estimate
            as accurate (benchmarks/README.md, issue 17); from there on the Krylov space
            grows from every direction as before. With ``min_matvecs`` above
            ``block_size`` the fresh direction is the next product after the block's.
        criterion: ``"residual"`` (a bound) or ``"gap"`` (an estimate); see above.
        key: PRNG key for the random start and breakdowns; default ``jax.random.key(0)``.
        hint: optional direction (a PyTree like ``params``, no block axis) believed close
            to the top eigenvector: at the Edge of Stability the gradient (free: the step
            computes it) or the iterate oscillation $x_{t+1} - x_{t-1}$. It is *added* to
            the fresh random direction (both normalised), never replaces it: the sum is a
            shifted random vector, as unlikely as an unshifted one to miss any direction,
            and it starts the fresh row along the hint. It adds no start vector and no product.
        batch: one batch for ``loss_fn(params, batch)``: the same as ``batches`` with a
            leading axis of 1. Data passed here (or in ``batches``) is a traced argument,
            so calls with new data of the same shape reuse one compilation; a new closure
            ``lambda p: loss(p, batch)`` at every call compiles at every call.
        throw: raise if a product is non-finite (otherwise ``result`` says so and the
            eigenvalues are nan). A zero Hessian is not an error: its eigenvalues are 0.

    Returns:
        An :class:`EigenResult`.

    Raises:
        ValueError: a bad ``k``, ``tol``, size or budget, ``v0`` not shaped like
            ``params``, or beside a HessianOperator ``batches`` (it holds its own) or
            ``params`` at another point (other values are seen only outside ``jit``) (all
            before tracing).
        TypeError: ``loss_fn`` neither a scalar loss nor a matvec, a size that is not an int,
            or a leaf of ``params`` not real floating point (named by its path).

    References:
        Stewart, *A Krylov–Schur algorithm for large eigenproblems*, SIMAX 23 (2001).
        Parlett, *The Symmetric Eigenvalue Problem*, ch. 11 (residual and gap bounds).

    Example:
        >>> import jax.numpy as jnp
        >>> A = jnp.diag(jnp.array([1.0, 2.0, -50.0, 3.0] + [0.1] * 40))
        >>> res = top_eigenpairs(lambda x: 0.5 * x @ A @ x, jnp.zeros(44), k=2)
        >>> [round(float(x), 4) for x in res.eigenvalues], bool(res.converged)
        ([3.0, 2.0], True)
    """
    batches = _one_batch(batch, batches)
    op = operator_from(loss_fn, params, batches=batches)
    k, block_size, krylov_dim, max_matvecs, min_matvecs = _validate(
        k, tol, op, block_size, krylov_dim, max_matvecs, min_matvecs)
    if criterion not in ("residual", "gap"):
        raise ValueError(f"criterion must be 'residual' or 'gap', got {criterion!r}.")
    V0 = None if v0 is None else _flat_block(v0, op.example)
    b_given = 0 if V0 is None else V0.shape[0]
    b = block_size if block_size is not None else max(k, b_given)
    m = krylov_dim if krylov_dim is not None else max(30, 2 * (k + b + 1) + 10)
    key = jax.random.key(0) if key is None else key
    if m + b + 1 >= op.size:
        return _dense(loss_fn, params, batches, k, b, throw)
    budget = max_matvecs if max_matvecs is not None else max(300, 10 * m)
    floor = min_matvecs if min_matvecs is not None else b + 1
    keep = min(m - 1, max(k + b + 1, m // 2))
    config = _SolveConfig(k, b, m, keep, float(tol), budget, floor, floor <= b,
                          criterion == "gap", throw)
    H = None if hint is None else _flat_hint(hint, op)
    # on CPUs, XLA's fusion emitters (its default code generator for fused element-wise
    # work) spend about twice as long compiling the solver's ~90 kernels and do not make them
    # faster: off for this program alone (the first lambda_1 on the digits MLP 1.3-1.7 s
    # against 2.2-2.6 s, the solves as fast; benchmarks/README.md, issue 17, 2026-12-02).
    # Inside another jit (the runner's chunk) the outer program's options apply (JAX refuses
    # them on a nested one); there a constant made now is a tracer.
    top = not isinstance(jnp.zeros(()), jax.core.Tracer)
    solve = _solve_cpu if top and jax.default_backend() == "cpu" else _solve
    return solve(loss_fn, params, batches, _carried_block(V0, b, op), key, H, config)


def _validate(k, tol, op: FlatOperator, block_size, krylov_dim, max_matvecs, min_matvecs):
    """One error line naming a bad argument; the sizes as ints (``None`` kept)."""

    def _int(name, value, lo):
        return None if value is None else check_int(name, value, lo)

    k = check_int("k", k)
    if k > op.size:
        raise ValueError(f"k = {k} exceeds the dimension {op.size} of params; use k <= {op.size}.")
    if not (isinstance(tol, int | float) and 0 < tol < 1):
        raise ValueError(f"tol must be a float in (0, 1), got {tol!r}.")
    block_size = _int("block_size", block_size, 1)
    krylov_dim = _int("krylov_dim", krylov_dim, 2)
    max_matvecs = _int("max_matvecs", max_matvecs, 1)
    min_matvecs = _int("min_matvecs", min_matvecs, 1)
    if block_size is not None and block_size < k:
        raise ValueError(f"block_size = {block_size} must be >= k = {k}.")
    if krylov_dim is not None and krylov_dim <= k + (block_size or k):
        raise ValueError(
            f"krylov_dim = {krylov_dim} must exceed k + block_size = {k + (block_size or k)}."
        )
    return k, block_size, krylov_dim, max_matvecs, min_matvecs


def _carried_block(V0: Array | None, b: int, op: FlatOperator) -> Array:
    """The ``b`` start vectors taken from the caller, zero rows where there are none.

    A zero row becomes a random direction in :func:`kr.init_state`, so a cold start is the
    all-zero block: the same shape, dtype and trace as a warm one.
    """
    out = jnp.zeros((b, op.size), op.dtype)
    if V0 is None:
        return out
    rows = min(b, V0.shape[0])
    return out.at[:rows].set(V0[:rows].astype(op.dtype))


def _one_batch(batch: PyTree | None, batches: PyTree | None) -> PyTree | None:
    """``batch`` as a ``batches`` of one (a leading axis of length 1)."""
    if batch is None:
        return batches
    if batches is not None:
        raise ValueError("pass batch= (one batch) or batches= (stacked batches), not both.")
    return jax.tree.map(lambda x: jnp.asarray(x)[None], batch)


def _flat_hint(hint: PyTree, op: FlatOperator) -> Array:
    if jax.tree.structure(hint) != jax.tree.structure(op.example) or any(
        jnp.shape(h) != jnp.shape(x)
        for h, x in zip(jax.tree.leaves(hint), jax.tree.leaves(op.example), strict=True)
    ):
        raise ValueError(
            "hint must be a PyTree shaped like params (one vector, no block axis), e.g. the "
            "gradient at params."
        )
    return ravel(hint)[0].astype(op.dtype)


def _start_block(carried: Array, spare: Array, hint: Array | None = None) -> Array:
    """``carried`` and one fresh direction after it, the row that no warm start can make
    blind to the top eigenvector: the random vector ``spare`` (n,), plus the unit ``hint``
    when given (the sum is a shifted random vector, so it is as unlikely as an unshifted one
    to miss any fixed direction, and points along the hint's)."""
    fresh = spare
    if hint is not None:
        fresh = fresh / jnp.linalg.norm(fresh)
        hint = pow2_scaled(hint)[0]  # a gradient of 1e-20 has a norm; its squares do not
        norm = jnp.linalg.norm(hint)
        ok = jnp.isfinite(norm) & (norm > 0)
        fresh = fresh + jnp.where(ok, hint / jnp.where(ok, norm, 1), 0)
    return jnp.concatenate([carried, fresh[None]])


def converged_mask(theta: Array, bounds: Array, j: Array, k: int, tol: float, *,
                   check_next: bool = False) -> Array:
    r"""Which of the top ``k`` Ritz values meet ``bounds <= tol * max(|theta|, tol * ||H||)``.

    $\|H\|$ is estimated by the largest $|\theta|$ among the ``j`` active Ritz values (a
    lower bound, so the test is never looser than meant). The test is homogeneous in $H$
    (scaling the loss by any $c > 0$ changes nothing but the units) and holds at
    $\lambda = 0$, where a purely relative test can never be met.

    With ``check_next`` the ``k``-th pair passes only if, besides, the next Ritz pair's
    bound is at most half its distance below $\mu = \theta_k + $ ``tol``$\cdot s_k$:
    $b_{k+1} \le (\mu - \theta_{k+1})/2$. For a unit vector $y$ with Rayleigh quotient
    $\theta$ and residual $r$, the weight of $y$ on the eigenvectors of eigenvalues
    $\ge \mu$ is at most $\|r\|^2/(\mu - \theta)^2$, here $\le 1/4$: the next vector
    cannot be mostly an eigenvector above the reported one. It is loose while that pair lies
    well below, and tightens as the two close in (a crossing). A heuristic guard, not a
    proof: a vector with less weight than that on a higher eigenvector still passes.
    """
    active = jnp.arange(theta.shape[0]) < j
    norm = jnp.max(jnp.where(active, jnp.abs(theta), 0))
    scale = jnp.maximum(jnp.abs(theta[:k]), tol * norm)
    ok = bounds[:k] <= tol * scale
    if not check_next or k >= theta.shape[0]:
        return ok
    mu = theta[k - 1] + tol * scale[k - 1]
    below = (2 * bounds[k] <= mu - theta[k]) | ~active[k]
    return ok.at[k - 1].set(ok[k - 1] & below)


@eqx.filter_jit
def _dense(fn, params, batches, k: int, b: int, throw: bool) -> EigenResult:
    """Small problems: materialise the matrix with ``dim`` products and use ``eigh``."""
    op = operator_from(fn, params, batches=batches, linearize=True)
    H = jax.vmap(op.matvec)(jnp.eye(op.size, dtype=op.dtype))
    bad = nonfinite(H)
    # divided by a power of two (exact): eigh's (H + H^T) / 2 overflows at 2e38 in float32
    H, scale = pow2_scaled(jnp.where(bad, 0, H))
    evals, evecs = jnp.linalg.eigh(H)
    evals, evecs = evals[::-1] * scale, evecs[:, ::-1]
    result = RESULTS.where(bad, RESULTS.nonfinite, RESULTS.successful)
    out = EigenResult(
        eigenvalues=finish("top_eigenpairs", result, nan_where(bad, evals[:k]), throw),
        eigenvectors=jax.vmap(op.unravel)(evecs[:, :k].T),
        residuals=jnp.zeros((k,), op.dtype),
        error_bounds=jnp.zeros((k,), op.dtype),
        num_matvecs=jnp.asarray(op.size, jnp.int32),
        converged=~bad,
        result=result,
        warm_start=jax.vmap(op.unravel)(evecs[:, : min(b, op.size)].T),
    )
    return out


class _SolveConfig(NamedTuple):
    k: int  # wanted eigenpairs
    b: int  # vectors carried from v0 (the Krylov block is b + 1: one fresh)
    m: int  # products between restarts
    keep: int  # Ritz vectors kept at a restart
    tol: float
    budget: int  # max products
    floor: int  # min products
    defer: bool  # the fresh direction after the carried block's first continuation round
    gap: bool  # stop on the cluster-gap estimate rather than the residual
    throw: bool


def _solve_impl(fn, params, batches, carried: Array, key: PRNGKeyArray, hint: Array | None,
                config: _SolveConfig):
    op = operator_from(fn, params, batches=batches, linearize=True)
    k, b, m, keep, tol, budget, floor, defer, gap, throw = config
    nb = b + 1  # the Krylov block: the carried vectors and one fresh direction
    # one random draw per solve: the fresh direction, and (shifted) every breakdown's
    spare = kr.random_vector(key, carried.shape[1], carried.dtype)
    state = kr.init_state(_start_block(carried, spare, hint), m, spare)

    def check(state):
        theta, Y, res = kr.ritz(state, nb)
        bounds = kr.error_bounds(theta, res, state.j, gap=gap)
        ok = converged_mask(theta, bounds, state.j, k, tol, check_next=b > k)
        return theta, Y, res, bounds, (state.j >= k) & jnp.all(ok)

    def cond(carry):
        state, *_, done = carry
        return ~done & (state.num_matvecs < budget) & ~state.nonfinite

    def body(carry):
        # the Ritz pairs of the last product travel in the carry: a restart (when the basis
        # is full) uses them, and after the loop they are the answer; one compiled check
        state, theta, Y, *_ = carry
        state = jax.lax.cond(
            state.j == m, lambda s: kr.restart(s, Y, theta, keep, nb), lambda s: s, state
        )
        if defer:  # the carried block failed after its own products: its continuation next
            state = kr.continuation_first(state, b)
        state = kr.extend(state, op.matvec, nb)
        theta, Y, res, bounds, ok = check(state)
        return state, theta, Y, res, bounds, ok & (state.num_matvecs >= floor)

    # the loop runs at least once (budget >= 1), so the placeholders are always replaced
    zeros = jnp.zeros((m,), carried.dtype)
    carry = (state, zeros, jnp.zeros((m, m), carried.dtype), zeros, zeros, jnp.zeros((), bool))
    state, theta, Y, res, bounds, done = jax.lax.while_loop(cond, body, carry)
    nw = min(b, m)
    vecs, warm = _vectors(state, theta, Y, k, nw, nb)
    vecs, warm = jax.vmap(op.unravel)(vecs), jax.vmap(op.unravel)(warm)
    bad = state.nonfinite
    result = RESULTS.where(
        bad,
        RESULTS.nonfinite,
        RESULTS.where(done, RESULTS.successful, RESULTS.max_matvecs_reached),
    )
    theta, res, bounds = (x[:k] * state.scale for x in (theta, res, bounds))  # kr.ritz's units
    return EigenResult(
        eigenvalues=finish("top_eigenpairs", result, nan_where(bad, theta), throw),
        eigenvectors=vecs,
        residuals=res,
        error_bounds=bounds,
        num_matvecs=state.num_matvecs,
        converged=done & ~bad,
        result=result,
        warm_start=warm,
    )


def _vectors(state: kr.KrylovState, theta: Array, Y: Array, k: int, nw: int,
             nb: int) -> tuple[Array, Array]:
    r"""The top ``k`` Ritz vectors (flat rows), and the warm start: the top ``nw >= k``, each
    after one step of shifted power iteration where that is safe, in one pass over the
    basis.

    $(H - \sigma)u_i$ costs no product: $H u_i$ is ``C``'s combination of the basis rows
    (the Krylov–Schur relation). It scales each eigenvector's component of $u_i$ by
    $(\lambda - \sigma)/(\theta_i - \sigma)$; with $\sigma = \min(0, \theta_{min})$, the
    smallest Ritz value, the bulk and the negative eigenvalues the Krylov space has seen
    shrink, so the next point's solve starts closer (tracking on the digits MLP at the
    Edge of Stability: 2.79 to 2.19 products per estimate at every step; a rotating
    quadratic with an eigenvalue at -100 and lambda_1 = 10: 3.42 to 2.50; benchmarks/README.md,
    issue 17). Taken where $\theta_i - \sigma$ is more than half of $\theta_1 - \sigma$ (a
    vector at the top of the spectrum it steps in) and the step is finite and nonzero;
    the Ritz vector otherwise (a zero Hessian, a vector down in the bulk).
    """
    R = jnp.pad(Y[:, :nw].T, ((0, 0), (0, nb)))  # (nw, m + nb): over every basis row
    sigma = jnp.minimum(0, theta[jnp.maximum(state.j - 1, 0)])
    step = Y[:, :nw].T @ state.C - sigma * R  # (H - sigma) u_i / scale
    norm = jnp.linalg.norm(step, axis=1)
    take = ((theta[:nw] - sigma > (theta[0] - sigma) / 2) & (norm > 0)
            & jnp.isfinite(norm))
    warm = jnp.where(take[:, None], step / jnp.where(take, norm, 1)[:, None], R)
    flat = jnp.concatenate([R[:k], warm]) @ state.V  # one pass over the basis
    return flat[:k], flat[k:]


_solve = eqx.filter_jit(_solve_impl)
_solve_cpu = eqx.filter_jit(_solve_impl, compiler_options={"xla_cpu_use_fusion_emitters": False})


def sharpness(loss_fn: Callable, params: PyTree, **kwargs) -> Array:
    """$\\lambda_1$ of the Hessian: ``top_eigenpairs(loss_fn, params, 1, **kwargs)``'s value."""
    return top_eigenpairs(loss_fn, params, 1, **kwargs).eigenvalues[0]
