"""Which examples mini-batch step ``t`` uses: a pure function of the key and the step.

Nothing here carries state between steps, so a run resumed at step ``t`` (or stepped in
chunks of any size, under ``lax.scan`` or ``vmap``) draws exactly the batches an
uninterrupted run draws.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import check_int
from .._types import Array, ArrayLike, Int, PRNGKeyArray

_INT32_MAX = 2**31 - 1


def _as_key(key: PRNGKeyArray | int, name: str = "key") -> PRNGKeyArray:
    if isinstance(key, bool):
        raise TypeError(f"{name} must be a PRNG key or an int seed, got {key!r}.")
    if isinstance(key, int | np.integer):
        return jax.random.key(int(key))
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if np.shape(key) != ():
            raise ValueError(f"{name} must be a single PRNG key, got shape {np.shape(key)}.")
        return key
    if dtype == jnp.uint32 and np.shape(key) == (2,):  # a raw jax.random.PRNGKey
        return key
    raise TypeError(
        f"{name} must be a PRNG key (jax.random.key(seed)) or an int seed, got "
        f"{type(key).__name__} {getattr(key, 'dtype', '')}."
    )


def _check_sizes(num_examples: int, batch_size: int, replace: bool) -> tuple[int, int]:
    """``num_examples`` and ``batch_size`` as Python ints (NumPy's int32 would wrap in the
    product below), or a one-line error."""
    num_examples = check_int("num_examples", num_examples)
    batch_size = check_int("batch_size", batch_size)
    if not replace and batch_size > num_examples:
        raise ValueError(
            f"batch_size = {batch_size} exceeds num_examples = {num_examples}; sampling "
            "without replacement needs batch_size <= num_examples (or pass replace=True)."
        )
    if num_examples * batch_size > _INT32_MAX:
        raise ValueError(
            f"num_examples * batch_size = {num_examples * batch_size} exceeds 2**31 - 1, "
            "which the int32 position arithmetic needs; use a smaller batch_size."
        )
    return num_examples, batch_size


def _check_step(step: ArrayLike) -> Array:
    dtype = jnp.result_type(step)
    if not jnp.issubdtype(dtype, jnp.integer) or np.ndim(step) != 0:
        raise TypeError(
            f"step must be a scalar integer (Python int or int array), got "
            f"{np.shape(step)} {dtype}."
        )
    if isinstance(step, int | np.integer) and step < 0:
        raise ValueError(f"step must be >= 0, got {step}.")
    return jnp.asarray(step)


def batch_indices(
    key: PRNGKeyArray | int,
    step: int | Int[Array, ""],
    num_examples: int,
    batch_size: int,
    *,
    replace: bool = False,
) -> Int[Array, " batch_size"]:
    r"""The indices of the ``batch_size`` examples that mini-batch step ``step`` uses.

    A pure function of ``(key, step)``: resuming at any step, or stepping in chunks of any
    length, draws the same batches. ``step`` may be traced (inside ``jit``, ``lax.scan`` or
    ``vmap``); the sizes are static.

    *Without replacement* (the default; random reshuffling): every epoch $e$ is a fresh
    permutation $\pi_e$ of the $N$ examples, keyed by ``fold_in(key, e)``; the permutations
    are concatenated into one stream and step $t$ takes the positions
    $[tB, (t+1)B)$ of that stream, so its epoch is $e = \lfloor tB/N \rfloor$. Every example
    is used exactly once per epoch. *Remainder rule*: when $B$ does not divide $N$, the batch
    that crosses an epoch boundary takes the last examples of $\pi_e$ and the first of
    $\pi_{e+1}$ (batches keep size $B$; nothing is dropped; such a batch can, rarely, hold
    one example twice).

    *With replacement* (``replace=True``): $B$ independent uniform draws keyed by
    ``fold_in(key, step)``.

    Use a key reserved for sampling (e.g. ``jax.random.fold_in(run_key, 1)``), not the key
    that initialises the parameters.

    Args:
        key: a PRNG key, or an int seed (``jax.random.key(seed)``).
        step: the step number $t \ge 0$, a Python int or a traced integer scalar.
        num_examples: $N$, the size of the training set.
        batch_size: $B$ (at most $N$ without replacement).
        replace: sample with replacement.

    Returns:
        ``int32`` indices in ``[0, num_examples)``, shape ``(batch_size,)``.

    Example:
        Two epochs of 6 examples in batches of 4: each example once per epoch, the second
        epoch in a new order; step 1 straddles the boundary.

        >>> import numpy as np
        >>> idx = np.concatenate([batch_indices(0, t, 6, 4) for t in range(3)])
        >>> sorted(idx[:6].tolist()), sorted(idx[6:].tolist())
        ([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5])
    """
    num_examples, batch_size = _check_sizes(num_examples, batch_size, replace)
    key = _as_key(key)
    t = _check_step(step)
    return _batch_indices(key, t, num_examples, batch_size, bool(replace))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _batch_indices(key, t, n: int, b: int, replace: bool):
    if replace:
        return jax.random.randint(jax.random.fold_in(key, t), (b,), 0, n, dtype=jnp.int32)
    # t*B = q*N*B + r*B with t = q*N + r: r*B < N*B < 2**31, no overflow for any step
    t = t.astype(jnp.int32)
    q, r = t // n, t % n
    epoch = q * b + (r * b) // n
    start = (r * b) % n
    pos = start + jnp.arange(b, dtype=jnp.int32)  # < 2N: in this epoch or the next

    def perm(e):
        return jax.random.permutation(jax.random.fold_in(key, e), n).astype(jnp.int32)

    first = perm(epoch)
    second = jax.lax.cond(start + b > n, lambda: perm(epoch + 1), lambda: first)
    return jnp.where(pos < n, first[pos % n], second[pos % n])


def random_batch_indices(
    key: PRNGKeyArray | int,
    num_examples: int,
    batch_size: int,
    num_batches: int,
) -> Int[Array, "num_batches batch_size"]:
    r"""``num_batches`` independent mini-batches, each of ``batch_size`` distinct examples.

    Batch $i$ is the first $B$ entries of a permutation keyed by ``fold_in(key, i)``: the
    i.i.d. batches that :func:`eosflow.curvature.batch_sharpness` averages over (the draw of
    Andreyev & Beneventano's code, ``randperm(N)[:B]`` per batch). Independent of the
    training order of :func:`batch_indices`; pass a different key (e.g.
    ``fold_in(key, step)`` at each measurement).

    Args:
        key: a PRNG key, or an int seed.
        num_examples: $N$.
        batch_size: $B \le N$.
        num_batches: how many batches, ``>= 1``.

    Returns:
        ``int32`` indices, shape ``(num_batches, batch_size)``.
    """
    num_examples, batch_size = _check_sizes(num_examples, batch_size, False)
    return _random_batch_indices(_as_key(key), num_examples, batch_size,
                                 check_int("num_batches", num_batches))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _random_batch_indices(key, n: int, b: int, num: int):
    def one(i):
        return jax.random.permutation(jax.random.fold_in(key, i), n)[:b].astype(jnp.int32)

    return jax.vmap(one)(jnp.arange(num))
