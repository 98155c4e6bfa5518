"""The numbers README.md quotes for the default run come from one script,
benchmarks/readme_numbers.py, and agree with a fresh run (the suite's own default run)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# one worker makes the session's default run (see conftest.default_run)
pytestmark = pytest.mark.xdist_group("default_run")
README = ROOT / "README.md"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("readme_numbers",
                                                  ROOT / "benchmarks" / "readme_numbers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_quotes_the_fresh_default_run(script, default_run):
    values = script.readme_numbers(default_run)
    assert script.check(README.read_text(), values) == []


def test_the_check_fails_on_a_wrong_or_missing_number(script, default_run):
    values = script.readme_numbers(default_run)
    text = " ".join(README.read_text().split())
    quoted = f"mean eta*lambda1 after onset {values['mean_eta_lambda_after_onset']:.3f};"
    assert quoted in text
    wrong = text.replace(quoted, "mean eta*lambda1 after onset 2.500;")
    assert any(p.startswith("mean_eta_lambda_after_onset: the README says 2.500")
               for p in script.check(wrong, values))
    gone = text.replace("first reaches 2/η = 10 at step", "reaches the edge at step")
    assert any(p.startswith("first_step_at_edge: the README no longer quotes it")
               for p in script.check(gone, values))


def test_the_script_prints_every_quantity_from_a_run(script, default_run, capsys):
    assert script.main([str(default_run), "--check", str(README)]) == 0
    out = capsys.readouterr().out
    for q in script.QUANTITIES:
        assert q.key in out
    # times are labelled as measured on this machine, never checked
    assert all(q.rtol is None for q in script.QUANTITIES if "seconds" in q.key)
    assert out.count("measured, not checked") == 2
