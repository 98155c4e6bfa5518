import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from eosflow.curvature import batch_sharpness, minibatch_sharpness
from tests.helpers import known_spectrum, tiny_mlp

B = 5  # examples per mini-batch
NUM = 6  # mini-batches


def _mlp_batches(key):
    loss_on, params, (x, y) = tiny_mlp(key, n_data=B * NUM)

    def loss_fn(p, batch):  # the mini-batch *mean* loss SGD steps on
        return loss_on(p, batch["x"], batch["y"], 1.0 / batch["x"].shape[0])

    batches = {"x": x.reshape(NUM, B, -1), "y": y.reshape(NUM, B, -1)}
    return loss_fn, params, batches


def _dense_values(loss_fn, params, batches):
    """Per batch (g^T H g, ||g||^2) from jax.grad and the dense jax.hessian."""
    flat, unravel = ravel_pytree(params)
    ghg, gg = [], []
    for i in range(jax.tree.leaves(batches)[0].shape[0]):
        batch = jax.tree.map(lambda a, i=i: a[i], batches)
        f = lambda z, batch=batch: loss_fn(unravel(z), batch)
        g = np.asarray(jax.grad(f)(flat))
        H = np.asarray(jax.hessian(f)(flat))
        ghg.append(g @ H @ g)
        gg.append(g @ g)
    return np.array(ghg), np.array(gg)


def test_matches_dense_per_batch_hessians(key):
    loss_fn, params, batches = _mlp_batches(key)
    ghg, gg = _dense_values(loss_fn, params, batches)
    want = ghg / gg
    res = batch_sharpness(loss_fn, params, batches)
    np.testing.assert_allclose(res.values, want, rtol=1e-10)
    np.testing.assert_allclose(res.grad_sq_norms, gg, rtol=1e-10)
    np.testing.assert_allclose(res.sharpness, np.mean(want), rtol=1e-10)
    np.testing.assert_allclose(res.std, np.std(want, ddof=1), rtol=1e-10)
    np.testing.assert_allclose(res.stderr, np.std(want, ddof=1) / np.sqrt(NUM), rtol=1e-10)
    np.testing.assert_allclose(res.ratio_of_means, ghg.sum() / gg.sum(), rtol=1e-10)
    assert int(res.num_batches) == int(res.num_matvecs) == int(res.num_grads) == NUM
    assert float(res.std) > 0  # the batches differ, so the spread is a real check


def test_expectation_of_ratios_not_ratio_of_expectations():
    # batch 1: g along the curvature-4 axis, |g| = 1; batch 2: g along curvature 1, |g| = 3.
    H = jnp.diag(jnp.array([4.0, 1.0]))
    loss = lambda x, b: 0.5 * x @ H @ x - b @ x
    res = batch_sharpness(loss, jnp.zeros(2), jnp.array([[1.0, 0.0], [0.0, 3.0]]))
    np.testing.assert_allclose(res.sharpness, (4.0 + 1.0) / 2, rtol=1e-12)
    np.testing.assert_allclose(res.ratio_of_means, (4.0 * 1 + 1.0 * 9) / (1 + 9), rtol=1e-12)


def test_shared_hessian_gradient_along_eigenvector(key):
    lam = jnp.array([7.0, 3.0, 1.5, -2.0, 0.5, 0.1])
    H, Q = known_spectrum(key, lam)
    v = Q[:, 1]  # eigenvalue 3.0: not lambda_1, so a lambda_1 estimate would fail
    scales = jnp.array([1.0, -2.0, 0.3, 5.0])
    batches = scales[:, None] * v[None, :]
    loss = lambda x, b: 0.5 * x @ H @ x - b @ x
    res = batch_sharpness(loss, jnp.zeros(6), batches)
    np.testing.assert_allclose(res.values, 3.0, rtol=1e-12)
    np.testing.assert_allclose(res.sharpness, 3.0, rtol=1e-12)
    assert float(res.stderr) < 1e-12


def test_jit_and_parallel_agree(key):
    loss_fn, params, batches = _mlp_batches(key)
    ref = batch_sharpness(loss_fn, params, batches)
    jitted = jax.jit(lambda p, b: batch_sharpness(loss_fn, p, b))(params, batches)
    par = batch_sharpness(loss_fn, params, batches, num_parallel=4)
    np.testing.assert_allclose(jitted.values, ref.values, rtol=1e-12)
    np.testing.assert_allclose(par.values, ref.values, rtol=1e-12)


def test_one_batch_has_no_spread(key):
    loss_fn, params, batches = _mlp_batches(key)
    res = batch_sharpness(loss_fn, params, jax.tree.map(lambda a: a[:1], batches))
    assert bool(jnp.isnan(res.stderr)) and bool(jnp.isnan(res.std))
    assert bool(jnp.isfinite(res.sharpness))


def _never_traced(p, batch):
    raise AssertionError("loss_fn was traced before the arguments were validated")


def test_bad_input_raises_before_tracing(key):
    _, params, batches = _mlp_batches(key)
    bad = {"x": batches["x"], "y": batches["y"][:-1]}
    with pytest.raises(ValueError, match=r"batches must be a PyTree .* common leading axis"):
        batch_sharpness(_never_traced, params, bad)
    empty = jax.tree.map(lambda a: a[:0], batches)
    with pytest.raises(ValueError, match="num_batches = 0"):
        batch_sharpness(_never_traced, params, empty)
    with pytest.raises(ValueError, match="batches must be"):
        batch_sharpness(_never_traced, params, {"x": jnp.float64(1.0)})
    ints = jax.tree.map(lambda a: a.astype(jnp.int32), params)
    with pytest.raises(TypeError, match="every leaf of params must be a real floating-point"):
        batch_sharpness(_never_traced, ints, batches)
    with pytest.raises(ValueError, match="num_parallel must be"):
        batch_sharpness(_never_traced, params, batches, num_parallel=0)
    with pytest.raises(TypeError, match="loss_fn must return a scalar"):
        batch_sharpness(lambda p, b: b["x"], params, batches)
    with pytest.raises(ValueError, match="num_batches = 0"):
        minibatch_sharpness(_never_traced, params, empty)


def test_minibatch_sharpness_matches_dense_eigh(key):
    loss_fn, params, batches = _mlp_batches(key)
    flat, unravel = ravel_pytree(params)
    want = []
    for i in range(NUM):
        batch = jax.tree.map(lambda a, i=i: a[i], batches)
        H = jax.hessian(lambda z, batch=batch: loss_fn(unravel(z), batch))(flat)
        want.append(np.linalg.eigvalsh(np.asarray(H))[-1])
    res = minibatch_sharpness(loss_fn, params, batches, tol=1e-9)
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues, want, rtol=1e-7)
    np.testing.assert_allclose(res.mean, np.mean(want), rtol=1e-7)
    # batch sharpness is a mean of Rayleigh quotients of the same Hessians
    assert float(batch_sharpness(loss_fn, params, batches).sharpness) <= float(res.mean)
    # a warm start from the previous result converges in fewer products
    warm = minibatch_sharpness(loss_fn, params, batches, tol=1e-9, v0=res.warm_start)
    np.testing.assert_allclose(warm.eigenvalues, want, rtol=1e-7)
    assert int(warm.num_matvecs) < int(res.num_matvecs)
