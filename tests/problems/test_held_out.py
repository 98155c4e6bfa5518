"""Held-out sets: rows disjoint from the training subset, standardised with the training
statistics, evaluated by the runner as ``test_*`` columns."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits as sk_digits

from eosflow.problems import build_network_problem
from eosflow.runner import Config, ConfigError, run_experiment


def test_digits_held_out_rows_are_disjoint_and_use_training_statistics():
    config = Config(num_examples=100, subset="stratified", test_examples=40, widths=(4,),
                    dtype="float64")
    p = build_network_problem(config)
    train_rows = np.asarray(p.info["data_indices"])
    test_rows = np.asarray(p.info["test_indices"])
    assert len(test_rows) == 40 and not set(train_rows) & set(test_rows)
    raw = sk_digits().data.astype(np.float64)
    mean = raw[train_rows].mean(axis=0)
    want = (raw[test_rows] - mean) / (raw[train_rows] - mean).std()
    got = np.asarray(p.test_batches["x"]).reshape(-1, 64)[:40]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_runner_records_held_out_loss_and_accuracy(tmp_path):
    config = Config(name="h", num_examples=60, test_examples=30, widths=(5,), lr=0.1, steps=4,
                    eig_every=None, eval_every=2, dtype="float64")
    record = run_experiment(config, tmp_path / "h", progress=False)
    p = build_network_problem(config)
    # step 0: the initial params; the held-out loss is the mean MSE over the 30 rows
    b = {k: np.asarray(v).reshape(-1, *np.shape(v)[2:]) for k, v in p.test_batches.items()}
    out = np.stack([np.asarray(p.params(jnp.asarray(x))) for x in b["x"]])
    real = b["w"] > 0
    want = np.mean(0.5 * np.sum((out - b["y"]) ** 2, axis=1)[real])
    assert record.metrics["test_loss"][0] == pytest.approx(want, rel=1e-10)
    acc = np.mean((out.argmax(1) == b["y"].argmax(1))[real])
    assert record.metrics["test_accuracy"][0] == pytest.approx(acc, rel=1e-12)
    assert np.isnan(record.metrics["test_loss"][1]) and np.isfinite(record.metrics["test_loss"][2])


def test_held_out_bad_input():
    with pytest.raises(ConfigError, match="test_examples"):
        build_network_problem(Config(num_examples=1700, test_examples=200, widths=(4,)))
    with pytest.raises(ConfigError, match="test_examples"):
        build_network_problem(Config(dataset="teacher_student", test_examples=5, widths=(4,)))
