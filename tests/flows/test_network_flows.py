"""The limiting flows on a network, against the optimizers themselves.

The toys (test_flows.py) check the flows against closed forms; here the oracle is the
discrete dynamics. On a small tanh MLP that interpolates its data (205 parameters, 8
examples, so Γ has dimension 197 and is curved), normalized GD and GD on √L are started on Γ
(Φ of a random point, displaced by the two-step cycle's amplitude along v1: the theory's
phase II from its first step) and run; λ1 at Φ(x_t) must follow the re-projection flow's
λ1 on the flow's clock τ = η²t (Arora, Li & Panigrahi 2022, arXiv 2205.09745, Thms 4.4 and
4.6). The negative control reads the same prediction with the other clock: for GD on √L
the constant ¼ instead of ⅛, for normalized GD ⅛ instead of ¼.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from eosflow.flows import project_solve, reprojection_flow

_SHAPES = [(2, 12), (12,), (12, 12), (12,), (12, 1), (1,)]
_ZERO, _UNRAVEL = ravel_pytree([jnp.zeros(s) for s in _SHAPES])  # flat weights <-> layers
_X = jax.random.normal(jax.random.PRNGKey(0), (8, 2))
_Y = jnp.sin(2 * _X[:, 0] + _X[:, 1])


def _loss(p):
    """The half mean squared error of a 2-12-12-1 tanh MLP whose weights are the flat ``p``."""
    w1, b1, w2, b2, w3, b3 = _UNRAVEL(p)
    h = jnp.tanh(jnp.tanh(_X @ w1 + b1) @ w2 + b2)
    return 0.5 * jnp.mean(((h @ w3 + b3)[:, 0] - _Y) ** 2)


_HESS = jax.jit(jax.hessian(_loss))


def _top(p):
    """lambda_1 and v_1 of the dense Hessian."""
    w, v = jnp.linalg.eigh(_HESS(p))
    return float(w[-1]), v[:, -1]


def _run(method, eta, steps):
    def body(x, _):
        loss, g = jax.value_and_grad(_loss)(x)
        step = eta / (2 * jnp.sqrt(loss)) if method == "sqrt_loss_gd" else (
            eta / jnp.linalg.norm(g))
        return x - step * g, None

    return jax.jit(lambda x: jax.lax.scan(body, x, None, length=steps)[0])


def _follow(method, eta, steps, checks, seed=2, scale=1.2):
    """lambda_1 at Phi(x_t) every ``steps`` steps, and the re-projection flow (40 steps)."""
    start = scale * jax.random.normal(jax.random.PRNGKey(seed), _ZERO.shape)
    on_gamma = project_solve(_loss, start)
    lam, v1 = _top(on_gamma.value)
    # the two-step cycle's half-width along v1: eta/2 (normalized GD), eta sqrt(lam/2)/2 (sqrt L)
    amp = eta / 2 if method == "normalized_gd" else eta * np.sqrt(lam / 2) / 2
    x = on_gamma.value + amp * v1
    c = 1 / 8 if method == "sqrt_loss_gd" else 1 / 4
    tau_end = eta**2 * steps * checks
    flow = reprojection_flow(_loss, x, method=method, step_size=c * tau_end / 40,
                             num_steps=40, step_rtol=None)
    run = _run(method, eta, steps)
    taus, at_phi = [], []
    for i in range(1, checks + 1):
        x = run(x)
        taus.append(eta**2 * steps * i)
        at_phi.append(_top(project_solve(_loss, x).value)[0])
    return lam, np.array(taus), np.array(at_phi), flow


@pytest.mark.parametrize(
    ("method", "eta", "steps", "wrong"),
    [("sqrt_loss_gd", 0.02, 1250, 2.0), ("normalized_gd", 0.05, 1600, 0.5)],
)
def test_phi_of_the_run_follows_the_limiting_flow_on_an_mlp(method, eta, steps, wrong):
    lam, taus, at_phi, flow = _follow(method, eta, steps, 4)
    tau_end = taus[-1]
    predicted = np.interp(taus, flow.ts, flow.sharpness)
    assert at_phi[-1] < 0.4 * lam  # the flow moved lambda_1 a long way (24.6 to 7-8)
    np.testing.assert_allclose(at_phi, predicted, rtol=0.03)
    # the other method's clock: as far off as the prediction is close
    half = taus <= tau_end / max(wrong, 1)
    other = np.interp(wrong * taus[half], flow.ts, flow.sharpness)
    assert np.max(np.abs(at_phi[half] / other - 1)) > 0.1
