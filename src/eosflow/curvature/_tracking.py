r"""Warm starts for eigen-solves along a trajectory: the next start block extrapolated from the
blocks of earlier solves.

At the Edge of Stability the iterates oscillate with period two along the top eigenvector, so
the Hessian, and its top eigenvectors with it, alternate between two nearby states. The
previous solve's vectors are then the wrong phase's: on the digits MLP at EoS (GD, lr 0.1)
their residual at the next step was 1e-3 to 1e-1 of $\lambda_1$. The vectors of two solves
back are the same phase's (residual 5e-4 to 4e-3), and the linear extrapolation
$2u_{t-2} - u_{t-4}$ is better still (5e-6 to 1.4e-3), which lets a warm-started solve stop at
its floor of products at most steps. Those were exact eigenvectors; a tracker extrapolates
Ritz vectors that stopped as soon as they passed the solver's test, and the extrapolation
amplifies their errors, so how far to extrapolate is fitted to the history itself.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._errors import check_int
from .._tree import check_floating, compute_dtype, leading_block
from .._types import Array, PyTree

HISTORY_SOLVES = 3  # solves of each phase a history holds: extrapolated_start fits on three


def _rows(history: PyTree) -> int:
    """The history's number of rows (its leaves' common leading axis), or a named error."""
    leaves = jax.tree.leaves(history)
    if not leaves or any(jnp.ndim(x) < 1 for x in leaves):
        raise ValueError("history must be a PyTree like params with a leading axis of rows "
                         "(from tracking_history).")
    bad = {str(jnp.result_type(x)) for x in leaves
           if not jnp.issubdtype(jnp.result_type(x), jnp.floating)}
    if bad:
        raise TypeError(f"history must hold real floating-point vectors, got dtype "
                        f"{', '.join(sorted(bad))}; start from tracking_history(params, ...).")
    rows = {jnp.shape(x)[0] for x in leaves}
    if len(rows) != 1:
        raise ValueError(f"history must have the same number of rows in every leaf, got "
                         f"{sorted(rows)}; start from tracking_history.")
    return rows.pop()


def tracking_history(params: PyTree, block: int, *, period: int = 1) -> PyTree:
    """An empty history of warm starts for :func:`extrapolated_start`.

    Args:
        params: the point (a PyTree of arrays); only shapes and dtypes are read.
        block: vectors per solve (``top_eigenpairs``' ``block_size``).
        period: solves per oscillation phase (see :func:`extrapolated_start`).

    Returns:
        Zeros shaped like ``params`` with a leading axis of ``3 * period * block`` rows
        (three solves of each phase: :func:`extrapolated_start` fits its weight on them). A
        zero row means "no solve yet": the solver replaces a zero start vector with a
        random one, so the first solve is a cold start with the same compiled program.

    Raises:
        ValueError: ``block`` or ``period`` below 1.
        TypeError: ``block`` or ``period`` not an int, or a leaf of ``params`` not real
            floating point (named by its path).
    """
    block = check_int("block", block)
    period = check_int("period", period)
    check_floating("params", params)
    rows = HISTORY_SOLVES * period * block
    return jax.tree.map(lambda x: jnp.zeros((rows, *jnp.shape(x)), jnp.result_type(x)), params)


def push_warm_start(history: PyTree, warm_start: PyTree) -> PyTree:
    """``history`` with a solve's ``warm_start`` as its newest block, the oldest dropped.

    Args:
        history: from :func:`tracking_history` (or this function).
        warm_start: an :class:`EigenResult`'s ``warm_start``: a PyTree like ``params`` with
            a leading axis of ``block`` rows (the solve's ``block_size``).

    Returns:
        The history, same shapes and dtypes. Jittable and vmappable.

    Raises:
        ValueError: ``history`` has no leading axis of rows, ``warm_start`` is not shaped
            like one of its rows with a leading block axis, or its block does not divide
            the history's rows (a block of the wrong width that still divides them is
            not detected: pass the solves' own ``warm_start``).
        TypeError: a leaf of ``history`` is not real floating point.
    """
    rows = _rows(history)
    block = leading_block("warm_start", warm_start, jax.tree.map(lambda h: h[0], history))
    if block is None or rows % block:
        raise ValueError(f"warm_start must have a leading block axis whose length divides the "
                         f"history's {rows} rows (an EigenResult's warm_start, block_size "
                         f"as in tracking_history).")
    return jax.tree.map(
        lambda h, w: jnp.concatenate([w.astype(h.dtype), h[: h.shape[0] - w.shape[0]]]),
        history, warm_start,
    )


def extrapolated_start(history: PyTree, block: int, *, period: int = 1,
                       weight: float | None = None, min_cos: float = 0.9) -> PyTree:
    r"""The start block ``v0`` for the next warm-started :func:`top_eigenpairs` along a
    trajectory, from the warm starts of earlier solves.

    Row ``i`` of the result is $a + w(a - c)$, with $a$, $c$ and $e$ the rows ``i`` of the
    solves ``period``, ``2 * period`` and ``3 * period`` back, each sign matched to the
    newer one's (an eigenvector's sign is arbitrary): $w = 1$ extrapolates the vector
    linearly along the trajectory, $w = 0$ repeats the same phase's last vector. By default
    $w$ is fitted per row to the history: the weight that would have predicted $a$ from
    $c$ and $e$ best, $w = \langle a - c, c - e\rangle / \|c - e\|^2$ clipped to [0, 1]
    (1 when there is no $e$ yet, or $c = e$; where $c$ and $e$ traded places the fit is
    near 0, the cautious side). The vectors are the warm starts of solves that stopped as
    soon as they passed their test (their Ritz vectors after one free power step), and
    $2a - c$ multiplies their errors by up to 3 and
    feeds them back (each solve starts from the last ones' errors): for a steady drift
    the fit gives 1, for errors alone (successive differences anti-correlated) it gives 0.
    Warm-started solves of the top pair on the digits MLP's EoS window (200 GD steps at
    lr 0.1, ``benchmarks/suite.py``'s window, ``top_eigenpairs``' default ``min_matvecs``)
    cost, in products per estimate:

    ==============  =======  =========  =====
    solve every     $w = 1$  $w = 1/2$  fit
    ==============  =======  =========  =====
    step            4.32     3.92       3.79
    3 steps         5.34     4.96       4.82
    4 steps         4.82     4.60       4.50
    ==============  =======  =========  =====

    each estimate within 1e-5 of a converged reference in every column; with
    ``min_matvecs=2`` (the fresh direction multiplied only when the pair fails, as the
    runner does) the fit's column is 3.31 every step and 4.20 every 4 steps.

    ``period=2`` when consecutive solves alternate between the two phases of the Edge of
    Stability's period-two oscillation (Cohen et al., arXiv:2103.00065: the
    iterates oscillate along the top eigenvector; the sharpness measured at every step, or
    at every odd number of steps), ``period=1`` when every solve sees the same phase (an
    even cadence). Where $|\cos(a, c)| <$ ``min_cos`` (the rows traded places: the top two
    eigenvalues crossed) the row is $a$ alone; where $a$ is zero (fewer solves so far) it
    is the newest solve's row. The start is only a start: the solve's residual test is what
    bounds each estimate's error, and a poor start costs products. Track one vector more
    than you report (``block_size = k + 1``): a single tracked vector follows its own
    eigenvalue through a crossing of the top two, and the fresh random direction the solver
    adds does not reveal the new top within a few products (on the digits MLP at EoS, 7 of
    200 estimates 0.3-2.5% low); the extra vector, held to a next-pair test (see
    :func:`top_eigenpairs`' ``block_size``), follows the other branch. An eigenvalue from
    outside the tracked block that rises through it is found only through that fresh
    direction's Krylov space, once the block's tests fail, and a better start, stopping
    sooner, gives it fewer products: on synthetic trajectories with a third eigenvalue
    rising through the top two (the default ``min_matvecs``), the extrapolated start missed
    it at 46 steps, the newest solve's vectors at 19 and one vector from the previous solve
    (the runner before this) at 48. Skipping the fresh product when the pair passes
    (``min_matvecs=2``) misses no more: with a third eigenvalue rising from 5 to 12 over
    80 steps past the pair (10, 9) of a 120-dimensional matrix whose eigenbasis rotates,
    both missed it at the same 22 steps (3 with a faster rotation), at 2.61 products per
    solve against 3.40. Carry ``k + 2`` vectors where that matters.

    Args:
        history: a PyTree like ``params`` whose leaves have a leading axis of
            ``3 * period * block`` rows, the newest solve's ``block`` first
            (:func:`tracking_history`, then :func:`push_warm_start` after each solve).
        block: vectors per solve (``top_eigenpairs``' ``block_size``).
        period: solves per oscillation phase: 1 or 2 at the Edge of Stability (see above);
            any positive int (a longer cycle) is accepted.
        weight: a fixed $w$ in [0, 1] instead of the fitted one (see above).
        min_cos: the alignment, in [0, 1], below which a row is not extrapolated.

    Returns:
        A PyTree like ``params`` with a leading axis of ``block``: ``v0`` for the next solve.

    Raises:
        ValueError: ``history`` does not have ``3 * period * block`` rows, or a bad
            ``block``, ``period``, ``weight`` or ``min_cos``.
        TypeError: ``block`` or ``period`` not an int, ``weight`` or ``min_cos`` not a
            number, or a leaf of ``history`` not real floating point.

    Example:
        >>> import jax.numpy as jnp
        >>> h = tracking_history(jnp.zeros(3), 1, period=1)
        >>> h = push_warm_start(h, jnp.array([[1.0, 0.0, 0.0]]))
        >>> h = push_warm_start(h, jnp.array([[-0.9, -0.1, 0.0]]))  # sign flipped
        >>> [round(float(x), 2) for x in extrapolated_start(h, 1)[0]]  # no third solve: w = 1
        [-0.8, -0.2, 0.0]
    """
    block = check_int("block", block)
    period = check_int("period", period)
    need, rows = HISTORY_SOLVES * period * block, _rows(history)
    if rows != need:
        raise ValueError(
            f"history must hold {HISTORY_SOLVES} * period * block = {need} rows (leading axis) "
            f"in every leaf, got {rows}; start from tracking_history(params, block, "
            f"period=...)."
        )
    for name, value in (("weight", weight), ("min_cos", min_cos)):
        if value is None and name == "weight":  # None: fitted
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
            raise TypeError(f"{name} must be a float in [0, 1], got {type(value).__name__} "
                            f"{value!r}.")  # a Python or NumPy number, static
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be a float in [0, 1], got {value!r}.")

    def part(lo):
        return jax.tree.map(lambda h: h[lo * block:(lo + 1) * block], history)

    newest, a, c, e = part(0), part(period - 1), part(2 * period - 1), part(3 * period - 1)
    # per-row inner products, half precision summed in float32
    wide = [jax.tree.map(lambda x: x.astype(compute_dtype(x.dtype)), t) for t in (a, c, e)]
    dot = jax.vmap(optax.tree.vdot)

    def matched(x, y):  # y's rows with the signs that match them to x's
        sign = jnp.where(dot(x, y) < 0, -1.0, 1.0)
        return jax.tree.map(lambda t: t * sign.reshape((-1,) + (1,) * (t.ndim - 1)), y)

    wa, wc, we = wide
    wc = matched(wa, wc)
    we = matched(wc, we)
    aa, cc, ee, ac = dot(wa, wa), dot(wc, wc), dot(we, we), dot(wa, wc)
    have_a = aa > 0
    extrapolate = have_a & (cc > 0) & (ac >= min_cos * jnp.sqrt(aa * cc))
    if weight is None:
        d1 = jax.tree.map(jnp.subtract, wa, wc)
        d2 = jax.tree.map(jnp.subtract, wc, we)
        d22 = dot(d2, d2)
        fitted = jnp.clip(dot(d1, d2) / jnp.where(d22 > 0, d22, 1.0), 0.0, 1.0)
        w = jnp.where((ee > 0) & (d22 > 0), fitted, 1.0)
    else:
        w = jnp.full(aa.shape, weight, aa.dtype)

    def row(n: Array, x: Array, y: Array) -> Array:
        shape = (block,) + (1,) * (x.ndim - 1)
        out = jnp.where(extrapolate.reshape(shape), x + w.reshape(shape) * (x - y), x)
        return jnp.where(have_a.reshape(shape), out.astype(n.dtype), n)

    return jax.tree.map(row, newest, wa, wc)
