"""Mini-batch SGD in the runner: the sampling order is a function of (seed, step) alone, a
batch of all N examples is full-batch GD, and batch sharpness is recorded beside λ1."""

import numpy as np
import pytest

from eosflow.runner import Config, ConfigError, run_experiment

BASE = dict(name="sgd", num_examples=48, widths=(6,), lr=0.2, steps=24, chunk_steps=12,
            eig_every=6, eval_every=6, batch_size=16, batch_sharpness_batches=3,
            dtype="float64")


def _run(tmp_path, name, **changes):
    return run_experiment(Config(**{**BASE, **changes}), tmp_path / name, progress=False)


@pytest.mark.slow  # ~34 s (CI's 15 minutes); the order's independence of chunking and
# resume stays in CI at the level of batch indices: tests/problems/test_batches.py
def test_sampling_order_is_independent_of_chunking(tmp_path):
    a = _run(tmp_path, "a")
    b = _run(tmp_path, "b", chunk_steps=8)
    for k in ("loss", "full_loss", "lambda_1", "batch_sharpness"):
        np.testing.assert_array_equal(a.metrics[k], b.metrics[k], err_msg=k)
    other_seed = _run(tmp_path, "c", seed=1)
    assert not np.array_equal(a.metrics["loss"], other_seed.metrics["loss"])


def test_batch_of_every_example_is_full_batch_gd(tmp_path):
    sgd = _run(tmp_path, "sgd", batch_size=48)
    gd = _run(tmp_path, "gd", batch_size=None)
    # each step's batch is a permutation of all 48 examples: the same mean loss and gradient
    np.testing.assert_allclose(sgd.metrics["loss"], gd.metrics["loss"], rtol=1e-10)
    np.testing.assert_allclose(sgd.metrics["full_loss"][::6], gd.metrics["loss"][::6],
                               rtol=1e-10)
    lam = np.isfinite(gd.metrics["lambda_1"])
    np.testing.assert_allclose(sgd.metrics["lambda_1"][lam], gd.metrics["lambda_1"][lam],
                               rtol=1e-6)
    # with B = N every batch's Hessian and gradient are the full ones: batch sharpness is the
    # full-batch Rayleigh quotient of the gradient, at most lambda_1
    bs = sgd.metrics["batch_sharpness"][lam]
    rayleigh = sgd.metrics["align_rayleigh"][lam] * sgd.metrics["lambda_1"][lam]
    np.testing.assert_allclose(bs, rayleigh, rtol=1e-8)
    np.testing.assert_allclose(sgd.metrics["batch_sharpness_se"][lam], 0.0, atol=1e-8)


def test_minibatch_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="batch_size: 100 exceeds the 48"):
        _run(tmp_path, "x", batch_size=100)
    with pytest.raises(ConfigError, match="batch_size"):
        Config(problem="toy_a", dataset="none", batch_size=4)
    with pytest.raises(ConfigError, match="batch_size"):
        Config(batch_size=0)


# slow (~25 s: two compiles; CI's 15 minutes): in CI batch_sharpness is checked against
# dense per-batch Hessians (tests/curvature/test_batch.py), mini-batch runs here, and
# compare_figure's overlay of runs in tests/experiments/test_plots.py
@pytest.mark.slow
def test_a_batch_size_grid_is_drawn_per_run_with_its_batch_sharpness(tmp_path):
    """Runs at one lr that differ in batch size: the sweep figure overlays them against the
    step, each run's batch sharpness dash-dotted in its colour beside its lambda_1."""
    pytest.importorskip("matplotlib")
    from matplotlib.colors import to_rgba

    from eosflow.analysis import plot_sweep

    runs = [_run(tmp_path, f"b{b}", batch_size=b) for b in (8, 24)]
    recorded = [np.asarray(r.metrics["batch_sharpness"], np.float64) for r in runs]
    paths = plot_sweep([r.path for r in runs], tmp_path / "fig", formats=("png",))
    assert [p.name for p in paths] == ["sweep.png"]
    from eosflow.analysis import compare_figure

    fig = compare_figure([r.path for r in runs])
    ax_loss, ax_lam = fig.axes[0], fig.axes[1]
    labels = [t.get_text() for t in ax_loss.get_legend().get_texts()]
    assert labels == ["sgd (batch_size=8)", "sgd (batch_size=24)"]  # one name: told apart
    dashdot = [ln for ln in ax_lam.get_lines()
               if ln.get_linestyle() == "-." and len(ln.get_xdata())]
    assert len(dashdot) == 2
    for ln, bs, loss in zip(dashdot, recorded, ax_loss.get_lines()[:2], strict=True):
        np.testing.assert_allclose(ln.get_ydata(), bs[np.isfinite(bs)])
        assert to_rgba(ln.get_color()) == to_rgba(loss.get_color())  # the run's colour
    assert "batch sharpness (mini-batch runs)" in [
        t.get_text() for t in ax_lam.get_legend().get_texts()]


def test_minibatch_lambda_of_fixed_batches_against_dense_hessians(tmp_path):
    """minibatch_lambda_1: the mean (and max) of lambda_1 over fixed mini-batch losses, drawn
    from the seed alone; checked at step 0 against dense per-batch Hessians."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from eosflow.problems import build_problem, random_batch_indices
    from eosflow.runner._probes import MINIBATCH_TAG

    config = Config(**{**BASE, "steps": 12, "minibatch_lambda_batches": 2, "eig_tol": 1e-9})
    record = run_experiment(config, tmp_path / "r", progress=False)
    m = record.metrics
    on = np.isfinite(m["lambda_1"])
    assert np.all(np.isfinite(m["minibatch_lambda_1"][on]))
    assert np.all(np.isnan(m["minibatch_lambda_1"][~on]))
    problem = build_problem(config)
    flat, unravel = ravel_pytree(problem.params)
    examples = {k: v.reshape(-1, *v.shape[2:])[:48] for k, v in problem.batches.items()
                if k != "w"}
    idx = random_batch_indices(jax.random.fold_in(jax.random.key(config.seed), MINIBATCH_TAG),
                               48, 16, 2)
    tops = []
    for rows in np.asarray(idx):
        batch = {k: v[rows][None] for k, v in examples.items()}
        batch["w"] = jnp.full((1, 16), 1 / 16)
        one = jax.tree.map(lambda x: x[0], batch)
        h = jax.hessian(lambda x: problem.loss_fn(unravel(x), one))(flat)
        tops.append(float(np.linalg.eigvalsh(np.asarray(h))[-1]))
    np.testing.assert_allclose(m["minibatch_lambda_1"][0], np.mean(tops), rtol=1e-7)
    np.testing.assert_allclose(m["minibatch_lambda_1_max"][0], np.max(tops), rtol=1e-7)
    # its products count in the run's total, with lambda_1's, batch sharpness's and alignment's
    total = (m["eig_matvecs"] + m["batch_sharpness_matvecs"] + m["minibatch_lambda_matvecs"]).sum()
    from eosflow.runner import read_json

    assert read_json(tmp_path / "r" / "status.json")["hvps_total"] == total + on.sum()
    with pytest.raises(ConfigError, match="minibatch_lambda_batches"):
        Config(minibatch_lambda_batches=2)  # full batch
