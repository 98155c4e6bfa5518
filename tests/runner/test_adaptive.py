"""Adaptive optimizers at their own edge: the runner records lambda_1(P^-1 H) (P from the
optimizer's state) beside the raw lambda_1, and the stableness uses the record's edge."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eosflow import Config, load_run, run_experiment
from eosflow.analysis import headline, lambda_thresholds, points, stableness
from eosflow.curvature import sum_over_batches
from eosflow.optim import eos_threshold, preconditioner_from_state
from eosflow.problems import build_problem
from eosflow.runner import Program


def _tiny(**kw):
    base = dict(num_examples=40, widths=(6,), lr=0.01, steps=11, eig_every=5, chunk_steps=11,
                dtype="float64", eig_tol=1e-10, eig_max_matvecs=400)
    return Config(**{**base, **kw})


def _oracle(config):
    """lambda_1(P^-1/2 H P^-1/2) by dense eigh at step 10's params, P from the optax state
    after step 10's update (the P that update applied)."""
    prob = build_problem(config)
    prog = Program(config, prob, None, None, None)
    hyper, data = prog.hyper(), prog.data()
    # eleven one-step chunks: one compiled program, not a 10-step and a 1-step one (chunking
    # does not change the iterates, test_minibatch.py; the run steps in one 11-step chunk)
    one = prog.chunk_fn(1)
    s10 = prog.initial_state()
    for _ in range(10):
        s10, _ = one(s10, hyper, data)
    s11, rows = one(s10, hyper, data)
    P = preconditioner_from_state(config.optimizer, s11.opt_state, **(
        {"decay": config.decay, "bias_correction": True} if config.bias_correction else {}))
    x, unravel = jax.flatten_util.ravel_pytree(s10.params)
    p = jax.flatten_util.ravel_pytree(P)[0]

    def loss(flat):
        return sum_over_batches(lambda b: prob.loss_fn(unravel(flat), b), prob.curvature_batches)

    H = jax.hessian(loss)(x)
    s = 1 / jnp.sqrt(p)
    return float(jnp.linalg.eigvalsh(s[:, None] * H * s[None, :])[-1]), rows


# both slow (~35 s each; CI's 15 minutes): in CI the same dense oracle checks the
# preconditioned solver itself (tests/curvature/test_preconditioned.py::
# test_matches_dense_oracle) and the runner's path runs in the Adam tests below
@pytest.mark.slow
@pytest.mark.parametrize(("optimizer", "bias_correction"),
                         [("adam", False), ("rmsprop", False), ("rmsprop", True)])
def test_precond_lambda_matches_dense_oracle(tmp_path, optimizer, bias_correction):
    config = _tiny(optimizer=optimizer, bias_correction=bias_correction, decay=0.99)
    record = run_experiment(config, tmp_path / optimizer, progress=False)
    m = record.metrics
    measured = np.flatnonzero(np.isfinite(m["precond_lambda_1"]))
    np.testing.assert_array_equal(measured, [0, 5, 10])
    np.testing.assert_array_equal(measured, np.flatnonzero(np.isfinite(m["lambda_1"])))
    assert (m["precond_matvecs"][measured] > 0).all()
    assert (m["precond_matvecs"][np.isnan(m["precond_lambda_1"])] == 0).all()
    ref, rows = _oracle(config)
    np.testing.assert_allclose(m["precond_lambda_1"][10], ref, rtol=1e-7)
    np.testing.assert_allclose(rows["precond_lambda_1"][0], ref, rtol=1e-7)
    # the preconditioned sharpness is not the raw one (P is far from I: P ~ |g| << 1)
    assert abs(m["precond_lambda_1"][10] - m["lambda_1"][10]) > 0.5 * m["lambda_1"][10]
    # stableness S = 2 lambda_1(P^-1 H) / edge, in the row and in the analysis
    edge = eos_threshold(optimizer, config.lr, **({"beta1": 0.9} if optimizer == "adam" else {}))
    np.testing.assert_allclose(m["eta_lambda"][measured],
                               2 * m["precond_lambda_1"][measured] / edge, rtol=1e-12)
    run = load_run(tmp_path / optimizer)
    steps, s = stableness(points(run)[0])
    np.testing.assert_allclose(s, 2 * m["precond_lambda_1"][measured] / edge, rtol=1e-12)
    np.testing.assert_allclose(lambda_thresholds(run.config, steps), edge)
    assert headline(run)["lambda_threshold"] == pytest.approx(edge)


def test_warmup_then_adam_measures_after_the_switch(tmp_path):
    config = _tiny(optimizer="adam", warmup_steps=6, warmup_optimizer="gd", warmup_lr=0.2,
                   eig_tol=1e-6)
    m = run_experiment(config, tmp_path / "w", progress=False).metrics
    # step 5 is GD's (no P yet): raw lambda_1 only; step 10 is Adam's
    assert np.isfinite(m["lambda_1"][5]) and np.isnan(m["precond_lambda_1"][5])
    assert np.isfinite(m["precond_lambda_1"][10])
    np.testing.assert_allclose(m["eta_lambda"][5], 0.2 * m["lambda_1"][5], rtol=1e-12)


def test_adam_run_resumes_with_its_warm_start(tmp_path):
    config = _tiny(optimizer="adam", steps=20, chunk_steps=10, eig_tol=1e-6)
    straight = run_experiment(config, tmp_path / "a", progress=False).metrics
    run_experiment(config.replace(steps=10), tmp_path / "b", progress=False)
    resumed = run_experiment(config, tmp_path / "b", resume=True, progress=False).metrics
    for k in ("loss", "precond_lambda_1", "precond_matvecs"):
        np.testing.assert_array_equal(resumed[k], straight[k], err_msg=k)


@pytest.mark.parametrize(("decay", "bias_correction"),
                         [(0.9, False), (0.999, False), (0.999, True)])
def test_rmsprop_decay_reaches_optax(decay, bias_correction):
    r"""RMSProp's first step from $\nu_0 = 0$: $\nu_1 = (1 - \rho)g^2$, update
    $-\eta g/\sqrt{\nu_1 + \epsilon}$ (optax's rmsprop, eps = 1e-8 inside the root); with
    bias correction $\hat\nu_1 = g^2$, and the runner reads that P from the state."""
    from eosflow.experiments import parse
    from eosflow.runner import build_optimizer

    config = parse(["run", "digits-rmsprop", "--decay", str(decay),
                    "--bias_correction", str(bias_correction).lower()]).config
    assert (config.decay, config.bias_correction) == (decay, bias_correction)
    g = jnp.array([0.5, -2.0, 1e-3])
    nu1 = g**2 if bias_correction else (1 - decay) * g**2
    opt = build_optimizer(config, 0.01)
    state = opt.init(jnp.zeros(3))
    update, state = opt.update(g, state, jnp.zeros(3))
    np.testing.assert_allclose(update, -0.01 * g / jnp.sqrt(nu1 + 1e-8), rtol=1e-6)
    prog = Program(config.replace(num_examples=20, widths=(3,)),
                   build_problem(config.replace(num_examples=20, widths=(3,))), None, None, None)
    P = preconditioner_from_state("rmsprop", state, **prog.precond_options)
    np.testing.assert_allclose(P, jnp.sqrt(nu1 + 1e-8), rtol=1e-6)


def test_decay_out_of_range_is_refused():
    from eosflow import ConfigError

    with pytest.raises(ConfigError, match=r"decay: must be in \[0, 1\), got 1.0"):
        Config(optimizer="rmsprop", decay=1.0)
