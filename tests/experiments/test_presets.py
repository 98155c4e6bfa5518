"""Every CPU preset runs (at reduced size), and the default experiment meets its target."""

import re
import shlex

import numpy as np
import pytest

from eosflow.experiments import (
    DEFAULT,
    PRESETS,
    load_run,
    parse,
    preset_config,
    run_experiment,
)

# every command a preset description shows, in backticks
SHOWN = [(name, cmd) for name, p in PRESETS.items()
         for cmd in re.findall(r"`(eosflow [^`]*)`", p.description)]


def test_descriptions_show_commands_only_in_backticks():
    assert len(SHOWN) >= 4
    for name, p in PRESETS.items():
        bare = re.sub(r"`[^`]*`", "", p.description)
        assert "eosflow " not in bare and "--" not in bare.replace("needs --data_dir", ""), name


@pytest.mark.parametrize(("name", "command"), SHOWN)
def test_every_command_a_description_shows_parses(name, command):
    """Parsed and validated exactly as ``eosflow`` would before running it (the runs
    themselves are the presets' own tests)."""
    argv = shlex.split(command)[1:]
    inv = parse(argv)
    assert inv.command in ("run", "sweep")
    assert argv[1] in PRESETS and inv.config.name == argv[1]
    if inv.command == "sweep":
        assert inv.grid and all(len(v) >= 2 for v in inv.grid.values())

# presets that need a data folder run on a synthetic idx file in test_paper_mnist.py
CPU = [name for name, p in PRESETS.items() if p.cpu_minutes is not None and name != DEFAULT
       and p.overrides.get("dataset") not in ("mnist", "cifar10")]
GPU = [name for name, p in PRESETS.items() if p.cpu_minutes is None]


# slow (CI's 15 minutes): digits-central steps four processes (~45 s; the processes run in
# CI in tests/runner/test_processes.py); digits-gd-sweep and digits-sgd (~15-20 s each) run
# the code paths of digits-gd (the default run's test below) and digits-sgd-narrow;
# digits-adam and digits-rmsprop (~20 s each) the preconditioned sharpness, which runs in CI
# on a smaller digits MLP in tests/runner/test_adaptive.py (Adam's warm start resumed, a
# warm-up then Adam) and test_processes.py (RMSProp); digits-ngd (~23 s) the Adam warm-up
# then a flow with Phi, which digits-sqrt runs with the other optimizer
SLOW_PRESETS = ("digits-central", "digits-gd-sweep", "digits-sgd", "digits-adam",
                "digits-rmsprop", "digits-ngd")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow)
                                  if n in SLOW_PRESETS else n for n in CPU])
def test_cpu_presets_run_at_reduced_size(name, tmp_path):
    base = preset_config(name, {})
    small = {"steps": 40, "chunk_steps": 20}
    if base.warmup_steps:
        small["warmup_steps"] = 10
    if base.phi_every:
        small["phi_every"] = 20
    if base.eig_every:
        small["eig_every"] = min(base.eig_every, 10)
    record = run_experiment(base.replace(**small), tmp_path / name)
    assert record.status == "completed"
    m = record.metrics
    np.testing.assert_array_equal(m["step"], np.arange(40))
    assert np.all(np.isfinite(m["loss"]))
    if base.phi_every:
        assert np.isfinite(m["phi_dist"][0]) and np.isfinite(m["lambda_phi"][20])
        assert (tmp_path / name / "prediction.npz").exists() == (
            base.optimizer in ("normalized_gd", "sqrt_loss_gd")
        )


@pytest.mark.parametrize("name", GPU)
def test_gpu_presets_are_valid_and_need_their_data(name):
    config = preset_config(name, {"data_dir": "/data"})
    assert config.dataset in ("cifar10", "mnist")


@pytest.mark.xdist_group("default_run")  # shares the session's default run
def test_default_experiment_meets_its_target(default_run):
    """Issue 5: eta * lambda1 over the last third in [1.9, 2.3], after starting below 1.5;
    the loss falls overall while rising on some steps."""
    config = preset_config(DEFAULT, {})
    m = load_run(default_run).metrics
    lam = m["lambda_1"]
    measured = np.isfinite(lam)
    steps, lam = m["step"][measured], lam[measured]
    assert lam[0] * config.lr < 1.5
    last_third = steps >= 2 * config.steps // 3
    mean = float(np.mean(config.lr * lam[last_third]))
    assert 1.9 <= mean <= 2.3, mean
    loss = m["loss"]
    assert loss[-1] < 0.5 * loss[0]
    assert np.sum(np.diff(loss) > 0) >= 10


@pytest.mark.slow
def test_digits_ngd_collapses_across_learning_rates(tmp_path):
    """Issue 5: normalized GD on digits, after entering EoS: lambda1 falls along training, and
    the curves of lambda1 against eta^2 t/4 for two learning rates agree within 10% (about
    5 minutes on 2 cores: ``pytest -m slow``)."""
    from eosflow.analysis import headline

    run_experiment(preset_config("digits-ngd", {}), tmp_path / "n", sweep={"lr": [0.05, 0.035]})
    h = headline(load_run(tmp_path / "n"))
    c = h["collapse"]
    assert c["max_rel_diff"] < 0.10, c
    assert c["reference_fall"] > 0.15, c  # agreement on a curve that actually moves
    for p in h["points"]:
        assert p["eos_onset_step"] is not None and p["lambda_fall"] > 0.15, p
        assert abs(p["mean_harmonic_sum_after_onset"] - 1.0) < 0.1, p


@pytest.mark.slow
def test_digits_sgd_narrow_batch_sharpness_at_the_edge(tmp_path):
    """Issue 18 on the narrow digits net (64-50-10, eta = 0.5, about 2 minutes on 2 cores:
    ``pytest -m slow``): batch sharpness over the last third within 15% of 2/eta for B = 64
    and 256, and the full-batch lambda1 lower for B = 64. Measured (README): 0.89 and 0.98
    of 2/eta; lambda1 1.00 and 1.05 of 2/eta, so lambda1 is at the edge, not below it, on
    this 1797-example problem (not asserted)."""
    from eosflow.analysis import headline

    out = {}
    for b in (64, 256):
        config = preset_config("digits-sgd-narrow", {"batch_size": b})
        run_experiment(config, tmp_path / str(b))
        h = headline(load_run(tmp_path / str(b)))
        out[b] = {"batch_sharpness": h["batch_sharpness_last_third"] * config.lr / 2,
                  "lambda_1": h["lambda_last_third"] * config.lr / 2}
    for b, v in out.items():
        assert abs(v["batch_sharpness"] - 1.0) <= 0.15, (b, v)
    assert out[64]["lambda_1"] < out[256]["lambda_1"], out
