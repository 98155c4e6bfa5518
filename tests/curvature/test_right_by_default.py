"""Issue 12: each kind of way a curvature estimator can be wrong by default, with an oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eosflow.curvature import (
    RESULTS,
    batch_sharpness,
    hutchinson_trace,
    lanczos,
    power_iteration,
    smoothing_width,
    spectral_density,
    top_eigenpairs,
)
from tests.helpers import CompileCounter, MatVec, dense_hessian, known_spectrum

# --- 1. a warm start never hides the top -----------------------------------------------------


def _orthogonal_top_problem():
    """lambda_1 = 20 along (1, -1, 0, ...), exactly orthogonal to ones; the rest in [0, 5]."""
    d = jnp.asarray(np.random.default_rng(8).uniform(0.0, 5.0, 58))
    params = {"a": jnp.array([0.3, -0.2]), "y": jnp.zeros(58)}
    loss = lambda p: 5.0 * (p["a"][0] - p["a"][1]) ** 2 + 0.5 * jnp.sum(d * p["y"] ** 2)
    return loss, params


@pytest.mark.parametrize("fill", [jnp.ones, jnp.zeros])
def test_warm_start_orthogonal_to_top_still_finds_it(fill):
    loss, params = _orthogonal_top_problem()
    want = float(jnp.linalg.eigvalsh(dense_hessian(loss, params))[-1])
    v0 = jax.tree.map(lambda p: fill((1, *p.shape)), params)
    res = top_eigenpairs(loss, params, v0=v0)
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues[0], want, rtol=1e-3)


def test_cold_and_warm_solves_share_one_compilation():
    loss, params = _orthogonal_top_problem()
    with CompileCounter() as first:
        top_eigenpairs(loss, params)  # compile once
    v0 = jax.tree.map(lambda p: jnp.ones((1, *p.shape)), params)
    with CompileCounter() as warm:
        top_eigenpairs(loss, params, v0=v0)
    # the solver's jitted function; eager glue ops may compile once, the solve must not retrace
    assert first.traces("_solve") == 1 and warm.traces("_solve") == 0, warm.traced


# --- 2. stopping tests relative to the spectrum's scale ---------------------------------------


@pytest.mark.parametrize("scale", [1e-8, 1.0, 1e8])
def test_top_eigenpairs_and_power_iteration_at_every_scale(scale, key):
    lam = np.concatenate([[10.0, 6.0], np.linspace(-3.0, 5.0, 58)])
    A, _ = known_spectrum(key, lam * scale)
    res = top_eigenpairs(MatVec(A), jnp.zeros(60), 2, tol=1e-6)
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues, [10.0 * scale, 6.0 * scale], rtol=1e-6)
    pw = power_iteration(MatVec(A), jnp.zeros(60), rtol=1e-8, max_iters=2000)
    assert bool(pw.converged)
    np.testing.assert_allclose(pw.eigenvalue, 10.0 * scale, rtol=1e-4)


@pytest.mark.parametrize("scale", [1e-8, 1.0, 1e8])
def test_zero_top_eigenvalue_converges_at_every_scale(scale, key):
    # negative semidefinite, lambda_1 = 0 (x5): tol * |lambda| can never be met there
    lam = np.concatenate([np.zeros(5), -np.arange(1.0, 46.0)]) * scale
    A, _ = known_spectrum(key, lam)
    res = top_eigenpairs(MatVec(A), jnp.zeros(50), 1)
    assert bool(res.converged), res.result
    # tol = 1e-3 relative to max(|lambda|, tol * ||H||): within tol^2 ||H|| of 0
    assert abs(float(res.eigenvalues[0])) <= 1e-6 * 45 * scale


def test_zero_hessian_gives_zero_everywhere():
    loss = lambda x: 0.0 * jnp.sum(x**2)
    x = jnp.ones(50)
    res = top_eigenpairs(loss, x, 2)
    assert bool(res.converged)
    np.testing.assert_array_equal(res.eigenvalues, [0.0, 0.0])
    pw = power_iteration(loss, x)
    assert float(pw.eigenvalue) == 0.0 and bool(pw.converged)
    tr = hutchinson_trace(loss, x, num_samples=4)
    assert float(tr.trace) == 0.0 and float(tr.stderr) == 0.0
    lz = lanczos(lambda v: 0.0 * v, x, 5)
    np.testing.assert_array_equal(lz.ritz_values, 0.0)
    sd = spectral_density(loss, x, num_iters=5, num_probes=2)
    np.testing.assert_array_equal(sd.nodes, 0.0)
    grid = jnp.linspace(-1.0, 1.0, 401)
    mass = jnp.trapezoid(sd.density(grid), grid)
    np.testing.assert_allclose(mass, 1.0, rtol=1e-6)  # not 4e9


def _scaled_least_squares(p, batch):  # one function object: compiled once for every scale
    X, scale = batch
    return 0.5 * scale * jnp.mean((X @ p - 1.0) ** 2)


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e20, 1e30])
def test_float32_estimates_at_extreme_scales(scale, key):
    """Float32 squares under- or overflow below 1e-19 or above 1e19: a residual computed from
    them is 0 (converged on a wrong answer) or inf. The oracle is the unscaled spectrum."""
    lam = np.concatenate([[5.0, 4.9], np.linspace(-1.0, 3.0, 198)])
    A64, _ = known_spectrum(key, lam)
    op, x = MatVec(jnp.asarray(A64 * scale, jnp.float32)), jnp.zeros(200, jnp.float32)
    res = top_eigenpairs(op, x, 2)
    assert bool(res.converged), res.result
    np.testing.assert_allclose(np.asarray(res.eigenvalues) / scale, [5.0, 4.9], rtol=1e-3)
    assert np.all(np.asarray(res.residuals) <= 1e-3 * np.asarray(res.eigenvalues))
    lz = lanczos(op, jnp.ones(200, jnp.float32), 60)
    np.testing.assert_allclose(float(lz.ritz_values[0]) / scale, 5.0, rtol=1e-3)
    pw = power_iteration(op, x, rtol=1e-6, max_iters=3000)
    assert bool(pw.converged)
    np.testing.assert_allclose(float(pw.eigenvalue) / scale, 5.0, rtol=2e-2)  # 4.9 nearly ties
    sd = spectral_density(op, x, num_iters=20, num_probes=4)
    np.testing.assert_allclose(float(sd.moment(1)) / scale * 200, lam.sum(), rtol=0.2)
    # batch sharpness: the mean Rayleigh quotient of each batch's gradient, against numpy's
    X = jax.random.normal(key, (4, 16, 30), jnp.float32)
    p0 = jnp.linspace(-1.0, 1.0, 30, dtype=jnp.float32)
    bs = batch_sharpness(_scaled_least_squares, p0, (X, jnp.full(4, scale, jnp.float32)))
    Xn = np.asarray(X, np.float64)
    g = np.einsum("bij,bi->bj", Xn, Xn @ np.asarray(p0, np.float64) - 1.0) / 16
    H = np.einsum("bij,bik->bjk", Xn, Xn) / 16
    want = np.mean(np.einsum("bj,bjk,bk->b", g, H, g) / np.einsum("bj,bj->b", g, g))
    np.testing.assert_allclose(float(bs.sharpness) / scale, want, rtol=1e-4)


def test_float32_at_the_top_of_its_range_and_a_tiny_start_vector():
    # lambda_1 = 3e38 (float32's largest is 3.4e38): no product overflows, but its squares
    # would, and a scale of 2 ** 128 would be inf
    d = jnp.concatenate([jnp.array([3e38, 2e38]), jnp.linspace(-1e38, 1e38, 198)])
    op, x = MatVec(jnp.diag(d).astype(jnp.float32)), jnp.zeros(200, jnp.float32)
    res = top_eigenpairs(op, x, 2)
    assert bool(res.converged), res.result
    np.testing.assert_allclose(res.eigenvalues, [3e38, 2e38], rtol=1e-3)
    pw = power_iteration(op, x, rtol=1e-6, max_iters=3000)
    np.testing.assert_allclose(pw.eigenvalue, 3e38, rtol=1e-3)
    # a start vector of norm 1e-25 is still a direction: the exact top eigenvector converges
    # at once (a row read as zero would be replaced by a random one)
    top = jnp.zeros(200, jnp.float32).at[0].set(1e-25)
    res = top_eigenpairs(MatVec(jnp.diag(d / 1e38).astype(jnp.float32)), x, v0=top)
    assert bool(res.converged) and int(res.num_matvecs) == 2, res.num_matvecs
    np.testing.assert_allclose(res.eigenvalues, [3.0], rtol=1e-6)


def test_zero_start_and_the_dense_path_at_the_top_of_float32():
    d = jnp.linspace(-1.0, 3.0, 50)
    # a zero v0 is a random start (as in top_eigenpairs), not an eigenvector of eigenvalue 0
    pw = power_iteration(MatVec(jnp.diag(d)), jnp.zeros(50), v0=jnp.zeros(50), rtol=1e-8,
                         max_iters=3000)
    np.testing.assert_allclose(pw.eigenvalue, 3.0, rtol=1e-4)
    # n = 20 takes the dense path; symmetrising (H + H^T) / 2 overflowed at 2e38
    d = jnp.concatenate([jnp.array([2e38]), jnp.linspace(-1.0, 1.0, 19)]).astype(jnp.float32)
    res = top_eigenpairs(MatVec(jnp.diag(d)), jnp.zeros(20, jnp.float32))
    np.testing.assert_allclose(res.eigenvalues, [2e38], rtol=1e-6)


# --- 3. smoothing width with a floor -----------------------------------------------------------


def test_density_of_scaled_identity_has_mass_one():
    loss = lambda x: 1.5 * jnp.sum(x**2)  # Hessian 3 I: a point mass at 3
    sd = spectral_density(loss, jnp.zeros(64), num_iters=10, num_probes=2)
    np.testing.assert_allclose(sd.nodes, 3.0, rtol=1e-12)
    for grid in (jnp.linspace(2.0, 4.0, 400), jnp.linspace(2.0, 4.0, 40)):
        mass = jnp.trapezoid(sd.density(grid), grid)
        np.testing.assert_allclose(mass, 1.0, rtol=1e-4)


def test_smoothing_width_scales_with_the_spectrum():
    nodes = jnp.array([[1.0, 2.0, 5.0]])
    for c in (1e-8, 1.0, 1e8):
        np.testing.assert_allclose(smoothing_width(c * nodes), 0.04 * c, rtol=1e-12)
    np.testing.assert_allclose(smoothing_width(jnp.full(4, -7.0)), 7e-3, rtol=1e-12)
    grid = jnp.linspace(0.0, 10.0, 11)
    assert float(smoothing_width(nodes, grid)) == 1.0  # the grid spacing wins
    assert float(smoothing_width(jnp.zeros(3))) == 1.0  # no scale at all


# --- 4. one non-finite check for every estimator ----------------------------------------------


def _nan_hvp_problem():
    # a long vector with nan in 3 of its 5003 entries: XLA:CPU's vectorised max drops a nan
    # in vectors this long, so a finiteness check built on it would miss these
    params = {"w": jnp.linspace(-1.0, 1.0, 5000), "b": jnp.zeros(3)}
    # the Hessian of ||b||^2 written as norm(b)**2 is nan at b = 0 (jax-ml/jax#5262)
    loss = lambda p: jnp.sum(p["w"] ** 2) + jnp.linalg.norm(p["b"]) ** 2
    return loss, params


ESTIMATORS = {
    "top_eigenpairs": (lambda f, p, **kw: top_eigenpairs(f, p, 1, **kw), "eigenvalues"),
    "power_iteration": (lambda f, p, **kw: power_iteration(f, p, **kw), "eigenvalue"),
    "hutchinson_trace": (lambda f, p, **kw: hutchinson_trace(f, p, num_samples=4, **kw), "trace"),
    "spectral_density": (
        lambda f, p, **kw: spectral_density(f, p, num_iters=5, num_probes=2, **kw), "nodes"
    ),
    "lanczos": (
        lambda f, p, **kw: lanczos(lambda v: jax.jvp(jax.grad(f), (p,), (v,))[1], p, 5, **kw),
        "ritz_values",
    ),
}


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_nonfinite_products_raise_or_report(name):
    loss, params = _nan_hvp_problem()
    run, field = ESTIMATORS[name]
    with pytest.raises(Exception, match=f"{name}: a Hessian-vector product was inf or nan"):
        jax.block_until_ready(getattr(run(loss, params), field))
    out = run(loss, params, throw=False)
    assert out.result == RESULTS.nonfinite
    assert bool(jnp.all(jnp.isnan(getattr(out, field))))  # never a finite, wrong number


# --- 5. params validated before tracing; half precision computed in float32 --------------------


def test_non_floating_leaf_is_refused_by_name():
    params = {"w": jnp.ones(40), "step": jnp.array(3, jnp.int32)}
    loss = lambda p: jnp.sum(p["w"] ** 2) * (p["step"] > 0)
    for fn in (top_eigenpairs, power_iteration, hutchinson_trace, spectral_density):
        with pytest.raises(TypeError, match=r"params\['step'\] has dtype int32.*close over it"):
            fn(loss, params)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_params_match_dense_oracle(dtype, key):
    A, _ = known_spectrum(key, np.concatenate([[6.0, 5.0], np.linspace(-1.0, 3.0, 58)]))
    A = A.astype(dtype)
    params = {"w": jnp.zeros(60, dtype)}
    loss = lambda p: 0.5 * p["w"] @ A @ p["w"]
    want = np.linalg.eigvalsh(np.asarray(A, np.float64))[::-1][:2]
    res = top_eigenpairs(loss, params, 2, tol=1e-2)
    assert res.eigenvalues.dtype == jnp.float32  # a float16 sharpness overflows above 65504
    assert res.eigenvectors["w"].dtype == dtype
    # the products are rounded to the params' dtype: 8 bits of mantissa for bfloat16
    rtol = 1e-2 if dtype == jnp.float16 else 5e-2
    np.testing.assert_allclose(res.eigenvalues, want, rtol=rtol)
    tr = hutchinson_trace(loss, params, num_samples=8)
    assert np.isfinite(float(tr.trace))


# --- 5. repeated calls hit the compilation cache ----------------------------------------------


def _data_loss(p, batch):
    return 0.5 * jnp.mean((batch["x"] @ p["w"] - batch["y"]) ** 2) + 0.1 * jnp.sum(p["w"] ** 4)


def test_data_as_argument_compiles_once_and_matches_the_closure():
    rng = np.random.default_rng(3)
    params = {"w": jnp.asarray(rng.normal(size=40), jnp.float32)}
    batches = [{"x": jnp.asarray(rng.normal(size=(64, 40)), jnp.float32),
                "y": jnp.asarray(rng.normal(size=64), jnp.float32)} for _ in range(3)]
    v = None
    new_compiles = []
    for b in batches:
        with CompileCounter() as compiles:
            res = top_eigenpairs(_data_loss, params, batch=b, v0=v)
        new_compiles.append(compiles.traces("_solve"))
        v = res.warm_start
        want = float(jnp.linalg.eigvalsh(dense_hessian(lambda p, b=b: _data_loss(p, b),
                                                       params))[-1])
        np.testing.assert_allclose(res.eigenvalues[0], want, rtol=2e-3)
        closure = top_eigenpairs(lambda p, b=b: _data_loss(p, b), params, v0=v)
        np.testing.assert_allclose(res.eigenvalues[0], closure.eigenvalues[0], rtol=2e-3)
    assert new_compiles[1:] == [0, 0], new_compiles  # new data, a warm start: no retrace
    with pytest.raises(ValueError, match="not both"):
        top_eigenpairs(_data_loss, params, batch=batches[0],
                       batches=jax.tree.map(lambda x: x[None], batches[0]))


def test_hint_is_mixed_in_not_trusted():
    """A hint along a lower eigenvector (or zero) still finds the top: it is added to the
    fresh random direction, never replaces it."""
    loss, params = _orthogonal_top_problem()
    want = float(jnp.linalg.eigvalsh(dense_hessian(loss, params))[-1])
    ones = jax.tree.map(lambda p: jnp.ones((1, *p.shape)), params)
    low = {"a": jnp.zeros(2), "y": jnp.zeros(58).at[0].set(1.0)}  # an eigenvector below
    for hint in (low, jax.tree.map(jnp.zeros_like, params)):
        res = top_eigenpairs(loss, params, v0=ones, hint=hint)
        assert bool(res.converged)
        np.testing.assert_allclose(res.eigenvalues[0], want, rtol=1e-3)
    with pytest.raises(ValueError, match="hint must be a PyTree shaped like params"):
        top_eigenpairs(loss, params, hint=ones)
