"""The runner's warm eigen-solves along a run: the carried pair's products, and the fresh
direction only when the pair fails (``Program._eigen``), against a known spectrum."""

import traceback

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from eosflow import Config, run_experiment
from eosflow.curvature import HessianOperator, sum_over_batches
from eosflow.problems import Problem, build_problem

N = 60  # beyond the dense path (dim <= krylov_dim + block + 1), so Lanczos runs


def _quadratic(lam):
    Q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(N, N)))
    A = jnp.asarray((Q * lam) @ Q.T)
    return Problem(lambda x: 0.5 * x @ A @ x, jnp.asarray(Q[:, 5]))


def test_warm_solves_on_a_fixed_hessian_stop_after_the_carried_pair(tmp_path):
    """The Hessian of a quadratic never changes: after the cold first solve the carried pair
    are its top eigenvectors to within eig_tol, and every later solve passes its tests after
    the pair's two products (the fresh direction is not multiplied), reporting the known
    lambda_1 and lambda_2. The cold solve multiplies the fresh direction too."""
    lam = np.concatenate([[10.0, 9.0], np.linspace(-3.0, 5.0, N - 2)])
    config = Config(name="q", dtype="float64", optimizer="gd", lr=0.01, steps=12,
                    chunk_steps=12, eig_every=1, num_eigs=2, eig_block=3, eig_tol=1e-6,
                    track_alignment=False)
    with jax.enable_x64(True):
        record = run_experiment(config, tmp_path / "r", problem=_quadratic(lam),
                                progress=False)
    m = record.metrics
    np.testing.assert_allclose(m["lambda_1"], 10.0, rtol=1e-6)
    np.testing.assert_allclose(m["lambda_2"], 9.0, rtol=1e-6)
    assert m["eig_matvecs"][0] > 4  # cold: the three carried rows are random, plus the fresh
    np.testing.assert_array_equal(m["eig_matvecs"][1:], 3)  # the block of 3, nothing more


def test_measuring_the_sharpness_does_not_change_the_run(tmp_path, monkeypatch):
    """A measured step takes its gradient from the solve's own linearisation
    (HessianOperator.linearize); the run is the same, bit for bit, as one that measures
    nothing (float32, an MLP on digits, solves at every third step), and the solve's and
    the alignment's products are the Hessian's (the dense one at step 0)."""
    base = Config(num_examples=40, widths=(6,), lr=0.05, steps=12, chunk_steps=12,
                  eig_every=None)
    off = run_experiment(base, tmp_path / "off", progress=False)
    callers = []  # who linearises: the step, not the solver again
    linearize = HessianOperator.linearize
    monkeypatch.setattr(HessianOperator, "linearize", lambda op: callers.append(
        [f.name for f in traceback.extract_stack(limit=6)]) or linearize(op))
    on = run_experiment(base.replace(eig_every=3), tmp_path / "on", progress=False)
    assert np.isfinite(on.metrics["lambda_1"][::3]).all()
    assert callers, "nothing linearised the step's gradient"
    assert not any("as_flat" in names for names in callers), callers  # the solver's own
    # the same operations; bit for bit where XLA fuses them alike (CPUs)
    rtol = 0 if jax.default_backend() == "cpu" else 1e-6
    for name in ("loss", "grad_norm"):
        np.testing.assert_allclose(on.metrics[name], off.metrics[name], rtol=rtol, atol=0)
    prob = build_problem(base)  # the oracle: the dense Hessian at step 0
    x, unravel = jax.flatten_util.ravel_pytree(prob.params)

    def full(f):
        return sum_over_batches(lambda b: prob.loss_fn(unravel(f), b), prob.batches)

    H, g = np.asarray(jax.hessian(full)(x), np.float64), np.asarray(jax.grad(full)(x))
    top = np.linalg.eigvalsh(H)[-1]
    np.testing.assert_allclose(on.metrics["lambda_1"][0], top, rtol=1e-3)
    ghat = g / np.linalg.norm(g)
    np.testing.assert_allclose(on.metrics["align_rayleigh"][0], ghat @ H @ ghat / top,
                               rtol=1e-3)


def test_scalar_params_measure_the_second_derivative(tmp_path):
    """One 0-d parameter: the step's Hessian reaches the solver as an operator, not as a
    function of the parameter that the solver would have to tell from a loss (a matvec of a
    scalar returns a scalar too). L = x^4 / 4: lambda_1 = 3 x^2 at every step."""
    config = Config(name="s", dtype="float64", optimizer="gd", lr=0.01, steps=6,
                    chunk_steps=6, eig_every=1)
    with jax.enable_x64(True):
        record = run_experiment(config, tmp_path / "r",
                                problem=Problem(lambda x: x**4 / 4, jnp.asarray(2.0)),
                                metrics_fn=lambda x, row: {"x": x}, progress=False)
    m = record.metrics
    np.testing.assert_allclose(m["lambda_1"], 3 * m["x"] ** 2, rtol=1e-10)
