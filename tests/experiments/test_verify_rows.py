"""The ``eosflow verify`` rows of the central flow (closed form), of adaptive EoS (Adam at
38/eta) and of RMSProp's central flow (against optax.rmsprop) pass."""

import jax
import pytest

from eosflow.experiments import Check, adaptive_eos_rows, central_flow_rows, rmsprop_central_rows


def test_central_flow_rows_pass():
    with jax.enable_x64(True):
        rows = central_flow_rows(Check)
    assert len(rows) == 4 and all(r.passed for r in rows), [r.row() for r in rows]
    assert all(r.claim.startswith("8 central flow") for r in rows)


@pytest.mark.slow  # 400 Adam steps with the preconditioned eigen-solve: ~1 minute
def test_adam_row_passes():
    with jax.enable_x64(True):
        (row,) = adaptive_eos_rows(Check)
    assert row.passed and abs(row.measured / 38 - 1) <= 0.15


def test_rmsprop_central_rows_pass():
    with jax.enable_x64(True):
        rows = rmsprop_central_rows(Check)
    assert len(rows) == 3 and all(r.passed for r in rows), [r.row() for r in rows]
    assert all(r.claim.startswith("10 RMSProp central flow") for r in rows)
