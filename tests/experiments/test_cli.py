"""The command line end to end on tiny presets, and its answers to bad input."""

import json
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

from eosflow.experiments import load_run, main

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
        (["run", "tiny", "--learning_rate", "0.1"], "learning_rate: unknown field; did you mean"),
        (["run", "tiny", "--lr", "abc"], "lr: expected float"),
        (["run", "tiny", "--lr", "-0.1"], "lr: must be positive"),
        (["run", "tiny", "--num_eigs", "0"], "num_eigs: must be positive"),
        (["run", "tiny", "--eig_every", "0"], "eig_every: must be positive"),
        (["run", "tiny", "--optimizer", "normalised_gd"], "did you mean 'normalized_gd'"),
        (["run", "tiny", "--warmup_optimizer", "sgd"], "warmup_optimizer: unknown value 'sgd'"),
        (["run", "tiny", "--dataset", "cifar10"], "data_dir: required"),
        (["run", "tiny", "--lr"], "lr: needs a value"),
        (["sweep", "tiny", "--grid", "lr="], "lr: the sweep grid is empty"),
        (["sweep", "tiny", "--grid", "lr=0.1,-1"], "lr: must be positive"),
        (["plot", "/nonexistent-run"], "is not an eosflow run"),
    ],
)
def test_bad_input_is_one_line_with_exit_2(argv, needle, capsys, tmp_path):
    assert main([*argv, *([] if argv[0] == "plot" else ["--out", str(tmp_path)])]) == 2
    assert needle in _err_line(capsys)


def test_existing_run_dir_needs_resume_or_overwrite(runs, capsys):
    assert main(["run", "tiny", "--out", str(runs), *TINY]) == 2
    assert "pass --resume to continue it or --overwrite" in _err_line(capsys)


def test_too_large_sweep_is_refused_before_starting(tmp_path, capsys, monkeypatch):
    from eosflow.experiments import _cli

    monkeypatch.setattr(_cli, "_available_memory", lambda: 10_000_000)
    grid = ",".join(str(0.01 * (i + 1)) for i in range(64))
    assert main(["sweep", "tiny", "--grid", f"lr={grid}", "--out", str(tmp_path), *TINY]) == 2
    assert "more than half" in _err_line(capsys)
    assert not (tmp_path / "tiny-sweep").exists()


def test_python_dash_m_and_no_traceback_in_a_real_process(tmp_path):
    res = subprocess.run([sys.executable, "-m", "eosflow", "run", "--lr", "-1",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip() == "eosflow: error: lr: must be positive, got -1.0"
    res = subprocess.run([sys.executable, "-m", "eosflow", "run", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--overwrite" in res.stdout


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
