r"""Plain GD, normalized GD and GD on $\sqrt{L - L^*}$ as optax transformations.

All three are ``optax.GradientTransformationExtraArgs``: ``update(grads, state, params,
**extra)`` ignores extra keyword arguments it does not use, so one training loop can pass
``value=loss`` to every optimizer. Hyperparameters are plain arguments, so each works under
``optax.inject_hyperparams``.
"""

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._tree import compute_dtype, mul_exp2, nonfinite
from .._types import Array, PyTree

ScalarOrSchedule = float | Array | optax.Schedule


def gd(lr: ScalarOrSchedule) -> optax.GradientTransformationExtraArgs:
    r"""Gradient descent, $x_{t+1} = x_t - \eta \nabla L(x_t)$.

    Args:
        lr: $\eta$: a finite positive number, or an optax schedule ``step -> lr``.

    Raises:
        ValueError: ``lr`` is not finite and positive (before tracing).
        TypeError: ``lr`` is neither a number nor a schedule.

    Example:
        >>> import jax.numpy as jnp
        >>> opt = gd(0.1)
        >>> u, _ = opt.update(jnp.array([1.0, -2.0]), opt.init(jnp.zeros(2)), value=3.0)
        >>> [round(x, 6) for x in u.tolist()]
        [-0.1, 0.2]
    """
    _check_lr(lr)
    return optax.with_extra_args_support(optax.scale_by_learning_rate(lr))


class KickState(NamedTuple):
    """State of the optimizers that may land exactly on a minimiser.

    Attributes:
        num_kicks: how many steps replaced an underflowing direction by a kick.
        direction: a random unit direction (a PyTree like the parameters), drawn once from
            the seed; kick ``k`` steps along ``(-1)^k`` times it. Drawing it once keeps
            random-number generation out of the training loop, where even an untaken branch
            holding a PRNG call costs XLA:CPU about 0.6 µs per step.
    """

    num_kicks: Array
    direction: PyTree


def _kick_size(dtype, kick: float | None) -> float:
    # 1e-2 * sqrt(eps): 1.5e-10 in float64 (the paper's "about 1e-10"), 3.5e-6 in float32,
    # where a 1e-10 kick would vanish below the parameters' rounding.
    return kick if kick is not None else 1e-2 * float(jnp.finfo(dtype).eps) ** 0.5


def _scaled_or_kicked(
    grads: PyTree, scale: Array, underflow: Array, state: KickState, kick: float | None
) -> tuple[PyTree, KickState]:
    """``scale * grads``, or a kick of norm ``kick`` along the stored direction where
    ``underflow`` (a select: no branch, no random numbers in the loop)."""
    dtype = jnp.result_type(*jax.tree.leaves(grads))
    sign = 1 - 2 * (state.num_kicks % 2)
    size = _kick_size(dtype, kick) * sign
    safe = jnp.where(underflow, 0, scale)
    updates = jax.tree.map(
        lambda g, d: jnp.where(underflow, size * d, safe * g).astype(g.dtype),
        grads, state.direction,
    )
    return updates, state._replace(num_kicks=state.num_kicks + underflow.astype(jnp.int32))


def _init_kick(seed: int):
    def init(params):
        noise = optax.tree.random_like(jax.random.PRNGKey(seed), params)
        unit = optax.tree.scale(1 / optax.tree.norm(noise), noise)
        return KickState(jnp.zeros((), jnp.int32), unit)

    return init


def normalized_gd(
    lr: float | Array,
    *,
    min_grad_norm: float | None = None,
    kick: float | None = None,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
    r"""Normalized GD, $x_{t+1} = x_t - \eta\, \nabla L(x_t)/\|\nabla L(x_t)\|$.

    The effective step is $\eta_t = \eta/\|\nabla L(x_t)\|$. Where $\|g\|^2$ (summed in at
    least float32) is finite and far from underflow (at least $n \cdot$ tiny/eps for $n$
    entries) the step is $-\eta\, g/\sqrt{\|g\|^2}$; elsewhere the norm is taken after
    scaling by the power of two of the largest entry (exactly), $g/\|g\| = \hat g/\|\hat g\|$
    with $\hat g = 2^{-e} g$, $2^{e-1} \le \|g\|_\infty < 2^e$. So any nonzero finite
    gradient (entries of 1e-30 or 3e38 in float32) gives a step of length $\eta$ (to
    rounding) along $-g$. On CPUs the two are a branch (under ``vmap``, on whether every
    point takes the first, then a select), elsewhere a select. An iterate can land exactly
    on the manifold of minimisers, where $\nabla L = 0$; then (when
    $\|\nabla L\| \le$ ``min_grad_norm``, default the dtype's smallest normal number) the
    step is a kick of norm ``kick`` (default $10^{-2}\sqrt{\epsilon}$: 1.5e-10 in float64)
    along a random direction drawn from ``seed`` at ``init``, instead of a NaN, and
    ``state.num_kicks`` counts it. A gradient with an inf or nan entry is *not* kicked: the
    update is nan, so the training loop sees the failure (the runner stops with a reason)
    rather than a silent random step.

    Args:
        lr: $\eta$, the length of every step: a finite positive number (or a traced array
            under ``optax.inject_hyperparams``).
        min_grad_norm: gradient norms at or below this are treated as zero; finite, >= 0.
        kick: norm of the random step taken instead; finite, > 0.
        seed: seed of the kick direction (an int).

    Raises:
        ValueError: a hyperparameter that is not finite and positive (``lr = inf`` say),
            before tracing.
        TypeError: ``lr`` is a schedule, or a hyperparameter is not a number.

    References:
        Arora, Li & Panigrahi, *Understanding Gradient Descent on Edge of Stability in Deep
        Learning*, ICML 2022 (arXiv 2205.09745), Sec. 4.

    Example:
        >>> import jax.numpy as jnp
        >>> opt = normalized_gd(0.5)
        >>> u, _ = opt.update(jnp.array([3.0, 4.0]), opt.init(jnp.zeros(2)))
        >>> [round(x, 6) for x in u.tolist()]  # -0.5 * (3, 4) / 5
        [-0.3, -0.4]
    """
    _check_lr(lr, schedule=False)
    _check_kick_args(min_grad_norm, "min_grad_norm", kick, seed)

    def update(updates, state, params=None, **extra):
        del params, extra
        floor = _floor(updates, min_grad_norm)
        leaves = jax.tree.leaves(updates)
        dtype = compute_dtype(jnp.result_type(*leaves))  # half precision: squares in float32
        finfo = jnp.finfo(dtype)
        square = sum(jnp.sum(jnp.square(x.astype(dtype))) for x in leaves)
        # ||g|| from ||g||^2 where that is finite and far above underflow: squares below the
        # smallest normal number may be flushed to zero (XLA on CPUs), and n of them change
        # ||g||^2 by less than n * tiny, a relative eps from this bound on
        low = sum(x.size for x in leaves) * float(finfo.tiny / finfo.eps)
        direct = (square >= low) & (square <= finfo.max)  # false for inf and nan

        # every traced value the two take is an operand of _branch (its vmap rule sees
        # them), the kick too (traced under inject_hyperparams)
        def plain(updates, state, lr, floor, square, kick):
            return _scaled_or_kicked(updates, -lr / jnp.sqrt(square),
                                     square <= jnp.square(floor.astype(dtype)), state, kick)

        def scaled(updates, state, lr, floor, square, kick):
            # the norm of g / ||g||_inf, which neither underflows nor overflows
            big = _max_abs(updates)
            # g / ||g||_inf to within a power of two, by its exponent (exact): a division by
            # ||g||_inf is compiled as a product with its reciprocal, subnormal and flushed to
            # zero for entries above 2^126 in float32 (the step became a kick)
            exponent = jnp.frexp(jnp.where(jnp.isfinite(big) & (big > 0), big, 1))[1]
            # in big's dtype, the widest of the leaves': a narrower leaf cannot hold 2^-exponent
            unit = jax.tree.map(lambda x: mul_exp2(x.astype(big.dtype), -exponent).astype(x.dtype),
                                updates)
            norm = optax.tree.norm(unit)  # in [1/2, sqrt(size)] when big is finite, nonzero
            norm = jnp.where(jnp.isfinite(big), norm, jnp.nan)  # an inf entry: a nan step
            # ||g|| = 2^exponent * norm <= floor, without forming the product (it may
            # overflow); false for nan, so a nan gradient is not hidden by a kick
            underflow = (norm <= mul_exp2(floor, -exponent)) | (big == 0)
            # ... and never for an inf or nan entry (the max above may drop a nan: _max_abs)
            underflow = underflow & ~nonfinite(updates)
            return _scaled_or_kicked(unit, -lr / norm, underflow, state, kick)

        return _branch(direct, plain, scaled, updates, state, lr, floor, square, kick)

    return optax.GradientTransformationExtraArgs(_init_kick(seed), update)


def _branch(pred: Array, common: Callable, rare: Callable, *operands):
    """``common(*operands)`` where the scalar ``pred`` holds, else ``rare(*operands)`` (the
    two return the same structure): a ``lax.cond`` on CPUs, where the common case then never
    computes the rare one (a select of the two cost the runner's toy step ~20 ns more); a
    select on GPUs and TPUs, where a branch would read its predicate back every step.

    Under ``vmap`` (a sweep's points) ``lax.cond`` would become a select, computing both for
    every point: here, on CPUs, a branch on whether every point takes ``common`` (then it
    alone runs) comes first, so a sweep's step costs what its common case costs (a third,
    on toy A's 1024-point sweep). Derivatives, forward and reverse, are those of the plain
    ``lax.cond`` (a select under ``vmap``). Every traced value the two functions use must be
    among ``operands``: the batching rule sees only those."""

    def select(p, *ops):
        return jax.tree.map(lambda a, b: jnp.where(p, a, b), common(*ops), rare(*ops))

    def one(p, *ops):
        return jax.lax.platform_dependent(
            p, *ops, cpu=lambda p, *o: jax.lax.cond(p, common, rare, *o), default=select)

    batched = jax.custom_batching.custom_vmap(one)

    @batched.def_vmap
    def _(axis_size, in_batched, p, *ops):
        axes = [jax.tree.map(lambda b: 0 if b else None, b) for b in in_batched]

        def each(fn):  # fn on every point
            return jax.vmap(fn, in_axes=axes, axis_size=axis_size)

        if not in_batched[0]:  # one choice for every point: a branch stays a branch
            out = each(one)(p, *ops)
        else:
            out = jax.lax.platform_dependent(
                p, *ops,
                cpu=lambda p, *o: jax.lax.cond(
                    jnp.all(p), lambda: each(lambda p, *o: common(*o))(p, *o),
                    lambda: each(select)(p, *o)),
                default=each(select))
        return out, jax.tree.map(lambda _: True, out)

    # derivatives are one's (custom_vmap has no reverse mode of its own)
    run = jax.custom_jvp(batched)
    run.defjvp(lambda primals, tangents: jax.jvp(one, primals, tangents))
    return run(pred, *operands)


def _max_abs(tree: PyTree) -> Array:
    """The largest ``|entry|`` over every leaf. A nan entry may be dropped (XLA:CPU's
    vectorised max ignores nan in leaves of 4096 or more entries): test with ``nonfinite``."""
    leaves = jax.tree.leaves(tree)
    dtype = jnp.result_type(*leaves)
    # initial=0: an empty leaf has no entries to compare (|x| >= 0 changes nothing else)
    return jnp.max(jnp.stack([jnp.max(jnp.abs(x), initial=0).astype(dtype) for x in leaves]))


def sqrt_loss_gd(
    lr: float | Array,
    loss_min: float = 0.0,
    *,
    min_gap: float | None = None,
    kick: float | None = None,
    seed: int = 0,
    check: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""GD on $\sqrt{L - L^*}$: $x_{t+1} = x_t - \eta\, \nabla L(x_t) / (2\sqrt{L(x_t) - L^*})$.

    Needs the current loss: ``update(grads, state, params, value=loss)``. The effective step
    on $L$ is $\eta_t = \eta / (2\sqrt{L - L^*})$. A ``value`` below ``loss_min`` is an error
    (raised inside ``jit`` too): $L^*$ must be a lower bound. Where $L - L^* \le$ ``min_gap``
    (default the dtype's smallest normal number) the step is a random kick of norm ``kick``,
    counted in ``state.num_kicks``, as in :func:`normalized_gd`; a nan ``value`` or gradient
    gives a nan update, never a kick.

    Args:
        lr: $\eta$: a finite positive number (or a traced array under
            ``optax.inject_hyperparams``).
        loss_min: $L^*$, the minimum value of the loss (0 for interpolating models); finite.
        min_gap: gaps at or below this are treated as zero; finite, >= 0.
        kick: norm of the random step taken instead; finite, > 0.
        seed: seed of the kick direction (an int).
        check: raise where ``value`` < ``loss_min`` (an ``equinox.error_if``: a host
            callback, so a compiled program holding it is not kept in JAX's persistent
            cache). With ``False`` the update is nan there instead, for a caller that stops
            on it and names the cause itself (the runner does).

    Raises:
        ValueError: ``lr`` not finite and positive, ``loss_min`` not finite, or a bad
            ``min_gap``/``kick`` (before tracing).
        TypeError: ``lr`` is a schedule, or a hyperparameter is not a number.

    References:
        Arora, Li & Panigrahi, ICML 2022 (arXiv 2205.09745), Sec. 4.

    Example:
        >>> import jax.numpy as jnp
        >>> opt = sqrt_loss_gd(0.5, loss_min=1.0)
        >>> u, _ = opt.update(jnp.array([2.0]), opt.init(jnp.zeros(1)), value=5.0)
        >>> u.tolist()  # -0.5 * 2 / (2 * sqrt(4))
        [-0.25]
    """
    _check_lr(lr, schedule=False)
    _check_number("loss_min", loss_min, lo=None)
    _check_kick_args(min_gap, "min_gap", kick, seed)

    def update(updates, state, params=None, *, value=None, **extra):
        del params, extra
        if value is None:
            raise TypeError(
                "sqrt_loss_gd needs the current loss: call "
                "opt.update(grads, state, params, value=loss)."
            )
        value = jnp.asarray(value)
        below = value < loss_min
        if check:
            value = eqx.error_if(value, below, BELOW_LOSS_MIN)
        gap = value - loss_min
        # false for nan (no kick hides it) and below L* (nan, not a kick)
        underflow = (gap <= _floor(updates, min_gap)) & ~below
        scale = -lr / (2 * jnp.sqrt(jnp.where(underflow | below, 1, gap)))
        scale = jnp.where(below, jnp.nan, scale)
        return _scaled_or_kicked(updates, scale, underflow, state, kick)

    return optax.GradientTransformationExtraArgs(_init_kick(seed), update)


# the error (and the runner's stop message) when the loss falls below loss_min
BELOW_LOSS_MIN = ("sqrt_loss_gd: the loss is below loss_min; pass the true minimum value L* "
                  "(a lower bound of the loss) as loss_min.")


def _floor(tree: PyTree, value: float | None) -> Array:
    dtype = jnp.result_type(*jax.tree.leaves(tree))
    return jnp.asarray(jnp.finfo(dtype).tiny if value is None else value, dtype)


def _is_traced(value) -> bool:
    return isinstance(value, jax.core.Tracer)


def _check_number(name: str, value, *, lo: str | None, optional: bool = False) -> None:
    """Refuse, before tracing, a hyperparameter that is not a finite number (with ``lo``:
    ``"positive"`` > 0, ``"nonnegative"`` >= 0). Traced values (``inject_hyperparams``)
    pass: they can only be checked inside the computation."""
    if value is None and optional:
        return
    if _is_traced(value):
        return
    if isinstance(value, bool) or callable(value) or isinstance(value, str):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}.")
    try:
        arr = np.asarray(value)
    except Exception as err:  # an object numpy cannot read
        raise TypeError(f"{name} must be a number, got {type(value).__name__}.") from err
    if arr.shape != () or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be a scalar number, got {value!r}.")
    x = float(arr)
    if not np.isfinite(x):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    if lo == "positive" and not x > 0:
        raise ValueError(f"{name} must be positive, got {value!r}.")
    if lo == "nonnegative" and not x >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}.")


def _check_kick_args(floor, floor_name: str, kick, seed) -> None:
    _check_number(floor_name, floor, lo="nonnegative", optional=True)
    _check_number("kick", kick, lo="positive", optional=True)
    if _is_traced(seed):
        return
    if isinstance(seed, bool) or not np.issubdtype(np.asarray(seed).dtype, np.integer):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}.")


def _check_lr(lr, *, schedule: bool = True) -> None:
    if callable(lr):
        if schedule:
            return
        raise TypeError("lr must be a number here (schedules change the algorithm's meaning).")
    _check_number("lr", lr, lo="positive")
