"""Any optax transformation through the Python API: run_experiment(config, out, optimizer=tx,
edge=...) steps it exactly, records it honestly, draws its edge, and refuses what it cannot do."""

import subprocess
import sys

import numpy as np
import optax
import pytest

from eosflow.analysis import cohen_panel, lambda_threshold
from eosflow.experiments import Config, ConfigError, load_run, run_experiment

LR = 0.05
TOY = dict(name="toy", problem="toy_a", dataset="none", dtype="float64", x0=(3.0, -1.0),
           chunk_steps=50, lr=LR, steps=100, eig_every=2, num_eigs=2)


def _config(**kw) -> Config:
    return Config(**{**TOY, **kw})


def test_custom_sgd_equals_builtin_gd_bit_for_bit(tmp_path):
    builtin = run_experiment(_config(optimizer="gd"), tmp_path / "gd")
    # the config's lr is another one: only the transformation decides the step
    custom = run_experiment(_config(lr=0.3), tmp_path / "sgd", optimizer=optax.sgd(LR),
                            edge=2 / LR)
    assert builtin.status == custom.status == "completed"
    common = set(builtin.metrics) & set(custom.metrics)
    assert {"loss", "lambda_1", "lambda_2", "eff_lr", "eta_lambda"} <= common
    for name in sorted(common):
        np.testing.assert_array_equal(custom.metrics[name], builtin.metrics[name], err_msg=name)
    np.testing.assert_array_equal(np.asarray(custom.params), np.asarray(builtin.params))


def test_custom_optimizer_is_recorded_and_its_edge_drawn(tmp_path):
    tx = optax.sgd(LR, momentum=0.5)
    run_experiment(_config(), tmp_path / "r", optimizer=tx, edge=lambda lr, b: 3.0 / lr)
    run = load_run(tmp_path / "r")
    assert run.config["optimizer"] == "custom"
    info = run.config["custom_optimizer"]
    assert info["edge"] == pytest.approx(3.0 / LR) and info["edge_from"] == "callable"
    assert "TraceState" in info["state"]  # optax.sgd with momentum keeps a trace
    assert " at 0x" not in info["repr"]  # no memory addresses: stable across processes
    assert run.metadata["optimizer"] == {"custom": info}
    assert lambda_threshold(run.config) == pytest.approx(3.0 / LR)
    fig = cohen_panel(run)
    lam_ax = fig.axes[1]
    flat = [ln for ln in lam_ax.get_lines()
            if np.allclose(np.asarray(ln.get_ydata(), float), 3.0 / LR)]
    assert flat, "the declared edge is drawn as a line at its value"
    labels = [t.get_text() for t in lam_ax.get_legend().get_texts()]
    assert any("60" in t for t in labels), labels


def test_edge_from_a_record_takes_its_threshold(tmp_path):
    run_experiment(_config(momentum=0.5), tmp_path / "r", optimizer=optax.sgd(LR, 0.5),
                   edge="momentum")
    run = load_run(tmp_path / "r")
    info = run.config["custom_optimizer"]
    assert info["like"] == "momentum" and info["edge_from"] == "record"
    # heavy ball: (2 + 2 beta)/eta at the config's lr and momentum
    assert lambda_threshold(run.config) == pytest.approx((2 + 2 * 0.5) / LR)



def test_edge_may_be_any_real_number(tmp_path):
    run_experiment(_config(steps=10), tmp_path / "r", optimizer=optax.sgd(LR),
                   edge=np.float32(40.0))
    assert load_run(tmp_path / "r").config["custom_optimizer"]["edge"] == 40.0


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(optimizer=optax.sgd(LR)), ValueError, "edge: give"),
    (dict(optimizer="adam", edge=1.0), TypeError, "optimizer: give an optax"),
    (dict(optimizer=object(), edge=1.0), TypeError, "optimizer: expected"),
    (dict(optimizer=optax.sgd(LR), edge=-1.0), ValueError, "edge: must be a positive"),
    (dict(optimizer=optax.sgd(LR), edge=float("nan")), ValueError, "edge: must be a positive"),
    (dict(optimizer=optax.sgd(LR), edge=[1.0]), TypeError, "edge: must be a number"),
    (dict(optimizer=optax.sgd(LR), edge="sgd"), ValueError, "edge: unknown record 'sgd'"),
    (dict(optimizer=optax.sgd(LR), edge=lambda lr, b: "x"), TypeError, "edge: edge"),
    (dict(edge=2.0), ValueError, "edge: only with optimizer"),
    (dict(optimizer=optax.sgd(LR), edge=2.0, sweep={"lr": [0.1, 0.2]}), ConfigError,
     "sweep: not available with a custom"),
])
def test_bad_custom_optimizer_arguments_are_one_line_errors(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        run_experiment(_config(), tmp_path / "r", **kwargs)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "r" / "metrics").exists()


def test_predicted_flow_is_refused_with_a_custom_optimizer(tmp_path):
    with pytest.raises(ConfigError, match="phi_every: the predicted flow"):
        run_experiment(_config(phi_every=10), tmp_path / "r", optimizer=optax.sgd(LR),
                       edge=2 / LR)
    moved = _config(optimizer="normalized_gd", warmup_steps=2, start_on_gamma=True)
    with pytest.raises(ConfigError, match="start_on_gamma: the two-step cycle's width"):
        run_experiment(moved, tmp_path / "r", optimizer=optax.sgd(LR), edge=2 / LR)


def test_custom_run_resumes_from_python_and_is_refused_by_the_cli(tmp_path):
    out = tmp_path / "r"
    run_experiment(_config(steps=50), out, optimizer=optax.sgd(LR), edge=2 / LR)
    cli = subprocess.run([sys.executable, "-m", "eosflow", "resume", str(out), "--steps", "100",
                          "--quiet"], capture_output=True, text=True)
    assert cli.returncode == 2, cli.stderr
    lines = [x for x in cli.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "optimizer" in lines[0] and "custom" in lines[0], cli.stderr
    with pytest.raises(ConfigError, match=r"optimizer: .* custom optax transformation"):
        run_experiment(_config(steps=100), out, resume=True)
    with pytest.raises(ConfigError, match="optimizer: its state"):
        run_experiment(_config(steps=100), out, resume=True, optimizer=optax.adam(LR),
                       edge=2 / LR)
    with pytest.raises(ConfigError, match=r"edge: .* differs"):
        run_experiment(_config(steps=100), out, resume=True, optimizer=optax.sgd(LR), edge=5.0)
    resumed = run_experiment(_config(steps=100), out, resume=True, optimizer=optax.sgd(LR),
                             edge=2 / LR)
    whole = run_experiment(_config(optimizer="gd"), tmp_path / "whole")
    assert resumed.status == "completed" and resumed.steps_done == 100
    np.testing.assert_array_equal(resumed.metrics["loss"], whole.metrics["loss"])
    assert load_run(out).config["optimizer"] == "custom"


def test_named_run_refuses_a_custom_optimizer_on_resume(tmp_path):
    out = tmp_path / "r"
    run_experiment(_config(steps=50, optimizer="gd"), out)
    with pytest.raises(ConfigError, match=r"optimizer: .* named optimizer 'gd'"):
        run_experiment(_config(steps=100), out, resume=True, optimizer=optax.sgd(LR),
                       edge=2 / LR)


def test_custom_adam_at_the_adam_record_edge_equals_builtin_adam(tmp_path):
    """edge='adam': the preconditioned sharpness is read from the transformation's own state
    (P = sqrt(nu_hat) + eps) and its edge (2 + 2 beta1)/((1 - beta1) eta) is the record's."""
    lr, b1 = 0.01, 0.9
    config = _config(lr=lr, momentum=b1, steps=60, eig_every=3, num_eigs=1)
    builtin = run_experiment(config.replace(optimizer="adam"), tmp_path / "adam")
    custom = run_experiment(config, tmp_path / "tx", optimizer=optax.adam(lr, b1=b1),
                            edge="adam")
    pre = custom.metrics["precond_lambda_1"]
    assert np.isfinite(pre).sum() == 20  # every third step
    for name in ("loss", "lambda_1", "precond_lambda_1", "eta_lambda"):
        np.testing.assert_array_equal(custom.metrics[name], builtin.metrics[name], err_msg=name)
    assert lambda_threshold(load_run(tmp_path / "tx").config) == pytest.approx(
        (2 + 2 * b1) / ((1 - b1) * lr))
