"""Thresholds against the linear recursions they bound; preconditioners against optax's updates."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from eosflow.optim import adam, eos_threshold, preconditioner_from_state


def _grows(opt, lam: float, steps: int = 3000) -> bool:
    """Run ``opt`` on L = lam w^2 / 2 from w = 1; does |w| blow up?"""
    w = jnp.ones(())
    state = opt.init(w)

    def step(carry, _):
        w, state = carry
        u, state = opt.update(lam * w, state, w)
        return (w + u, state), None

    (w, _), _ = jax.lax.scan(step, (w, state), None, length=steps)
    return bool(jnp.abs(w) > 1.0)


@pytest.mark.parametrize(
    "name, hyper, make",
    [
        ("gd", {}, lambda lr: optax.sgd(lr)),
        ("momentum", {"beta": 0.9}, lambda lr: optax.sgd(lr, momentum=0.9)),
        ("momentum", {"beta": 0.5}, lambda lr: optax.sgd(lr, momentum=0.5)),
        ("nesterov", {"beta": 0.9}, lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True)),
        # Adam with P frozen at I: an EMA of the gradients, scaled by -lr (bias correction of
        # the first moment only changes the transient)
        ("adam", {"beta1": 0.9}, lambda lr: optax.chain(optax.ema(0.9, debias=False),
                                                        optax.scale(-lr))),
        ("rmsprop", {}, lambda lr: optax.sgd(lr)),  # P frozen: plain GD in P^{1/2} w
    ],
)
def test_threshold_is_the_linear_stability_edge(name, hyper, make):
    lr = 0.1
    edge = eos_threshold(name, lr, **hyper)
    assert _grows(make(lr), 1.02 * edge)
    assert not _grows(make(lr), 0.98 * edge)


def test_threshold_values_and_errors():
    assert eos_threshold("adam", 0.01) == pytest.approx(3800.0)  # 38/eta for beta1 = 0.9
    assert eos_threshold("momentum", 0.01, beta=0.9) == pytest.approx(380.0)
    assert eos_threshold("adam", 0.01, beta1=0.9, beta2=0.99, eps=1e-8) == pytest.approx(3800.0)
    with pytest.raises(ValueError, match="name must be one of"):
        eos_threshold("normalized_gd", 0.1)
    with pytest.raises(ValueError, match="lr must be a positive"):
        eos_threshold("gd", 0.0)
    with pytest.raises(ValueError, match="beta1 must be a number in"):
        eos_threshold("adam", 0.1, beta1=1.0)
    with pytest.raises(ValueError, match=r"takes \['beta'\]"):
        eos_threshold("momentum", 0.1, beta1=0.9)


def _params():
    k1, k2 = jax.random.split(jax.random.key(0))
    return {"a": jax.random.normal(k1, (3, 2)), "b": jax.random.normal(k2, (4,))}


def _grads(t):
    return jax.tree.map(lambda x: jnp.sin(3.0 * x + t) * (1 + t), _params())


@pytest.mark.parametrize(
    "opt, name, kwargs, momentum",
    [
        (optax.adam(0.1, b1=0.9, b2=0.99, eps=1e-3), "adam",
         dict(beta2=0.99, eps=1e-3), 0.9),
        (optax.adam(0.1, b1=0.9, b2=0.99, eps=1e-3, eps_root=1e-4), "adam",
         dict(beta2=0.99, eps=1e-3, eps_root=1e-4), 0.9),
        (adam(0.1, beta1=0.0, beta2=0.99, eps=1e-3), "adam", dict(beta2=0.99, eps=1e-3), 0.0),
        (optax.inject_hyperparams(optax.adam)(learning_rate=0.1, b1=0.0, b2=0.99, eps=1e-3),
         "adam", dict(beta2=0.99, eps=1e-3), 0.0),
        (optax.rmsprop(0.1, decay=0.9, eps=1e-3), "rmsprop", dict(eps=1e-3), None),
        (optax.rmsprop(0.1, decay=0.9, eps=1e-3, eps_in_sqrt=False), "rmsprop",
         dict(eps=1e-3, eps_in_sqrt=False), None),
        (optax.rmsprop(0.1, decay=0.9, eps=1e-3, bias_correction=True), "rmsprop",
         dict(eps=1e-3, decay=0.9, bias_correction=True), None),
    ],
)
def test_preconditioner_reproduces_optax_update(opt, name, kwargs, momentum):
    """optax's step is -lr * m_hat / P with P read from the state *after* the step: with no
    momentum (m_hat = g) the update must equal -lr * g / P exactly."""
    state = opt.init(_params())
    for t in range(4):
        g = _grads(t)
        u, state = opt.update(g, state, _params())
        P = preconditioner_from_state(name, state, **kwargs)
        if momentum == 0.0 or momentum is None:
            want = jax.tree.map(lambda gi, p: -0.1 * gi / p, g, P)
            for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(want), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-12)
        else:  # momentum: the ratio u * P / -lr is the bias-corrected first moment
            inner = next(s for s in state if isinstance(s, optax.ScaleByAdamState))
            mu_hat = jax.tree.map(lambda m: m / (1 - momentum ** inner.count), inner.mu)
            want = jax.tree.map(lambda m, p: -0.1 * m / p, mu_hat, P)
            for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(want), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-12)


def test_preconditioner_bad_input():
    params = {"a": jnp.ones(3)}
    opt = optax.adam(0.1, eps=0.0)
    state = opt.init(params)
    with pytest.raises(ValueError, match="state is at step 0"):
        preconditioner_from_state("adam", state, eps=0.0)
    _, state = opt.update({"a": jnp.array([1.0, 0.0, 2.0])}, state)
    with pytest.raises(ValueError, match=r"eps = 0\.0: the preconditioner P has 1 zero"):
        preconditioner_from_state("adam", state, eps=0.0)
    P = preconditioner_from_state("adam", state, eps=1e-8)  # the same state, eps > 0: fine
    assert float(P["a"][1]) == pytest.approx(1e-8)
    with pytest.raises(ValueError, match="name must be one of"):
        preconditioner_from_state("gd", state)
    with pytest.raises(ValueError, match=r"no optax\.ScaleByRmsState"):
        preconditioner_from_state("rmsprop", state)
    # under jit nothing is checked: the zero entry comes back as it is
    P = jax.jit(lambda s: preconditioner_from_state("adam", s, eps=0.0))(state)
    assert float(P["a"][1]) == 0.0
