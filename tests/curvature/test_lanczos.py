import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eosflow.curvature import lanczos
from tests.helpers import known_spectrum


def test_extreme_ritz_values_and_residuals(key):
    lam = jnp.linspace(-3.0, 5.0, 60)
    A, _ = known_spectrum(key, lam)
    res = lanczos(lambda v: A @ v, jnp.ones(60), 40)
    assert res.num_matvecs == 40
    np.testing.assert_allclose(res.ritz_values[0], 5.0, rtol=1e-8)
    np.testing.assert_allclose(res.ritz_values[-1], -3.0, rtol=1e-8)
    # residual norms from the Lanczos relation equal ||A u - theta u|| computed directly
    U = res.ritz_vectors
    direct = jnp.linalg.norm(U @ A - res.ritz_values[:, None] * U, axis=1)
    np.testing.assert_allclose(res.residuals, direct, atol=1e-10)
    np.testing.assert_allclose(U @ U.T, jnp.eye(40), atol=1e-10)  # full reorthogonalisation


def test_gauss_quadrature_is_exact_for_low_degree(key):
    A, _ = known_spectrum(key, jnp.linspace(0.1, 4.0, 50))
    v0 = jax.random.normal(key, (50,))
    m = 6
    res = lanczos(lambda v: A @ v, v0, m)
    theta, Y = jnp.linalg.eigh(res.tridiagonal)
    w = Y[0] ** 2
    q = v0 / jnp.linalg.norm(v0)
    for p in range(2 * m):
        exact = q @ jnp.linalg.matrix_power(A, p) @ q
        np.testing.assert_allclose(jnp.sum(w * theta**p), exact, rtol=1e-9)


def test_jit_vmap_and_breakdown(key):
    A = jnp.diag(jnp.array([3.0, 3.0, 1.0, 1.0, 1.0, -2.0, -2.0, 0.5]))
    v0s = jax.random.normal(key, (5, 8))
    res = jax.jit(jax.vmap(lambda v: lanczos(lambda x: A @ x, v, 5)))(v0s)
    assert res.ritz_values.shape == (5, 5)
    assert bool(jnp.all(jnp.isfinite(res.ritz_values)))  # breakdown after 4 steps: no nan
    np.testing.assert_allclose(res.ritz_values[:, 0], 3.0, rtol=1e-10)


def test_bad_num_iters():
    with pytest.raises(ValueError, match="num_iters"):
        lanczos(lambda v: v, jnp.ones(4), 0)
    with pytest.raises(ValueError, match="num_iters"):
        lanczos(lambda v: v, jnp.ones(4), 4)


def test_random_vector_is_uniform_and_keyed():
    """The solvers' start and breakdown directions (a hash, not threefry): entries uniform on
    [-1, 1) with no visible structure, a function of the key, the same for a typed and a raw
    key."""
    from eosflow.curvature._lanczos import random_vector

    n = 200_000
    x = np.asarray(random_vector(jax.random.key(3), n, jnp.float64), np.float64)
    assert x.min() >= -1.0 and x.max() < 1.0
    se = np.sqrt(1 / 3 / n)  # the standard error of the mean of U(-1, 1)
    assert abs(x.mean()) < 5 * se
    assert abs(x.var() - 1 / 3) < 0.01
    counts = np.histogram(x, bins=20, range=(-1, 1))[0]
    chi2 = np.sum((counts - n / 20) ** 2 / (n / 20))
    assert chi2 < 60  # 19 degrees of freedom: p ~ 1e-6
    for lag in (1, 2, 1024):  # neighbours are uncorrelated
        assert abs(np.corrcoef(x[:-lag], x[lag:])[0, 1]) < 5 / np.sqrt(n)
    y = np.asarray(random_vector(jax.random.key(4), n, jnp.float64))
    assert abs(np.corrcoef(x, y)[0, 1]) < 5 / np.sqrt(n)
    np.testing.assert_array_equal(random_vector(jax.random.PRNGKey(3), n, jnp.float64), x)
    np.testing.assert_array_equal(jax.jit(random_vector, static_argnums=(1, 2))(
        jax.random.key(3), n, jnp.float64), x)


def test_start_block_with_dependent_nonfinite_and_zero_rows_is_orthonormal(key):
    """The start block: a repeated row, a nan row and a zero row each become a new random
    direction, and the basis stays orthonormal with each kept row along its remainder
    against the rows before, with Gram–Schmidt's sign."""
    from eosflow.curvature._lanczos import init_state, random_vector

    n, m = 50, 6
    v = jax.random.normal(key, (n,))
    V0 = jnp.stack([v, 2 * v, jnp.full(n, jnp.nan), jnp.zeros(n), v.at[0].add(1.0)])
    state = jax.jit(init_state, static_argnums=1)(V0, m, random_vector(key, n, v.dtype))
    Q = state.V[:5]
    assert bool(jnp.all(jnp.isfinite(state.V)))
    np.testing.assert_allclose(Q @ Q.T, jnp.eye(5), atol=1e-12)
    np.testing.assert_allclose(Q[0] @ v / jnp.linalg.norm(v), 1.0, rtol=1e-12)
    # the last row is v + e_0: its new direction is e_0's part orthogonal to the rows before
    e0 = jnp.zeros(n).at[0].set(1.0)
    r = e0 - Q[:4].T @ (Q[:4] @ e0)
    np.testing.assert_allclose(Q[4] @ r / jnp.linalg.norm(r), 1.0, rtol=1e-10)
    np.testing.assert_array_equal(state.V[5:], 0)


def test_start_block_keeps_a_coordinate_row_after_a_zero_or_repeated_one(key):
    """Rows along coordinate axes (a diagonal toy's eigenvectors) after a zero or a repeated
    row: each kept row stays the caller's, as Gram–Schmidt row by row keeps it."""
    from eosflow.curvature._lanczos import init_state, random_vector

    n = 50
    e = jnp.eye(n)
    spare = random_vector(key, n, jnp.float64)
    for V0, kept in ((jnp.stack([jnp.zeros(n), e[0]]), 1),
                     (jnp.stack([e[0], 2 * e[0], e[1]]), 2)):
        Q = init_state(V0, 6, spare).V[: V0.shape[0]]
        np.testing.assert_allclose(Q @ Q.T, jnp.eye(V0.shape[0]), atol=1e-12)
        x = V0[kept]  # e_0, then e_1: its remainder against the rows before, not a shift
        r = x - Q[:kept].T @ (Q[:kept] @ x)
        np.testing.assert_allclose(Q[kept], r / jnp.linalg.norm(r), atol=1e-12)
