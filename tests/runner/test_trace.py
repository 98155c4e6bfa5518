"""The Hessian trace beside lambda_1 (trace_samples: Hutchinson's estimate at every
eigen-solve), against the dense Hessian of a tiny MLP, and its cost in the HVP count."""

import jax
import numpy as np

from eosflow import Config, load_run, run_experiment
from eosflow.curvature import sum_over_batches
from eosflow.problems import build_problem


def test_trace_column_matches_the_dense_hessian(tmp_path):
    config = Config(num_examples=40, widths=(6,), lr=0.01, steps=11, eig_every=5,
                    chunk_steps=11, dtype="float64", trace_samples=64)
    record = run_experiment(config, tmp_path / "r", progress=False)
    m = record.metrics
    measured = np.flatnonzero(np.isfinite(m["hessian_trace"]))
    np.testing.assert_array_equal(measured, np.flatnonzero(np.isfinite(m["lambda_1"])))
    # the oracle: tr H of the dense Hessian at step 0 (the initial parameters)
    prob = build_problem(config)
    x, unravel = jax.flatten_util.ravel_pytree(prob.params)
    H = jax.hessian(lambda f: sum_over_batches(lambda b: prob.loss_fn(unravel(f), b),
                                               prob.curvature_batches))(x)
    exact = float(np.trace(np.asarray(H)))
    est, se = m["hessian_trace"][0], m["hessian_trace_se"][0]
    assert 0 < se < 0.5 * abs(exact)
    assert abs(est - exact) <= 4 * se, (est, exact, se)  # unbiased: within 4 standard errors
    # Hutchinson's variance is 2 * sum of squared off-diagonal entries over s probes
    off = np.asarray(H) - np.diag(np.diag(np.asarray(H)))
    np.testing.assert_allclose(se, np.sqrt(2 * np.sum(off**2) / 64), rtol=0.5)
    # its HVPs are counted: the eigen-solver's, one alignment product and 64 per solve
    run = load_run(tmp_path / "r")
    solves = len(measured)
    assert run.status["hvps_total"] == int(np.sum(m["eig_matvecs"])) + solves * (1 + 64)
