"""The comparison of a run's processes (arXiv 2410.24206) on columns built by hand, where
every number is known, and its figure and report paragraph."""

from pathlib import Path

import numpy as np
import pytest

from eosflow.analysis import (
    comparison_line,
    figure_stems,
    process_comparison,
    processes_figure,
    render_report,
)
from eosflow.runner import Run

LR, T = 0.2, 40


def _run(tmp_path: Path) -> Run:
    t = np.arange(T)
    # lambda_1 measured every step: eta lambda = 1.5 until step 20, then 2 (onset: step 20)
    lam = np.where(t < 20, 1.5, 2.0) / LR
    loss = 1.0 + 0.1 * (-1.0) ** t  # two-step mean exactly 1
    m = {"step": t, "loss": loss, "lambda_1": lam, "eff_lr": np.full(T, LR),
         "grad_norm": np.ones(T), "valid": np.ones(T, bool),
         "midpoint.loss": np.full(T, 0.5), "midpoint.grad_norm": np.ones(T),
         "stable.loss": np.full(T, 0.9), "stable.grad_norm": np.ones(T),
         "stable.dist_to_midpoint": np.full(T, 4.0),
         "central.loss": np.full(T, 0.55), "central.predicted_loss": np.full(T, 1.1),
         "central.lambda_1": lam, "central.dist_to_midpoint": np.full(T, 1.0)}
    m["midpoint.loss"][0] = np.nan
    config = {"name": "c", "optimizer": "gd", "lr": LR, "steps": T, "warmup_steps": 0,
              "processes": ["discrete", "midpoint", "stable", "central"]}
    return Run(tmp_path, config, {}, {"state": "completed"}, m)


def test_comparison_numbers(tmp_path):
    c = process_comparison(_run(tmp_path))
    assert c["onset"] == 20
    assert c["steps_compared"] == T - 1 - 20
    # predicted 1.1 against a two-step mean of 1: 10% everywhere after the onset
    for key in ("max", "median", "mean"):
        assert c["predicted_vs_two_step"][key] == pytest.approx(0.1, rel=1e-12)
        assert c["central_vs_midpoint"][key] == pytest.approx(0.1, rel=1e-12)  # 0.55 vs 0.5
    assert c["mean_loss"]["relative_difference"] == pytest.approx(0.1, rel=1e-12)
    assert c["distance_ratio"] == {"central": 1.0, "stable": 4.0, "ratio": 0.25}
    line = comparison_line(c)
    assert "step 20" in line and "max 0.1" in line and "= 0.25" in line


def test_no_processes_no_comparison(tmp_path):
    run = _run(tmp_path)
    run.metrics = {k: v for k, v in run.metrics.items() if "." not in k}
    assert process_comparison(run) is None and processes_figure(run) is None
    assert comparison_line(None) is None


def test_figure_draws_every_process(tmp_path):
    run = _run(tmp_path)
    fig = processes_figure(run)
    ax_l, ax_s = fig.axes[:2]
    labels = [ln.get_label() for ln in ax_l.get_lines()]
    for want in ("discrete", "discrete, two-step mean", "midpoint", "stable (gradient flow)",
                 "central, predicted", "central, L(w)"):
        assert want in labels
    pred = ax_l.get_lines()[labels.index("central, predicted")]
    np.testing.assert_allclose(pred.get_ydata(), 1.1)
    sharp = {ln.get_label(): ln for ln in ax_s.get_lines()}
    assert {"discrete", "central"} <= set(sharp)
    np.testing.assert_allclose(sharp["$2/\\eta$"].get_ydata(), 2 / LR)
    assert "processes" in figure_stems(run)
    html = render_report([run])
    assert "<h3>Processes</h3>" in html and "max 0.1" in html
