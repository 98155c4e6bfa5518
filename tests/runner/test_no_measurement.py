"""Rows without an eigen-solve store no measurement (nan), not False."""

import numpy as np

from eosflow import Config, load_run, run_experiment
from eosflow.analysis import converged_rows, headline


def test_eig_converged_is_nan_without_a_solve_and_the_fraction_is_over_solves(tmp_path):
    config = Config(name="toy", problem="toy_a", dataset="none", dtype="float64",
                    x0=(3.0, -1.0), steps=40, eig_every=4, lr=0.05)
    run_experiment(config, tmp_path / "r", progress=False)
    m = load_run(tmp_path / "r").metrics
    conv, lam = m["eig_converged"], m["lambda_1"]
    solved = np.isfinite(lam)
    assert conv.dtype == np.float64
    assert solved.sum() == 10 and np.all(np.isnan(conv[~solved]))
    np.testing.assert_array_equal(conv[solved], 1.0)
    assert headline(load_run(tmp_path / "r"))["eig_converged_fraction"] == 1.0


def test_converged_rows_reads_old_boolean_columns_by_the_measured_rows():
    lam = np.array([3.0, np.nan, 2.0, np.nan])
    np.testing.assert_array_equal(converged_rows(np.array([True, False, False, False]), lam),
                                  [True, False])
    np.testing.assert_array_equal(converged_rows(np.array([1.0, np.nan, 0.0, np.nan])),
                                  [True, False])
    assert converged_rows(None) is None
