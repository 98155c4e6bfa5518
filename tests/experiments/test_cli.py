"""The command line end to end on tiny presets, and its answers to bad input."""

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

from eosflow.experiments import (
    format_value,
    load_run,
    main,
    parse,
    preset_config,
    preset_values,
)
from eosflow.problems import available_memory
from eosflow.runner import FIELD_DOCS, FIELDS

TINY = ["--steps", "20", "--chunk_steps", "10", "--quiet"]


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    assert err[0].startswith("eosflow: error:")
    return err[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    assert main(["run", "tiny", "--out", str(root), *TINY]) == 0
    assert main(["run", "tiny", "--out", str(root), "--name", "tiny2", "--lr", "0.1", *TINY]) == 0
    return root


def test_run_writes_run_dir_figure_and_report(runs):
    run = load_run(runs / "tiny")
    assert run.status["state"] == "completed"
    np.testing.assert_array_equal(run.metrics["step"], np.arange(20))
    assert (runs / "tiny" / "figures" / "training.png").exists()
    html = (runs / "tiny" / "report.html").read_text()
    HTMLParser().feed(html)
    assert "tiny" in html and "data:image/png;base64" in html


def test_list_shows_every_preset_on_one_line(capsys):
    from eosflow.experiments import PRESETS

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(PRESETS)
    assert any(line.startswith("digits-gd ") and "(default)" in line for line in lines)


def test_plot_compare_report_resume(runs, tmp_path, capsys):
    assert main(["plot", str(runs / "tiny"), "--out", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "training.png").exists()
    assert main(["compare", str(runs / "tiny"), str(runs / "tiny2"),
                 "--out", str(tmp_path / "cmp")]) == 0
    assert any(p.suffix == ".png" for p in (tmp_path / "cmp").iterdir())
    out = tmp_path / "both.html"
    assert main(["report", str(runs / "tiny"), str(runs / "tiny2"), "--out", str(out)]) == 0
    assert "tiny2" in out.read_text()
    before = load_run(runs / "tiny").metrics["loss"]
    assert main(["resume", str(runs / "tiny"), "--quiet", "--no-report"]) == 0
    np.testing.assert_array_equal(load_run(runs / "tiny").metrics["loss"], before)


def test_sweep_vmapped_and_serial(tmp_path):
    out = str(tmp_path)
    assert main(["sweep", "tiny", "--grid", "lr=0.1,0.2", "--out", out, "--no-report",
                 *TINY]) == 0
    run = load_run(tmp_path / "tiny-sweep")
    assert run.sweep == {"lr": [0.1, 0.2]} and run.metrics["loss"].shape == (20, 2)
    assert main(["sweep", "tiny", "--grid", "widths=4,6", "--out", out, "--no-report",
                 *TINY]) == 0
    for w in (4, 6):
        cfg = json.loads((tmp_path / "tiny-sweep" / f"widths={w}" / "config.json").read_text())
        assert cfg["widths"] == [w]
    # a second call skips the finished points (resumable)
    assert main(["sweep", "tiny", "--grid", "widths=4,6", "--out", out, "--no-report",
                 *TINY]) == 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "tiny-gd"], "did you mean 'tiny'"),
        (["run", "tiny", "--learning_rate", "0.1"], "unknown field; did you mean 'lr'"),
        (["run", "tiny", "--eig_evry", "2"], "eig_evry: unknown field; did you mean 'eig_every'"),
        (["run", "tiny", "--lr", "abc"], "lr: expected float"),
        (["run", "tiny", "--lr", "1/0"], "lr: division by zero"),
        (["run", "tiny", "--lr", "__import__('os')"], "lr: expected float"),
        (["run", "tiny", "--lr", "1e400"], "lr: not a finite number"),
        (["run", "tiny", "--lr", "nan"], "lr: expected float"),
        (["run", "tiny", "--lr", "-0.1"], "lr: must be positive"),
        (["run", "tiny", "--lr=-1/10"], "lr: must be positive"),
        (["run", "tiny", "--steps", "1e12"], "steps: must be below 2**31"),
        (["run", "tiny", "--steps", "2.5"], "steps: expected int"),
        (["run", "tiny", "--widths", ""], "widths: must be one or more positive widths"),
        (["run", "tiny", "--widths", "200,-1"], "widths: must be one or more positive"),
        (["run", "tiny", "--seed", "-1"], "seed: must be >= 0"),
        (["run", "tiny", "--num_eigs", "0"], "num_eigs: must be positive"),
        (["run", "tiny", "--eig_every", "0"], "eig_every: must be positive"),
        (["run", "tiny", "--eig-every", "-4"], "eig_every: must be positive"),
        (["run", "tiny", "--phi_gtol", "0"], "phi_gtol: must be positive"),
        (["run", "tiny", "--momentum", "1"], "momentum: must be in [0, 1)"),
        (["run", "tiny", "--optimizer", "normalised_gd"], "did you mean 'normalized_gd'"),
        (["run", "tiny", "--warmup_optimizer", "sgd"], "warmup_optimizer: unknown value 'sgd'"),
        (["run", "tiny", "--dtype", "float16"], "dtype: unknown value 'float16'"),
        (["run", "tiny", "--track_alignment", "maybe"], "track_alignment: expected bool"),
        (["run", "tiny", "--dataset", "cifar10"], "data_dir: required"),
        (["run", "tiny", "--lr"], "lr: needs a value"),
        (["run", "tiny", "--quiet=yes"], "--quiet: takes no value"),
        (["run", "tiny", "tiny"], "takes one preset"),
        (["sweep", "tiny", "--grid", "lr="], "lr: the sweep grid is empty"),
        (["sweep", "tiny", "--grid", "lr=0.1,-1"], "lr: must be positive"),
        (["sweep", "tiny", "--grid", "lr=2/0"], "lr: division by zero"),
        (["sweep", "tiny", "--lr", "0.1,0.2"], "lr: expected float"),
        (["sweep", "tiny"], "sweep needs at least one --grid"),
        (["resume", "/nonexistent-run", "--steps", "0"], "steps: must be positive"),
        (["list", "--fields", "nope"], "unknown preset 'nope'"),
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["plot", "/nonexistent-run"], "is not an eosflow run"),
    ],
)
def test_bad_input_is_one_line_with_exit_2(argv, needle, capsys, tmp_path):
    out = ["--out", str(tmp_path)] if argv[0] in ("run", "sweep") else []
    assert main([*argv, *out]) == 2
    line = _err_line(capsys)
    assert needle in line, line


def test_overrides_take_the_presets_values_as_defaults():
    inv = parse(["run", "digits-gd", "--eig_every", "8", "--widths", "64,32", "--lr", "2/30",
                 "--track_alignment", "false", "--loss_min", "none", "--x0", "1,-2"])
    c = inv.config
    assert (c.eig_every, c.widths, c.track_alignment, c.loss_min) == (8, (64, 32), False, None)
    assert c.lr == 2 / 30 and c.x0 == (1.0, -2.0)
    assert (c.steps, c.chunk_steps, c.name) == (400, 100, "digits-gd")  # the preset's
    assert parse(["run", "--eig-every=3"]).config.eig_every == 3  # tyro's spelling too
    assert parse(["run", "tiny"]).config == preset_config("tiny", {})
    inv = parse(["verify", "--quick"])
    assert inv.command == "verify" and inv.args.quick and inv.args.out == "runs/verify"
    inv = parse(["resume", "some/run", "--steps", "800", "--no-report"])
    assert (inv.args.run_dir, inv.args.steps, inv.args.no_report) == ("some/run", 800, True)
    assert parse(["report", "a", "b", "--out", "r.html"]).args.run_dirs == ("a", "b")
    inv = parse(["sweep", "tiny", "--grid", "lr=2/30,2/50", "--grid", "seed=0,1"])
    assert inv.grid == {"lr": [2 / 30, 2 / 50], "seed": [0, 1]}


@pytest.mark.parametrize("preset", ["digits-gd", "toy-a-ngd"])
def test_run_help_shows_every_field_with_its_meaning_and_the_presets_value(
        preset, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")  # one column (tyro uses two when wide)
    assert main(["run", preset, "--help"]) == 0
    out = capsys.readouterr().out
    text = " ".join(" ".join(ln.strip(" │╭╮╰╯─").split()) for ln in out.splitlines())
    flag = "|".join(FIELDS)
    blocks = {b.split()[0][2:]: b for b in re.split(rf" (?=--(?:{flag}) )", text)
              if b.startswith("--")}
    values = preset_values(preset)
    # a line may break after a comma (e.g. in discrete,midpoint,stable,central), which the
    # join above turns into ", ": compare with the space after commas dropped on both sides
    norm = lambda s: s.replace(", ", ",")
    for name in FIELDS:
        assert norm(FIELD_DOCS[name]) in norm(blocks[name]), (name, blocks[name])
        assert f"(default: {format_value(values[name])})" in blocks[name], (name, blocks[name])
    assert "{gd,normalized_gd,sqrt_loss_gd" in out and "--overwrite" in out


def test_list_fields_shows_the_presets_values_types_and_meanings(capsys):
    assert main(["list", "--fields", "digits-gd"]) == 0
    out = capsys.readouterr().out
    lr = next(ln for ln in out.splitlines() if ln.strip().startswith("--lr "))
    assert lr.split()[1] == "0.2" and "float" in lr and "learning rate" in lr
    steps = next(ln for ln in out.splitlines() if ln.strip().startswith("--steps "))
    assert steps.split()[1] == "400"
    for name in FIELDS:
        assert FIELD_DOCS[name] in out, name
    assert main(["list", "--fields"]) == 0  # the default preset
    assert "digits-gd" in capsys.readouterr().out


def test_an_exception_that_is_not_a_user_error_keeps_its_traceback(tmp_path):
    """A genuine failure below eosflow (JAX cannot start its backend: a RuntimeError raised
    inside the run) is not turned into a usage error: traceback kept, exit 1, not 2."""
    env = {**os.environ, "JAX_PLATFORMS": "cpux"}
    res = subprocess.run([sys.executable, "-m", "eosflow", "run", "tiny", "--out", str(tmp_path),
                          "--quiet"], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 1, res.stderr
    assert "Traceback" in res.stderr and "eosflow: error:" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("RuntimeError: Unable to initialize")


def test_resume_steps_extends_the_run(tmp_path):
    assert main(["run", "tiny", "--out", str(tmp_path), *TINY]) == 0
    assert main(["resume", str(tmp_path / "tiny"), "--steps", "30", "--quiet"]) == 0
    run = load_run(tmp_path / "tiny")
    assert run.config["steps"] == 30
    np.testing.assert_array_equal(run.metrics["step"], np.arange(30))


@pytest.mark.parametrize("argv", [["list"], ["list", "--fields", "digits-gd"],
                                  ["run", "tiny", "--help"]])
def test_list_and_help_do_not_load_the_numerical_stack(argv):
    """The lazy package imports keep the CLI's answers that need no computation free of
    JAX, equinox, optax, diffrax and matplotlib (``eosflow list`` in ~0.3 s of CPU)."""
    code = ("import sys\nfrom eosflow.experiments import main\ntry:\n"
            f"    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "heavy = ('jax', 'equinox', 'optax', 'diffrax', 'matplotlib', 'eosflow.analysis')\n"
            "print([m for m in heavy if m in sys.modules])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_existing_run_dir_needs_resume_or_overwrite(runs, capsys):
    assert main(["run", "tiny", "--out", str(runs), *TINY]) == 2
    assert "pass --resume to continue it or --overwrite" in _err_line(capsys)


def test_too_large_sweep_is_refused_before_starting(tmp_path, capsys):
    # 64 points of a digits MLP whose width makes them need about twice the memory this
    # machine has available now, while one point fits easily
    avail = available_memory()
    assert avail is not None
    width = int(2 * avail / (64 * 4 * 30 * 75))  # ~75 parameters per unit, ~30 copies each
    grid = ",".join(str(0.01 * (i + 1)) for i in range(64))
    assert main(["sweep", "tiny", "--grid", f"lr={grid}", "--widths", str(width),
                 "--out", str(tmp_path), *TINY]) == 2
    assert "more than half" in _err_line(capsys)
    assert not (tmp_path / "tiny-sweep").exists()


def test_python_dash_m_and_no_traceback_in_a_real_process(tmp_path):
    res = subprocess.run([sys.executable, "-m", "eosflow", "run", "--lr", "-1",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip() == "eosflow: error: lr: must be positive, got -1.0"
    res = subprocess.run([sys.executable, "-m", "eosflow", "run", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--overwrite" in res.stdout and "--eig_every" in res.stdout


@pytest.mark.slow  # ~32 s (CI's 15 minutes); sweeps through the CLI run in CI:
# test_sweep_vmapped_and_serial
def test_sweep_split_across_processes_then_merged(tmp_path):
    out = str(tmp_path)
    for shard in ("0/2", "1/2"):  # as two processes (or hosts) would, by grid index
        assert main(["sweep", "tiny", "--grid", "widths=4,6", "--shard", shard, "--out", out,
                     "--no-report", *TINY]) == 0
    root = tmp_path / "tiny-sweep"
    assert sorted(p.name for p in root.iterdir()) == ["widths=4", "widths=6"]
    report = tmp_path / "merged.html"
    assert main(["report", str(root / "widths=4"), str(root / "widths=6"),
                 "--out", str(report)]) == 0
    html = report.read_text()
    assert "tiny-widths=4" in html and "tiny-widths=6" in html
