"""`eosflow verify --quick` runs end to end (it once crashed: a list named `tracking`
shadowed the function of that name), passes its claims and writes its figures."""

import json

import pytest

from eosflow.experiments import run_verify


@pytest.mark.slow
def test_verify_quick_runs_end_to_end(tmp_path):
    """About two minutes on 2 shared cores: ``pytest -m slow``."""
    checks = run_verify(tmp_path, quick=True)
    assert checks and all(c.passed for c in checks), [c for c in checks if not c.passed]
    data = json.loads((tmp_path / "verify.json").read_text())
    assert data["quick"] is True
    assert {(t["toy"], t["method"]) for t in data["tracking"]} == {
        ("toy_a", "normalized_gd"), ("toy_a", "sqrt_loss_gd")}
    assert (tmp_path / "verify.png").exists() and (tmp_path / "verify_collapse.png").exists()
