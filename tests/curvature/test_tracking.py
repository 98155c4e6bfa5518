"""Warm starts along a trajectory: extrapolated_start's rule against closed forms, and tracking
through a crossing of the top two eigenvalues against dense eigh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eosflow.curvature import (
    extrapolated_start,
    push_warm_start,
    top_eigenpairs,
    tracking_history,
)
from tests.helpers import MatVec, known_spectrum, spectra

BANK = spectra()
N = 64  # above the solver's dense threshold (krylov_dim + block + 1)


def _history(vectors, period, block=1):
    """A history after solves returning ``vectors`` (oldest first, each (block, n))."""
    h = tracking_history(jnp.zeros(vectors[0].shape[-1]), block, period=period)
    for v in vectors:
        h = push_warm_start(h, jnp.asarray(v))
    return h


@pytest.mark.parametrize("period", [1, 2])
def test_a_linear_path_is_extrapolated_exactly_and_the_sign_is_matched(period):
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=8), 0.05 * rng.normal(size=8)
    vecs = []
    for t in range(4):  # the phase's vectors p + t q, as a solver returns them: either sign
        if period == 2:  # solves alternate with the other phase's (unrelated vectors)
            vecs.append(rng.normal(size=(1, 8)))
        vecs.append((-1.0) ** t * (p + t * q)[None])
    if period == 2:  # the other phase solved last; the next solve is this phase's again
        vecs.append(rng.normal(size=(1, 8)))
    got = extrapolated_start(_history(vecs, period), 1, period=period)[0]
    # p + 4 q, with the sign of the phase's newest vector (t = 3: negative)
    np.testing.assert_allclose(got, -(p + 4 * q), rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_the_weight_is_fitted_to_the_history(dtype):
    rng = np.random.default_rng(3)
    u, d = rng.normal(size=8), 0.05 * rng.normal(size=8)

    def start(e, c, a, **kw):  # three solves of one vector, oldest first; a's sign flipped
        h = _history([e[None], c[None], -a[None]], 1)
        return np.asarray(extrapolated_start(jax.tree.map(lambda x: x.astype(dtype), h), 1,
                                             **kw)[0], np.float64)

    # bfloat16 keeps 8 bits (entries rounded by ~4e-3 of 1) and w is fitted on differences
    # of ~0.05: a few percent
    tol = dict(rtol=1e-6) if dtype == jnp.float32 else dict(rtol=2e-2, atol=2e-2)
    # the last step moved half as far as the one before (same direction): w = 1/2
    e, c = u, u + 2 * d
    a = c + d
    np.testing.assert_allclose(start(e, c, a), -(a + 0.5 * (a - c)), **tol)
    # the vectors went back and forth (errors, no drift): w = -1, clipped to 0: a alone
    np.testing.assert_allclose(start(u, u + d, u), -u, **tol)
    # steps longer than the last ones: clipped to 1, the linear extrapolation
    np.testing.assert_allclose(start(u, u + d, u + 4 * d), -(u + 7 * d), **tol)
    # a fixed weight overrides the fit, and the result keeps the history's dtype
    np.testing.assert_allclose(start(u, u + d, u, weight=1.0), -(u - d), **tol)
    h = _history([u[None], (u + d)[None]], 1)
    assert extrapolated_start(h.astype(dtype), 1).dtype == dtype


def test_rows_that_traded_places_or_are_missing_are_not_extrapolated():
    e = np.eye(8)
    # two solves of block 2: the rows swapped between them (cos 0: a crossing)
    h = _history([e[[0, 1]], e[[1, 0]]], period=1, block=2)
    np.testing.assert_array_equal(extrapolated_start(h, 2), e[[1, 0]])
    # one solve so far: its rows, not 2a - 0
    h = _history([e[[2, 3]]], period=2, block=2)
    np.testing.assert_array_equal(extrapolated_start(h, 2, period=2), e[[2, 3]])
    # nothing yet: zeros (the solver draws random rows for them)
    h = tracking_history({"w": jnp.zeros((2, 3))}, 2, period=2)
    out = extrapolated_start(h, 2, period=2)
    assert out["w"].shape == (2, 2, 3) and not np.any(np.asarray(out["w"]))


def test_bad_histories_are_refused_naming_the_argument():
    h = tracking_history(jnp.zeros(4), 1, period=2)
    with pytest.raises(ValueError, match="3 \\* period \\* block = 3 rows"):
        extrapolated_start(h, 1, period=1)
    with pytest.raises(ValueError, match="weight must be a float in \\[0, 1\\]"):
        extrapolated_start(h, 1, period=2, weight=1.5)
    with pytest.raises(TypeError, match="weight must be a float in \\[0, 1\\], got str"):
        extrapolated_start(h, 1, period=2, weight="fit")
    with pytest.raises(TypeError, match="min_cos must be a float in \\[0, 1\\], got bool"):
        extrapolated_start(h, 1, period=2, min_cos=True)
    with pytest.raises(ValueError, match="period must be an int >= 1"):
        extrapolated_start(h, 1, period=0)
    with pytest.raises(ValueError, match="min_cos"):
        extrapolated_start(h, 1, period=2, min_cos=2.0)
    with pytest.raises(ValueError, match="warm_start must have a leading block axis"):
        push_warm_start(h, jnp.zeros(4))
    with pytest.raises(ValueError, match="block must be an int"):
        tracking_history(jnp.zeros(4), 0)
    with pytest.raises(TypeError, match="params has dtype int32"):
        tracking_history(jnp.zeros(4, jnp.int32), 1)
    with pytest.raises(TypeError, match="history must hold real floating-point"):
        extrapolated_start(jnp.zeros((2, 4), jnp.complex64), 1)
    with pytest.raises(ValueError, match="same number of rows in every leaf"):
        push_warm_start({"a": jnp.zeros((4, 2)), "b": jnp.zeros((2, 2))},
                        {"a": jnp.zeros((1, 2)), "b": jnp.zeros((1, 2))})


def _crossing_trajectory(steps=40):
    """Symmetric matrices H_t with the EoS signature: eigenvectors that alternate between two
    phases (a rotation by +-phi in a plane of the top vector and the bulk) while drifting
    slowly, and top two eigenvalues that cross (a diabatic crossing: each branch keeps its
    vector, so a tracker following one vector goes on reporting the lower branch)."""
    rng = np.random.default_rng(1)
    Q0, _ = np.linalg.qr(rng.normal(size=(N, N)))
    bulk = np.linspace(0.0, 5.0, N - 2)
    S = rng.normal(size=(N, N))
    S = 0.004 * (S - S.T)  # a slow drift of every eigenvector
    out = []
    for t in range(steps):
        hi, lo = 10.0 - 0.05 * t, 9.2 + 0.05 * t  # cross at t = 8
        lam = np.concatenate([[hi, lo], bulk])
        phi = 0.08 * (-1) ** t
        G = np.eye(N)
        G[[0, 0, 5, 5], [0, 5, 0, 5]] = [np.cos(phi), -np.sin(phi), np.sin(phi), np.cos(phi)]
        Q = Q0 @ _expm(S * t) @ G
        out.append((Q * lam) @ Q.T)
    return np.stack(out)


def _expm(A):
    w, V = np.linalg.eig(A)
    return np.real((V * np.exp(w)) @ np.linalg.inv(V))


def _track(Hs, k, block, period, extrapolate):
    @jax.jit
    def solve(H, v0, key):
        return top_eigenpairs(lambda v: H @ v, jnp.zeros(N), k, v0=v0, block_size=block,
                              tol=1e-3, key=key)

    h = tracking_history(jnp.zeros(N), block, period=period)
    lam, mv = [], []
    for t, H in enumerate(jnp.asarray(Hs, jnp.float64)):
        v0 = extrapolated_start(h, block, period=period) if extrapolate else h[:block]
        res = solve(H, v0, jax.random.key(t))
        h = push_warm_start(h, res.warm_start)
        lam.append(float(res.eigenvalues[0]))
        mv.append(int(res.num_matvecs))
    return np.array(lam), np.array(mv)


def test_the_tracked_pair_follows_a_crossing_that_one_vector_misses():
    Hs = _crossing_trajectory()
    want = np.linalg.eigvalsh(Hs)[:, -1]
    # k = 1 with a block of 2, as the runner tracks: the second vector follows the branch
    # that becomes the top
    lam2, mv2 = _track(Hs, 1, 2, 2, extrapolate=True)
    # certified at tol 1e-3: every step's lambda_1 right, through the crossing
    np.testing.assert_allclose(lam2, want, rtol=1e-3)
    # the trajectory does hold the trap: one extrapolated vector reports the lower branch
    lam1, _ = _track(Hs, 1, 1, 2, extrapolate=True)
    assert np.max(np.abs(lam1 - want) / want) > 1e-2, lam1 - want
    # and the same-phase extrapolation is what makes the warm start cheap: the newest
    # solve's vectors (the other phase's) cost more products for the same answers
    lam_plain, mv_plain = _track(Hs, 1, 2, 2, extrapolate=False)
    np.testing.assert_allclose(lam_plain, want, rtol=1e-3)
    assert mv2[4:].mean() < mv_plain[4:].mean(), (mv2, mv_plain)


@pytest.mark.parametrize("weight", [0.9, 0.36])
def test_a_carried_vector_that_is_mostly_above_the_top_is_not_passed_over(weight):
    # lambda_1 = 10.05 (e_0), 10 (e_1, carried exactly: residual 0), the rest in [0, 5]; the
    # second carried vector has ``weight`` on e_0 (Rayleigh quotient ~ 9.1 or 3.6, below 10)
    lam = np.concatenate([[10.05, 10.0], np.linspace(0.0, 5.0, N - 2)])
    Q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(N, N)))
    A = jnp.asarray((Q * lam) @ Q.T)
    exact = Q[:, 1]
    poor = np.sqrt(weight) * Q[:, 0] + np.sqrt(1 - weight) * Q[:, 10]

    def solve(v0, key):
        return top_eigenpairs(MatVec(A), jnp.zeros(N), 1, v0=jnp.asarray(v0), tol=1e-3,
                              key=jax.random.key(key))

    for key in range(3):
        # the pair: the next pair's bound is over half its distance below 10, so the solve
        # goes on to 10.05
        res = solve(np.stack([exact, poor]), key)
        assert bool(res.converged)
        np.testing.assert_allclose(res.eigenvalues[0], 10.05, rtol=1e-3)
    # one vector: its residual is 0 and the fresh direction sees nothing higher
    np.testing.assert_allclose(solve(exact[None], 0).eigenvalues[0], 10.0, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(BANK))
@pytest.mark.parametrize(("k", "block"), [(1, 2), (2, 3), (1, 5)])
def test_a_wider_block_still_finds_the_known_spectrum(name, k, block, key):
    lam = jnp.asarray(BANK[name])
    A, _ = known_spectrum(key, lam)
    res = top_eigenpairs(MatVec(A), jnp.zeros(lam.shape[0]), k, block_size=block, tol=1e-6)
    assert bool(res.converged), res.result
    np.testing.assert_allclose(res.eigenvalues, jnp.sort(lam)[::-1][:k], rtol=1e-6)
    assert res.eigenvectors.shape == (k, lam.shape[0])
    assert jax.tree.leaves(res.warm_start)[0].shape[0] == block
