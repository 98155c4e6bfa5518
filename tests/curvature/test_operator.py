import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from eosflow.curvature import hessian_operator
from tests.helpers import dense_hessian, tiny_mlp


def test_hvp_matches_dense_hessian(key):
    loss_on, params, (x, y) = tiny_mlp(key)
    loss = lambda p: loss_on(p, x, y, 1 / x.shape[0])
    H = dense_hessian(loss, params)
    op = hessian_operator(loss, params)
    flat, unravel = ravel_pytree(params)
    for i in range(3):
        v = jax.random.normal(jax.random.fold_in(key, i), flat.shape)
        hv = ravel_pytree(op.mv(unravel(v)))[0]
        np.testing.assert_allclose(hv, H @ v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(op.as_matrix(), H, rtol=1e-12, atol=1e-12)


def test_batched_operator_equals_one_pass(key):
    loss_on, params, (x, y) = tiny_mlp(key, n_data=24)
    n = x.shape[0]
    full = hessian_operator(lambda p: loss_on(p, x, y, 1 / n), params)
    batches = (x.reshape(4, 6, -1), y.reshape(4, 6, -1))
    chunked = hessian_operator(lambda p, b: loss_on(p, b[0], b[1], 1 / n), params, batches=batches)
    np.testing.assert_allclose(chunked.as_matrix(), full.as_matrix(), rtol=1e-12, atol=1e-13)
    l1, g1 = full.loss_and_grad()
    l2, g2 = chunked.loss_and_grad()
    np.testing.assert_allclose(l2, l1, rtol=1e-13)
    np.testing.assert_allclose(ravel_pytree(g2)[0], ravel_pytree(g1)[0], rtol=1e-12, atol=1e-14)


def test_as_lineax_is_the_same_operator(key):
    loss_on, params, (x, y) = tiny_mlp(key)
    op = hessian_operator(lambda p: loss_on(p, x, y, 0.05), params)
    mat = lx.materialise(op.as_lineax()).as_matrix()
    np.testing.assert_allclose(mat, op.as_matrix(), rtol=1e-12, atol=1e-13)
    assert lx.is_symmetric(op.as_lineax())


def test_non_scalar_loss_is_rejected(key):
    with pytest.raises(TypeError, match="must return a scalar"):
        hessian_operator(lambda p: p * 2.0, jnp.ones(3))


def test_bad_batches_are_rejected():
    loss = lambda p, b: jnp.sum(p * b)
    with pytest.raises(ValueError, match="leading axis"):
        hessian_operator(loss, jnp.ones(3), batches=(jnp.ones((2, 3)), jnp.ones((3, 3))))


def test_integer_params_are_rejected():
    with pytest.raises(TypeError, match="floating-point"):
        hessian_operator(lambda p: jnp.sum(p), jnp.ones(3, jnp.int32))


def test_linearize_gives_the_loss_gradient_and_dense_products(key):
    """One pass, many products: the loss and gradient are loss_and_grad's, bit for bit on
    CPUs (the runner trains on them), the products the dense Hessian's, with the data
    unbatched and in one batch; more batches are refused."""
    loss_on, params, (x, y) = tiny_mlp(key, n_data=24)
    n = x.shape[0]
    flat, unravel = ravel_pytree(params)
    H = dense_hessian(lambda p: loss_on(p, x, y, 1 / n), params)
    one = hessian_operator(lambda p, b: loss_on(p, b[0], b[1], 1 / n), params,
                           batches=(x[None], y[None]))
    V = jax.random.normal(key, (3, flat.size))

    def products(op, V):
        loss, grad, lin = op.linearize()
        return loss, grad, jax.vmap(lambda v: ravel_pytree(lin.mv(unravel(v)))[0])(V)

    for op in (hessian_operator(lambda p: loss_on(p, x, y, 1 / n), params), one):
        loss, grad, HV = eqx.filter_jit(products)(op, V)
        want_loss, want_grad = eqx.filter_jit(lambda op: op.loss_and_grad())(op)
        # the same operations; bit for bit where XLA fuses them alike (CPUs)
        rtol = 0 if jax.default_backend() == "cpu" else 1e-12
        np.testing.assert_allclose(loss, want_loss, rtol=rtol, atol=0)
        np.testing.assert_allclose(ravel_pytree(grad)[0], ravel_pytree(want_grad)[0],
                                   rtol=rtol, atol=0)
        np.testing.assert_allclose(HV, V @ H, rtol=1e-12, atol=1e-12)
    several = hessian_operator(lambda p, b: loss_on(p, b[0], b[1], 1 / n), params,
                               batches=(x.reshape(4, 6, -1), y.reshape(4, 6, -1)))
    with pytest.raises(ValueError, match="one batch"):
        several.linearize()
