"""The runner's warm eigen-solves along a run: the carried pair's products, and the fresh
direction only when the pair fails (``Program._eigen``), against a known spectrum."""

import jax
import jax.numpy as jnp
import numpy as np

from eosflow import Config, run_experiment
from eosflow.problems import Problem

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
