import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eosflow.problems import batch_indices, random_batch_indices

N, B = 23, 5  # B does not divide N: batches straddle epoch boundaries


def _loop(key, steps, n=N, b=B, replace=False):
    return np.stack([np.asarray(batch_indices(key, t, n, b, replace=replace)) for t in steps])


@functools.partial(jax.jit, static_argnums=(2, 3))
def _run_chunk(key, start, length, replace):
    def body(t, _):
        return t + 1, batch_indices(key, t, N, B, replace=replace)

    return jax.lax.scan(body, start, None, length=length)[1]


def _scan_in_chunks(key, chunks, replace=False):
    """Step through the run in jitted lax.scan chunks, the way the runner does."""
    out, t = [], 0
    for c in chunks:
        out.append(np.asarray(_run_chunk(key, jnp.asarray(t, jnp.int32), c, replace)))
        t += c
    return np.concatenate(out)


@pytest.mark.parametrize("replace", [False, True])
def test_independent_of_chunking_and_resume(replace):
    key = jax.random.key(7)
    steps = 30
    whole = _scan_in_chunks(key, [steps], replace=replace)
    np.testing.assert_array_equal(_scan_in_chunks(key, [10, 10, 10], replace=replace), whole)
    np.testing.assert_array_equal(_loop(key, range(steps), replace=replace), whole)  # size 1
    if not replace:  # vmap over steps (with replacement it is a plain fold_in + randint)
        vm = jax.vmap(lambda t: batch_indices(key, t, N, B))(jnp.arange(steps))
        np.testing.assert_array_equal(vm, whole)
    # resuming at step 17 draws what the uninterrupted run drew
    np.testing.assert_array_equal(_loop(key, range(17, steps), replace=replace), whole[17:])


def test_every_example_once_per_epoch():
    epochs = 6
    stream = _loop(3, range(epochs * N // B + 1)).reshape(-1)
    perms = [stream[e * N : (e + 1) * N] for e in range(epochs)]
    for p in perms:
        np.testing.assert_array_equal(np.sort(p), np.arange(N))
    assert len({tuple(p) for p in perms}) == epochs  # a fresh order every epoch
    # B divides N: every batch is distinct examples and epochs align with batches
    batches = _loop(3, range(3 * 4), n=20, b=5)
    assert all(len(set(b)) == 5 for b in batches)
    for e in range(3):
        np.testing.assert_array_equal(np.sort(batches[4 * e : 4 * e + 4].reshape(-1)),
                                      np.arange(20))


def test_deterministic_and_keyed():
    a = batch_indices(5, 11, N, B)
    np.testing.assert_array_equal(a, batch_indices(jax.random.key(5), 11, N, B))
    np.testing.assert_array_equal(a, batch_indices(jax.random.PRNGKey(5), 11, N, B))
    assert not np.array_equal(a, batch_indices(6, 11, N, B))
    r = batch_indices(5, 11, N, B, replace=True)
    np.testing.assert_array_equal(r, batch_indices(5, 11, N, B, replace=True))
    assert not np.array_equal(r, batch_indices(5, 12, N, B, replace=True))
    assert r.dtype == a.dtype == jnp.int32 and r.shape == a.shape == (B,)
    # with replacement: uniform draws, so over many steps every example and repeats appear
    many = _loop(0, range(200), replace=True)
    assert many.min() == 0 and many.max() == N - 1
    assert any(len(set(b)) < B for b in many)


def test_large_steps_do_not_overflow():
    n, b = 50_000, 512
    t = 2**31 - 1  # t * B overflows int32; the epoch arithmetic must not
    idx = np.asarray(batch_indices(0, t, n, b))
    pos = t * b + np.arange(b)  # Python ints: the exact stream positions
    epoch, off = pos // n, pos % n
    for e in np.unique(epoch):
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.key(0), e), n))
        np.testing.assert_array_equal(idx[epoch == e], perm[off[epoch == e]])


def test_random_batch_indices():
    idx = random_batch_indices(1, N, B, 8)
    assert idx.shape == (8, B) and idx.dtype == jnp.int32
    assert all(len(set(row)) == B for row in np.asarray(idx))
    assert len({tuple(row) for row in np.asarray(idx)}) == 8
    np.testing.assert_array_equal(idx, random_batch_indices(jax.random.key(1), N, B, 8))


def test_bad_input():
    with pytest.raises(ValueError, match="batch_size = 30 exceeds num_examples = 23"):
        batch_indices(0, 0, N, 30)
    batch_indices(0, 0, N, 30, replace=True)  # fine with replacement
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        batch_indices(0, 0, N, 0)
    # NumPy int32 sizes are checked as Python ints: their product would wrap past 2**31
    for n, b in [(100_000, 30_000), (np.int32(100_000), np.int32(30_000))]:
        with pytest.raises(ValueError, match="exceeds 2\\*\\*31 - 1"):
            batch_indices(0, 80_000, n, b)
    with pytest.raises(ValueError, match="num_examples must be"):
        batch_indices(0, 0, 0, 1)
    with pytest.raises(TypeError, match="step must be a scalar integer"):
        batch_indices(0, 1.0, N, B)
    with pytest.raises(ValueError, match="step must be >= 0"):
        batch_indices(0, -1, N, B)
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        batch_indices(1.5, 0, N, B)
    with pytest.raises(ValueError, match="exceeds 2\\*\\*31"):
        batch_indices(0, 0, 100_000, 50_000)
    with pytest.raises(ValueError, match="num_batches must be"):
        random_batch_indices(0, N, B, 0)
