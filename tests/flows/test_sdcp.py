"""The JAX semidefinite complementarity solver against known solutions and KKT certificates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eosflow.flows import solve_sdcp


def _identity_map(k, beta):
    """B[X] = beta X on symmetric X: B_ijkl = beta (d_ik d_jl + d_il d_jk) / 2."""
    eye = jnp.eye(k)
    return beta * 0.5 * (jnp.einsum("ik,jl->ijkl", eye, eye) + jnp.einsum("il,jk->ijkl", eye, eye))


def _kkt(alpha, B, X):
    k = alpha.shape[0]
    Y = alpha + (B.reshape(k * k, k * k) @ X.reshape(-1)).reshape(k, k)
    scale = float(jnp.linalg.norm(alpha))
    return (float(jnp.linalg.eigvalsh(X)[0]) / scale, float(jnp.linalg.eigvalsh(Y)[0]) / scale,
            abs(float(jnp.vdot(X, Y))) / scale / max(float(jnp.linalg.norm(X)), 1e-300))


def test_scalar_closed_form():
    B = jnp.full((1, 1, 1, 1), 4.0)
    assert float(solve_sdcp(jnp.array([[-2.0]]), B).X[0, 0]) == 0.5
    assert float(solve_sdcp(jnp.array([[3.0]]), B).X[0, 0]) == 0.0


@pytest.mark.parametrize("k", [2, 4])
def test_rotated_identity_map_is_psd_projection(k, key):
    """With B[X] = beta X the solution is the PSD part of -alpha / beta."""
    Q = jnp.linalg.qr(jax.random.normal(key, (k, k)))[0]
    a = jnp.linspace(-3.0, 2.0, k)
    alpha = (Q * a) @ Q.T
    sol = solve_sdcp(alpha, _identity_map(k, 0.7))
    want = (Q * jnp.maximum(-a / 0.7, 0)) @ Q.T
    np.testing.assert_allclose(sol.X, want, atol=1e-12)


@pytest.mark.parametrize("spread", [1.0, 1e3])
def test_random_gram_maps_meet_kkt(spread, key):
    """Gram maps like the central flow's, well and badly scaled (eigen-direction i's third
    derivatives scaled by s_i, s spanning ``spread``, so B spans spread^2): the KKT conditions
    (which certify the optimum of the convex QP) hold to ~1e-8 relative, in a few dozen
    iterations (without the diagonal congruence scaling: up to 13 000 at spread 1e3)."""
    k = 3
    p = k * (k + 1) // 2
    iu, ju = jnp.triu_indices(k)
    s = jnp.geomspace(1.0, spread, k)
    for trial in range(4):
        kg, ka, key = jax.random.split(jax.random.fold_in(key, trial), 3)
        G = jax.random.normal(kg, (p, 40)) * (s[iu] * s[ju])[:, None]
        idx = jnp.zeros((k, k), int).at[iu, ju].set(jnp.arange(p)).at[ju, iu].set(jnp.arange(p))
        B = (G @ G.T)[idx][:, :, idx]
        M = jax.random.normal(ka, (k, k))
        alpha = (M + M.T) * spread
        sol = solve_sdcp(alpha, B, max_iters=20_000)
        x_min, y_min, gap = _kkt(alpha, B, sol.X)
        # 1e-8, not 1e-10: the stopping test (1000 eps) is on the congruence-scaled problem,
        # and the unscaled KKT gap is up to spread^2 / 1e3 times larger (measured 2e-9)
        assert x_min > -1e-10 and y_min > -1e-8 and gap < 1e-8, (x_min, y_min, gap)
        assert float(sol.residual) < 1e-12
        assert int(sol.num_iters) < 300
