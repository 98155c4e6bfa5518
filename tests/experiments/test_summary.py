"""Headline numbers against values worked out by hand from the synthetic columns."""

import json
import math

import numpy as np
import pytest

from eosflow.analysis import (
    eos_onset,
    flow_clock,
    harmonic_sums,
    headline,
    lambda_threshold,
    lambda_thresholds,
    points,
    stableness,
    two_step_harmonic_mean,
)
from eosflow.experiments import load_run

from .conftest import (
    GD_LR,
    GD_N,
    GD_ONSET,
    NGD_N,
    NGD_ONSET,
    SGD_CONFIG,
    SGD_LR,
    SWEEP_LRS,
    SWEEP_N,
    SWEEP_ONSET,
    SWEEP_STOP,
    base_columns,
    curvature_columns,
    flow_sweep,
    gd_columns,
    make_run,
    sgd_columns,
    sweep_columns,
)


def test_eos_onset_by_hand():
    steps = np.arange(6)
    # pairs: (1,1) -> 1; (1,1.8) -> 1.29; (1.8,2) -> 1.895; (2,2) -> 2; ...
    s = np.array([1.0, 1.0, 1.8, 2.0, 2.0, 2.0])
    assert eos_onset(steps, s) == 3
    assert eos_onset(steps, s, level=1.85) == 2
    assert eos_onset(steps, np.ones(6)) is None
    assert eos_onset(steps[:1], s[:1]) is None  # one estimate makes no pair


def test_eos_onset_two_step_not_one_step():
    # Normalized GD at EoS: S alternates 4, 4/3. No single S_t is near 2, yet the two-step
    # harmonic mean is exactly 2 from the first pair on.
    s = np.array([4.0, 4.0 / 3.0] * 5)
    np.testing.assert_allclose(harmonic_sums(s), 1.0)
    np.testing.assert_allclose(two_step_harmonic_mean(s), 2.0)
    assert eos_onset(np.arange(10) + 7, s) == 7


def test_eos_onset_ignores_bad_pairs():
    steps = np.arange(5)
    s = np.array([-1.0, 2.0, np.nan, 2.0, 2.0])  # negative and NaN members never count
    h = two_step_harmonic_mean(s)
    assert np.isnan(h[:3]).all() and h[3] == 2.0
    assert eos_onset(steps, s) == 3


def test_thresholds():
    assert lambda_threshold({"optimizer": "gd", "lr": 0.04}) == pytest.approx(50.0)
    assert lambda_threshold({"optimizer": "momentum", "lr": 0.1, "momentum": 0.5}) == (
        pytest.approx(30.0))  # (2 + 1)/0.1
    assert lambda_threshold({"optimizer": "nesterov", "lr": 0.1, "momentum": 0.5}) == (
        pytest.approx(15.0))  # 3/(2 * 0.1)
    assert lambda_threshold({"optimizer": "normalized_gd", "lr": 0.1}) is None
    cfg = {"optimizer": "normalized_gd", "lr": 0.1, "warmup_steps": 3, "warmup_lr": 0.5}
    thr = lambda_thresholds(cfg, np.arange(5))
    np.testing.assert_allclose(thr[:3], 4.0)
    assert np.isnan(thr[3:]).all()


def test_headline_gd(gd_run):
    h = headline(load_run(gd_run))
    cols = gd_columns()
    s = cols["eta_lambda"]
    assert h["name"] == "gd-synthetic" and h["optimizer"] == "gd"
    assert h["eos_onset_step"] == GD_ONSET
    assert h["lambda_at_onset"] == pytest.approx(2.1 / GD_LR)
    assert h["lambda_final"] == pytest.approx(s[-1] / GD_LR)
    # S after the onset: 80 values alternating 2.1, 1.95 -> mean 2.025
    assert h["mean_eta_lambda_after_onset"] == pytest.approx((2.1 + 1.95) / 2)
    assert h["mean_lambda_after_onset"] == pytest.approx(2.025 / GD_LR)
    assert h["lambda_fall"] == pytest.approx((21.0 - 19.5) / 21.0)
    assert h["mean_harmonic_sum_after_onset"] is None  # GD: arithmetic mean only
    assert h["lambda_threshold"] == pytest.approx(2 / GD_LR)
    assert h["loss_initial"] == pytest.approx(1.01)
    assert h["loss_final"] == pytest.approx(math.exp(-(GD_N - 1) / 50) + 0.01)
    assert h["accuracy_final"] == pytest.approx(0.5 + 110 / (2.0 * GD_N))
    assert h["steps"] == GD_N and h["last_step"] == GD_N - 1
    assert h["hvps_total"] == 4 * GD_N
    assert h["hvps_per_estimate"] == pytest.approx(4.0)
    assert h["eig_matvecs_per_estimate"] == pytest.approx(3.0)
    assert h["seconds_per_step"] == pytest.approx(3.0 / GD_N)
    assert h["state"] == "completed"
    json.dumps(h, allow_nan=False)  # JSON-able, no NaN


def test_headline_normalized_gd(ngd_run):
    h = headline(load_run(ngd_run))
    assert h["eos_onset_step"] == NGD_ONSET
    assert h["mean_harmonic_sum_after_onset"] == pytest.approx(1.0)
    # 50 values alternating 4 and 4/3 after the onset
    assert h["mean_eta_lambda_after_onset"] == pytest.approx((4 + 4 / 3) / 2)
    assert h["median_eta_lambda_after_onset"] == pytest.approx((4 + 4 / 3) / 2)
    assert h["lambda_at_onset"] == pytest.approx(400.0 - NGD_ONSET)
    assert h["lambda_final"] == pytest.approx(400.0 - (NGD_N - 1))
    assert h["lambda_fall"] == pytest.approx(49 / 350)
    assert h["lambda_threshold"] is None
    assert h["num_kicks"] == 1


def test_headline_sparse_curvature(tmp_path):
    # eig_every = 2: NaN on odd steps. Pairs are successive estimates (t, t + 2).
    n = 40
    t = np.arange(n)
    s = np.where(t < 20, 1.0, 2.0)
    s = np.where(t % 2 == 0, s, np.nan)
    cols = base_columns(n)
    cols.update(curvature_columns(s, s / 0.1, np.full(n, 0.1)))
    h = headline(load_run(make_run(tmp_path / "r", cols, config={"lr": 0.1, "steps": n})))
    assert h["eos_onset_step"] == 20  # pair (18, 20): 2/(1 + 1/2) = 1.33; (20, 22): 2
    assert h["num_estimates"] == 20
    assert h["lambda_final"] == pytest.approx(20.0)  # the last *measured* value (step 38)


def test_headline_without_curvature(tmp_path):
    n = 30
    cols = base_columns(n)
    cols["eff_lr"] = np.full(n, 0.1)
    h = headline(load_run(make_run(tmp_path / "r", cols, config={"lr": 0.1, "steps": n,
                                                                  "eig_every": None})))
    for key in ("eos_onset_step", "lambda_final", "lambda_at_onset", "lambda_fall",
                "mean_eta_lambda_after_onset", "eig_matvecs_per_estimate", "hvps_per_estimate"):
        assert h[key] is None, key
    assert h["num_estimates"] == 0
    assert h["loss_final"] == pytest.approx(math.exp(-29 / 50) + 0.01)
    json.dumps(h, allow_nan=False)


def test_headline_sweep(sweep_run):
    run = load_run(sweep_run)
    h = headline(run)
    assert h["sweep"] == {"lr": SWEEP_LRS}
    assert h["lr"] is None  # one per point
    p0, p1, p2 = h["points"]
    assert [p["lr"] for p in h["points"]] == SWEEP_LRS
    assert p0["label"] == "η = 0.05"
    assert p0["eos_onset_step"] is None
    assert p0["lambda_final"] == pytest.approx(1.0 / SWEEP_LRS[0])
    assert p1["eos_onset_step"] == SWEEP_ONSET
    assert p1["mean_eta_lambda_after_onset"] == pytest.approx(2.0)
    assert p1["lambda_at_onset"] == pytest.approx(2.0 / SWEEP_LRS[1])
    # the diverged point keeps its rows up to the stopping step only
    assert p2["steps"] == SWEEP_STOP + 1 and p2["last_step"] == SWEEP_STOP
    assert p2["loss_final"] == pytest.approx(1e6)
    assert p1["steps"] == SWEEP_N
    assert h["state"] == "diverged" and "point 2" in h["message"]
    assert h["hvps_per_estimate"] == pytest.approx(3 * 4 * SWEEP_N / (2 * SWEEP_N + 61))
    json.dumps(h, allow_nan=False)


def test_points_of_a_sweep_are_one_dimensional(sweep_run):
    pts = points(load_run(sweep_run))
    assert len(pts) == 3
    cols = sweep_columns()
    for j, p in enumerate(pts):
        assert p.config["lr"] == SWEEP_LRS[j]
        assert all(v.ndim == 1 for v in p.columns.values())
        valid = cols["valid"][:, j]
        np.testing.assert_array_equal(p.columns["loss"], cols["loss"][valid, j])


def test_momentum_stableness(tmp_path):
    n, lr, beta = 20, 0.1, 0.5
    lam = np.full(n, 30.0)  # exactly the heavy-ball threshold (2 + 2 beta)/lr
    cols = base_columns(n)
    cols.update(curvature_columns(0.37 * lam, lam, np.full(n, 0.37)))  # eff_lr is not eta
    run = load_run(make_run(tmp_path / "m", cols, config={"optimizer": "momentum", "lr": lr,
                                                           "momentum": beta, "steps": n}))
    _, s = stableness(points(run)[0])
    np.testing.assert_allclose(s, 2.0)  # 2 lambda/lambda_crit, not eff_lr * lambda
    assert headline(run)["eos_onset_step"] == 0


def test_headline_of_a_real_run(real_toy_run):
    # normalized GD on toy A: Thm 4.7 puts the harmonic sum at 1 + O(eta) after the onset
    h = headline(load_run(real_toy_run))
    m = load_run(real_toy_run).metrics
    s = m["eta_lambda"]
    assert h["eos_onset_step"] is not None and 0 < h["eos_onset_step"] < 100
    assert abs(h["mean_harmonic_sum_after_onset"] - 1.0) < 0.05
    assert h["hvps_total"] == int(np.sum(m["eig_matvecs"])) + len(s)  # solves + alignment
    first = np.flatnonzero(2 / (1 / s[:-1] + 1 / s[1:]) >= 1.9)[0]
    assert h["eos_onset_step"] == int(m["step"][first])


def test_adam_warmup_has_no_threshold_or_stableness(tmp_path):
    cfg = {"optimizer": "normalized_gd", "lr": 0.1, "warmup_steps": 3, "warmup_lr": 0.5,
           "warmup_optimizer": "adam"}
    assert np.isnan(lambda_thresholds(cfg, np.arange(5))).all()
    n = 10
    cols = base_columns(n)
    s = np.full(n, 2.0)
    cols.update(curvature_columns(s, np.full(n, 20.0), s / 20.0))
    run = load_run(make_run(tmp_path / "a", cols, config={**cfg, "steps": n}))
    _, st = stableness(points(run)[0])
    assert np.isnan(st[:3]).all() and np.all(st[3:] == 2.0)
    assert headline(run)["eos_onset_step"] == 3  # the first pair after the warm-up


def test_flow_clock_and_collapse(tmp_path):
    lrs, warm, n = [0.2, 0.1], 10, 411  # t - warm even at every measured step
    curve = lambda s: 10.0 - s
    run = load_run(flow_sweep(tmp_path / "flow", lrs, warm, n, curve, [1.0, 1.02]))
    _, p_small = points(run)
    s, lam = flow_clock(p_small)
    assert s[0] == 0.0 and s[-1] == pytest.approx(0.01 * 400 / 4)
    np.testing.assert_allclose(lam, 1.02 * (10.0 - s))
    c = headline(run)["collapse"]
    # the small-lr curve covers s <= 1, the big one s <= 4: compared over [0, 1]
    assert c["clock"] == "η²t/4" and c["reference_lr"] == 0.2 and c["lrs"] == [0.2, 0.1]
    assert c["s_common"] == pytest.approx(1.0)
    assert c["max_rel_diff"] == pytest.approx(0.02)
    assert c["median_rel_diff"] == pytest.approx(0.02)
    assert c["reference_fall"] == pytest.approx(0.1)  # 10 -> 9
    json.dumps(c, allow_nan=False)


def test_collapse_only_for_lr_sweeps_of_flow_optimizers(sweep_run, ngd_run):
    assert headline(load_run(sweep_run))["collapse"] is None  # GD has no limiting flow
    assert "collapse" not in headline(load_run(ngd_run))  # a single run
    assert flow_clock(points(load_run(sweep_run))[0]) is None


def test_adaptive_pairs_only_consecutive_steps(tmp_path):
    # normalized GD measured in pairs (t, t + 1) every 10 steps, as the runner does: S
    # alternates 4, 4/3 (harmonic sum 1) within each pair; across pairs (t + 1, t + 10) the
    # sum would be 3/4 + 1/4 ... of unrelated steps, which must not count
    n = 100
    cols = base_columns(n)
    t = np.arange(n)
    measured = t % 10 <= 1
    s = np.where(measured, np.where(t % 2 == 0, 4.0, 4.0 / 3.0), np.nan)
    lam = np.where(measured, 40.0, np.nan)
    cols.update(curvature_columns(s, lam, np.full(n, 0.1)))
    run = load_run(make_run(tmp_path / "p", cols, config={"optimizer": "normalized_gd",
                                                          "lr": 0.1, "steps": n}))
    steps, st = stableness(points(run)[0])
    hs = harmonic_sums(st, steps)
    np.testing.assert_allclose(hs[::2], 1.0)  # pairs (10k, 10k + 1)
    assert np.isnan(hs[1::2]).all()  # pairs (10k + 1, 10k + 10)
    h = headline(run)
    assert h["mean_harmonic_sum_after_onset"] == pytest.approx(1.0)
    assert h["eos_onset_step"] == 0
    # without the steps, every successive measurement pairs (fixed-step optimizers)
    np.testing.assert_allclose(harmonic_sums(st)[1::2], 1.0 / (4 / 3) + 1 / 4)


def test_minibatch_stableness_and_last_third(tmp_path):
    """SGD: the stableness is eta * batch sharpness, not eta * lambda_1 (Andreyev & Beneventano,
    arXiv 2412.20553); the last-third means and the held-out numbers by hand."""
    cols = sgd_columns()
    t, bs = cols["step"], cols["batch_sharpness"]
    on = np.isfinite(bs)
    run = load_run(make_run(tmp_path / "sgd", cols, config=SGD_CONFIG))
    steps, s = stableness(points(run)[0])
    np.testing.assert_array_equal(steps, t[on])
    np.testing.assert_allclose(s, SGD_LR * bs[on])  # eta * lambda_1 is at most 0.89
    h = headline(run)
    # pairs (20, 30): 2/(1/1 + 1/2) = 1.33; (30, 40): 2/(1/1.9 + 1/2.0) = 1.95 >= 1.9
    assert h["eos_onset_step"] == 30
    assert "batch sharpness" in h["stableness"]
    late = t[on] >= 2 * (len(t) - 1) / 3  # the measurements at t >= 2T/3: 60, 70, 80
    assert list(t[on][late]) == [60, 70, 80]
    assert h["batch_sharpness_last_third"] == pytest.approx(np.mean([20.0, 19.0, 20.0]))
    assert h["lambda_last_third"] == pytest.approx(np.mean([8.6, 8.7, 8.8]))
    assert h["batch_sharpness_final"] == 20.0
    assert h["test_loss_final"] == pytest.approx(1 / 81)
    assert h["test_accuracy_final"] == pytest.approx(0.58)
    full = headline(load_run(make_run(tmp_path / "gd", gd_columns())))
    assert full["batch_sharpness_last_third"] is None and full["test_loss_final"] is None
