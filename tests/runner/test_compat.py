"""Run directories written by eosflow 0.1.0 (flat ``config.json``) still load, plot, report and
resume; a user problem's own ``loss_min`` is the one GD on √(L − L*) uses."""

import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from eosflow import load_run, run_experiment
from eosflow.analysis import headline, plot_run, write_report
from eosflow.problems import Problem
from eosflow.runner import Config

FIXTURE = Path(__file__).parent.parent / "fixtures" / "run_v010"  # `eosflow run tiny` at 0.1.0


@pytest.fixture
def old_run(tmp_path):
    path = tmp_path / "tiny"
    shutil.copytree(FIXTURE, path)
    return path


def test_old_run_loads_and_plots_and_reports(old_run, tmp_path):
    run = load_run(old_run)
    assert run.config["name"] == "tiny" and run.status["state"] == "completed"
    np.testing.assert_array_equal(run.metrics["step"], np.arange(20))
    assert headline(run)["steps"] == 20
    figs = plot_run(old_run, tmp_path / "figs")
    assert [p.name for p in figs if p.suffix == ".png"] == ["training.png"]
    html = write_report([old_run], tmp_path / "r.html").read_text()
    assert "tiny" in html and "<img" in html


def test_old_run_resumes_and_extends(old_run, tmp_path):
    saved = load_run(old_run)
    config = Config.from_dict(saved.config, strict=False)
    again = run_experiment(config, old_run, resume=True, progress=False)
    assert again.status == "completed"
    # extended to 30 steps, it equals today's code run for 30 steps from scratch: the training
    # trajectory to float32 rounding; lambda_1 within the solver's tolerance (the eigen-solver
    # has changed since 0.1.0, the certificate has not). Not bit for bit: the fixture was
    # written on an AMD EPYC, and XLA's CPU kernels round differently on other CPUs (on an
    # AVX-512 Xeon the losses differ by up to 2.4e-7 relative over the 30 steps)
    longer = config.replace(steps=30)
    extended = run_experiment(longer, old_run, resume=True, progress=False)
    fresh = run_experiment(longer, tmp_path / "fresh", progress=False)
    assert extended.status == "completed"
    np.testing.assert_array_equal(load_run(old_run).metrics["step"], np.arange(30))
    for k in ("loss", "grad_norm", "param_norm"):
        np.testing.assert_allclose(load_run(old_run).metrics[k], fresh.metrics[k], rtol=2e-6,
                                   atol=0, err_msg=k)
    lam, ref = load_run(old_run).metrics["lambda_1"], fresh.metrics["lambda_1"]
    np.testing.assert_array_equal(np.isfinite(lam), np.isfinite(ref))
    np.testing.assert_allclose(lam[np.isfinite(lam)], ref[np.isfinite(ref)], rtol=2e-3)
    # the metadata keeps 0.1.0's sharpness line and records today's from the first resume on
    meta = json.loads((old_run / "metadata.json").read_text())
    fresh_meta = json.loads((tmp_path / "fresh" / "metadata.json").read_text())
    assert meta["sharpness"] != fresh_meta["sharpness"]
    assert [c["sharpness"] for c in meta["sharpness_changes"]] == [fresh_meta["sharpness"]]
    assert meta["sharpness_changes"][0]["at_step"] == len(saved.metrics["step"])


def _shifted_quadratic(loss_min):
    x0 = jnp.array([3.0, -4.0])
    return Problem(lambda x: loss_min + 0.5 * jnp.sum(x**2), x0, None, loss_min, {"toy": "q"})


@pytest.mark.parametrize("loss_min", [0.3, 0.0])
def test_sqrt_loss_gd_uses_the_problems_loss_min(tmp_path, loss_min):
    eta = 0.5
    problem = _shifted_quadratic(loss_min)
    config = Config(name="q", problem="quadratic", dataset="none", optimizer="sqrt_loss_gd",
                    lr=eta, steps=2, eig_every=None, dtype="float64")
    record = run_experiment(config, tmp_path / "q", problem=problem, progress=False)
    # closed form: x1 = x0 - eta * x0 / (2 sqrt(L(x0) - L*)), L - L* = |x0|^2 / 2 = 12.5
    x0 = np.array([3.0, -4.0])
    x1 = x0 - eta * x0 / (2 * np.sqrt(12.5))
    x2 = x1 - eta * x1 / (2 * np.sqrt(0.5 * np.sum(x1**2)))
    np.testing.assert_allclose(np.asarray(record.params), x2, rtol=1e-12)
    assert load_run(tmp_path / "q").metadata["loss_min"] == loss_min
    # a configured loss_min wins over the problem's: L* = -1 makes L - L* = 13.5 + loss_min
    other = run_experiment(config.replace(loss_min=-1.0, steps=1, name="q2"), tmp_path / "q2",
                           problem=problem, progress=False)
    np.testing.assert_allclose(np.asarray(other.params),
                               x0 - eta * x0 / (2 * np.sqrt(13.5 + loss_min)), rtol=1e-12)


def test_cli_exports_an_old_run_as_csv(old_run, capsys):
    from eosflow.experiments import main

    assert main(["export", str(old_run)]) == 0
    out = capsys.readouterr().out.strip()
    header, *rows = Path(out).read_text().splitlines()
    assert header.split(",")[0] == "step" and len(rows) == 20
    loss = [float(r.split(",")[header.split(",").index("loss")]) for r in rows]
    np.testing.assert_allclose(loss, load_run(old_run).metrics["loss"], rtol=1e-7)
    assert main(["export", str(old_run), "--format", "xlsx"]) == 2
