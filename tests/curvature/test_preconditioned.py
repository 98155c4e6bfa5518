"""Preconditioned sharpness against the dense oracle eigh(P^{-1/2} H P^{-1/2})."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree as ravel

from eosflow.curvature import (
    EigenRESULTS,
    generalized_eigenvectors,
    hessian_operator,
    preconditioned_sharpness,
)


def _mlp_problem(key):
    """A 10 -> 12 -> 3 tanh MLP on 20 points: 156 parameters, indefinite Hessian away from a
    minimum (so negative eigenvalues are present)."""
    kx, ky, k1, k2 = jax.random.split(key, 4)
    x = jax.random.normal(kx, (20, 10))
    y = jax.random.normal(ky, (20, 3))
    params = {"w1": jax.random.normal(k1, (10, 12)) / 2, "w2": jax.random.normal(k2, (12, 3)) / 2}

    def loss(p):
        return 0.5 * jnp.mean(jnp.sum((jnp.tanh(x @ p["w1"]) @ p["w2"] - y) ** 2, -1))

    return loss, params


def _oracle(loss, params, P):
    flat, unravel = ravel(params)
    H = jax.hessian(lambda f: loss(unravel(f)))(flat)
    d = 1 / jnp.sqrt(ravel(P)[0])
    return jnp.linalg.eigh(d[:, None] * H * d[None, :])


@pytest.mark.parametrize("kind", ["random", "identity"])
def test_matches_dense_oracle(key, kind):
    loss, params = _mlp_problem(key)
    P = jax.tree.map(lambda x: jnp.exp(jax.random.normal(jax.random.key(3), x.shape)), params)
    if kind == "identity":  # then it is the Hessian's top_eigenpairs
        P = jax.tree.map(jnp.ones_like, params)
    evals, evecs = _oracle(loss, params, P)
    res = preconditioned_sharpness(loss, params, P, k=3, tol=1e-10)
    assert res.result == EigenRESULTS.successful and bool(res.converged)
    assert ravel(params)[0].size == 156 and int(res.num_matvecs) < 156  # Lanczos, not dense
    np.testing.assert_allclose(res.eigenvalues, evals[::-1][:3], rtol=1e-9)
    V = jax.vmap(lambda t: ravel(t)[0])(res.eigenvectors)
    np.testing.assert_allclose(jnp.abs(jnp.sum(V * evecs[:, ::-1][:, :3].T, 1)), 1.0, atol=1e-7)
    # u = P^{-1/2} v solves H u = lambda P u
    U = generalized_eigenvectors(res, P)
    Hu = jax.vmap(lambda u: ravel(jax.jvp(jax.grad(loss), (params,), (u,))[1])[0])(U)
    Pu = jax.vmap(lambda t: ravel(jax.tree.map(jnp.multiply, P, t))[0])(U)
    np.testing.assert_allclose(Hu, res.eigenvalues[:, None] * Pu, atol=1e-8)


def test_a_hessian_operator_and_its_linearisation_give_the_oracle(key):
    loss, params = _mlp_problem(key)
    P = jax.tree.map(lambda x: 1.0 + x**2, params)
    want = _oracle(loss, params, P)[0][::-1][:2]
    op = hessian_operator(loss, params)
    for form in (op, op.linearize()[2]):
        res = preconditioned_sharpness(form, params, P, k=2, tol=1e-10)
        np.testing.assert_allclose(res.eigenvalues, want, rtol=1e-9)
    far = jax.tree.map(lambda x: x + 1.0, params)
    with pytest.raises(ValueError, match="params: not the point the operator was built at"):
        preconditioned_sharpness(op, far, P)


def test_warm_start_is_cheaper(key):
    loss, params = _mlp_problem(key)
    P = jax.tree.map(lambda x: 1.0 + x**2, params)
    cold = preconditioned_sharpness(loss, params, P, tol=1e-8)
    near = jax.tree.map(lambda x: x + 1e-4, params)
    warm = preconditioned_sharpness(loss, near, P, tol=1e-8, v0=cold.warm_start)
    again = preconditioned_sharpness(loss, near, P, tol=1e-8)
    np.testing.assert_allclose(warm.eigenvalues, again.eigenvalues, rtol=1e-7)
    assert int(warm.num_matvecs) < int(again.num_matvecs)


def test_bad_preconditioner(key):
    loss, params = _mlp_problem(key)
    P = jax.tree.map(jnp.ones_like, params)
    neg = {**P, "w2": P["w2"].at[0, 0].set(-1.0)}
    with pytest.raises(ValueError, match="preconditioner has 1 non-positive"):
        preconditioned_sharpness(loss, params, neg)
    with pytest.raises(ValueError, match="preconditioner must be a PyTree shaped like params"):
        preconditioned_sharpness(loss, params, {"w1": P["w1"]})
    # under jit the values cannot be checked: the products come back nan, the result says so
    res = jax.jit(lambda p: preconditioned_sharpness(loss, params, p, throw=False))(neg)
    assert res.result == EigenRESULTS.nonfinite
