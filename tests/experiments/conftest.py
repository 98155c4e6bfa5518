"""Synthetic run directories with known headline numbers, written with the runner's writers.

Every synthetic run is built from columns whose EoS onset, means and falls can be worked out
by hand (see each builder), so the tests compare the code against arithmetic, not against
its own output.
"""

import io
import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from eosflow.experiments import Config
from eosflow.runner import atomic_write_bytes, write_json, write_metrics_chunk


def _npz(arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def make_run(path: Path, columns: dict[str, np.ndarray], *, config: dict | None = None,
             status: dict | None = None, metadata: dict | None = None,
             sweep: dict | None = None, chunks: int = 2, densities=None, prediction=None,
             verify=None) -> Path:
    """Write a run directory the way the runner does (config, metadata, status, metric
    chunks), plus optional density files, prediction.npz and verify.json."""
    path = Path(path)
    cfg = Config(**(config or {})).to_dict()
    n = len(columns["step"])
    write_json(path / "config.json", cfg)
    meta = {"eosflow_version": "test", "dtype": cfg["dtype"], "loss_convention": cfg["loss"],
            "problem": {"dataset": cfg["dataset"], "data_indices": list(range(500))}}
    meta.update(metadata or {})
    if sweep is not None:
        meta["sweep"] = sweep
    write_json(path / "metadata.json", meta)
    st = {"state": "completed", "step": n, "hvps_total": 0, "wall_seconds": 2.0, "message": ""}
    st.update(status or {})
    write_json(path / "status.json", st)
    bounds = np.linspace(0, n, chunks + 1).astype(int)
    for a, b in itertools.pairwise(bounds):
        write_metrics_chunk(path, int(columns["step"][a]), {k: v[a:b] for k, v in columns.items()})
    for step, nodes, weights in densities or []:
        arrays = {"nodes": nodes, "weights": weights, "step": np.asarray(step),
                  "dim": np.asarray(nodes.shape[1] * 10)}
        atomic_write_bytes(path / "density" / f"{step:012d}.npz", _npz(arrays))
    if prediction is not None:
        atomic_write_bytes(path / "prediction.npz", _npz(prediction))
    if verify is not None:
        write_json(path / "verify.json", verify)
    return path


def base_columns(n: int) -> dict[str, np.ndarray]:
    t = np.arange(n)
    return {
        "step": t.astype(np.int64),
        "loss": np.exp(-t / 50.0) + 0.01,
        "grad_norm": np.exp(-t / 100.0),
        "param_norm": 10.0 + t / n,
        "update_norm": np.full(n, 0.01),
        "valid": np.ones(n, bool),
        "stop_reason": np.zeros(n, np.int32),
    }


def curvature_columns(s: np.ndarray, lam: np.ndarray, eff_lr: np.ndarray) -> dict:
    n = len(s)
    return {
        "eff_lr": eff_lr,
        "lambda_1": lam,
        "residual_1": np.full(n, 1e-4),
        "eig_matvecs": np.where(np.isfinite(lam), 3, 0).astype(np.int32),
        "eig_converged": np.where(np.isfinite(lam), 1.0, np.nan),
        "eta_lambda": s,
        "align_cos": np.full(n, 0.99),
        "align_rayleigh": np.full(n, 0.98),
    }


# GD: S_t = η λ1 = 1.0 before step 40, then alternating 2.1, 1.95. The pair (39, 40) has
# two-step harmonic mean 2/(1/1 + 1/2.1) = 1.35 < 1.9; the pair (40, 41) has 2.02: onset 40.
GD_LR, GD_N, GD_ONSET = 0.1, 120, 40


def gd_columns(n: int = GD_N, lr: float = GD_LR) -> dict[str, np.ndarray]:
    t = np.arange(n)
    s = np.where(t < GD_ONSET, 1.0, np.where((t - GD_ONSET) % 2 == 0, 2.1, 1.95))
    cols = base_columns(n)
    cols.update(curvature_columns(s, s / lr, np.full(n, lr)))
    cols["accuracy"] = np.where(t % 10 == 0, 0.5 + t / (2.0 * n), np.nan)
    return cols


# Normalized GD: S_t = 0.5 before step 50 (harmonic sum 4), then alternating 4 and 4/3
# (1/4 + 3/4 = 1 exactly). Pair (49, 50): 2 + 1/4 = 2.25, mean 0.89; pair (50, 51): 1, mean 2.
NGD_LR, NGD_N, NGD_ONSET = 0.1, 100, 50


# SGD (B = 8 of 64 examples), measured every 10 steps: batch sharpness 10 before step 30, then
# 19 and 20 alternating (eta * BS = 1.9, 2.0); lambda_1 = 8 + t/100 stays below 2/eta = 20;
# held-out loss 1/(1 + t) and accuracy 0.5 + t/1000
SGD_LR = 0.1
SGD_CONFIG = {"lr": SGD_LR, "steps": 90, "num_examples": 64, "batch_size": 8, "eig_every": 10}


def sgd_columns(n: int = 90, every: int = 10) -> dict[str, np.ndarray]:
    t = np.arange(n)
    on = t % every == 0
    bs = np.where(on, np.where(t < 30, 10.0, 19.0 + (t % 20 == 0)), np.nan)
    lam = np.where(on, 8.0 + t / 100.0, np.nan)
    cols = base_columns(n)
    cols.update(curvature_columns(SGD_LR * lam, lam, np.full(n, SGD_LR)))
    cols["batch_sharpness"] = bs
    cols["test_loss"] = np.where(on, 1.0 / (1 + t), np.nan)
    cols["test_accuracy"] = np.where(on, 0.5 + t / 1000.0, np.nan)
    return cols


def ngd_columns(n: int = NGD_N) -> dict[str, np.ndarray]:
    t = np.arange(n)
    s = np.where(t < NGD_ONSET, 0.5, np.where((t - NGD_ONSET) % 2 == 0, 4.0, 4.0 / 3.0))
    lam = 400.0 - t  # falls by one per step
    cols = base_columns(n)
    cols.update(curvature_columns(s, lam, s / lam))
    cols["num_kicks"] = np.where(t >= 80, 1, 0).astype(np.int32)
    return cols


@pytest.fixture
def gd_run(tmp_path):
    cols = gd_columns()
    return make_run(tmp_path / "gd", cols, config={"name": "gd-synthetic", "lr": GD_LR,
                                                    "steps": GD_N},
                    status={"hvps_total": 4 * GD_N, "wall_seconds": 3.0})


@pytest.fixture
def ngd_run(tmp_path):
    return make_run(tmp_path / "ngd", ngd_columns(),
                    config={"name": "ngd-synthetic", "optimizer": "normalized_gd",
                            "lr": NGD_LR, "steps": NGD_N},
                    status={"hvps_total": 4 * NGD_N})


# A vmapped sweep over lr (columns (steps, 3)). Point 0: S = 1 throughout (no EoS). Point 1:
# S = 1 before step 30, 2 after: onset 30. Point 2 diverges at step 60: valid up to and
# including step 60 (the row of the stopping step), invalid after, as the runner writes it.
SWEEP_LRS = [0.05, 0.1, 0.2]
SWEEP_N, SWEEP_ONSET, SWEEP_STOP = 90, 30, 60


def sweep_columns() -> dict[str, np.ndarray]:
    n, t = SWEEP_N, np.arange(SWEEP_N)
    s = np.stack([np.ones(n), np.where(t < SWEEP_ONSET, 1.0, 2.0), np.full(n, 1.5)], axis=1)
    lr = np.asarray(SWEEP_LRS)[None, :]
    lam = s / lr
    cols = {k: np.repeat(v[:, None], 3, axis=1) for k, v in base_columns(n).items()
            if k != "step"}
    cols["step"] = t.astype(np.int64)
    cols.update(curvature_columns(s, lam, np.repeat(lr, n, axis=0)))
    cols["loss"][:, 2] = np.where(t < SWEEP_STOP, cols["loss"][:, 2], 1e6)
    cols["valid"][:, 2] = t <= SWEEP_STOP
    cols["stop_reason"][SWEEP_STOP, 2] = 2
    return cols


@pytest.fixture
def sweep_run(tmp_path):
    return make_run(tmp_path / "sweep", sweep_columns(), sweep={"lr": SWEEP_LRS},
                    config={"name": "sweep-synthetic", "lr": 0.1, "steps": SWEEP_N},
                    status={"hvps_total": 3 * 4 * SWEEP_N, "state": "diverged",
                            "message": "diverged at step 60 (sweep point 2)"})


def flow_sweep(path: Path, lrs, warm, n, curve, scale):
    """An lr sweep of normalized GD whose point j has lambda1 = scale[j] * curve(s) on the
    flow's clock s = lr_j^2 (t - warm)/4 after the warm-up (lambda1 = 99 during it), measured
    every other step."""
    t = np.arange(n)
    lam = np.stack([np.where(t < warm, 99.0, scale[j] * curve(lr**2 * (t - warm) / 4.0))
                    for j, lr in enumerate(lrs)], axis=1)
    lam[1::2] = np.nan
    cols = {k: np.repeat(v[:, None], len(lrs), axis=1) for k, v in base_columns(n).items()
            if k != "step"}
    cols["step"] = t.astype(np.int64)
    s = np.full_like(lam, 2.0)
    cols.update(curvature_columns(s, lam, s / lam))
    return make_run(path, cols, sweep={"lr": lrs},
                    config={"optimizer": "normalized_gd", "lr": lrs[0], "steps": n,
                            "warmup_steps": warm, "warmup_lr": 0.5})


# --- toy A under normalized GD, simulated in NumPy, with its exact limiting flow -----------------
# L(x, y) = (1 + x^2) y^2. Gradient flow conserves ln|x| + x^2/2 - y^2/2, so
# Phi(x, y) = (X, 0) with ln X + X^2/2 = ln x + x^2/2 - y^2/2; the NGD limiting flow
# dX/dtau = -X/(2(1 + X^2)) conserves ln X + X^2/2 + tau/2 (docs/theory.md, "Toy problems", A).


def solve_potential(c: float) -> float:
    """The X > 0 with ln X + X^2/2 = c (Newton; the left side is increasing)."""
    x = max(math.sqrt(max(2 * c, 1e-6)), 1e-3)
    for _ in range(100):
        f = math.log(x) + 0.5 * x * x - c
        x_new = x - f / (1.0 / x + x)
        x = max(x_new, x / 10)
        if abs(f) < 1e-14:
            break
    return x


def toy_a_flow(x0: float, tau: np.ndarray) -> np.ndarray:
    c0 = math.log(x0) + 0.5 * x0 * x0
    return np.array([solve_potential(c0 - t / 2.0) for t in tau])


TOY_ETA, TOY_N, TOY_PHI_EVERY, TOY_X0 = 0.3, 600, 10, (6.0, -1.0)


def toy_a_columns(eta: float = TOY_ETA, n: int = TOY_N, phi_every: int = TOY_PHI_EVERY):
    x, y = TOY_X0
    rows = {k: [] for k in ("loss", "grad_norm", "eff_lr", "lambda_1", "eta_lambda",
                            "param_norm", "phi_dist", "lambda_phi", "phi_0", "phi_1")}
    for t in range(n):
        g = np.array([2 * x * y * y, 2 * (1 + x * x) * y])
        gn = float(np.linalg.norm(g))
        hess = np.array([[2 * y * y, 4 * x * y], [4 * x * y, 2 * (1 + x * x)]])
        lam = float(np.linalg.eigvalsh(hess)[-1])
        rows["loss"].append((1 + x * x) * y * y)
        rows["grad_norm"].append(gn)
        rows["eff_lr"].append(eta / gn)
        rows["lambda_1"].append(lam)
        rows["eta_lambda"].append(eta / gn * lam)
        rows["param_norm"].append(math.hypot(x, y))
        if t % phi_every == 0:
            px = solve_potential(math.log(abs(x)) + 0.5 * x * x - 0.5 * y * y)
            rows["phi_0"].append(px)
            rows["phi_1"].append(0.0)
            rows["lambda_phi"].append(2 * (1 + px * px))
            rows["phi_dist"].append(math.hypot(x - px, y))
        else:
            for k in ("phi_0", "phi_1", "lambda_phi", "phi_dist"):
                rows[k].append(math.nan)
        x, y = x - eta * g[0] / gn, y - eta * g[1] / gn
    cols = base_columns(n)
    cols.update({k: np.asarray(v) for k, v in rows.items()})
    return cols


@pytest.fixture
def toy_run(tmp_path):
    cols = toy_a_columns()
    x0 = cols["phi_0"][0]
    tau = np.linspace(0.0, TOY_ETA**2 * TOY_N, 400)
    X = toy_a_flow(x0, tau)
    pred = {"tau": tau, "X": np.stack([X, np.zeros_like(X)], axis=1),
            "lambda": 2 * (1 + X**2), "method": np.asarray("normalized_gd")}
    return make_run(tmp_path / "toy", cols, prediction=pred,
                    config={"name": "toy-a-ngd", "problem": "toy_a", "dataset": "none",
                            "optimizer": "normalized_gd", "lr": TOY_ETA, "steps": TOY_N,
                            "dtype": "float64", "x0": TOY_X0, "phi_every": TOY_PHI_EVERY})


@pytest.fixture(scope="session")
def real_toy_run(tmp_path_factory):
    """A real 300-step normalized-GD run on toy A (a few seconds), shared by the tests."""
    from eosflow.experiments import run_experiment

    out = tmp_path_factory.mktemp("real") / "toy-a"
    cfg = Config(name="real-toy-a", problem="toy_a", dataset="none", optimizer="normalized_gd",
                 lr=0.1, steps=300, dtype="float64", x0=(14.7, -3.0))
    run_experiment(cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> Path:
    """A fresh run of the default experiment (``eosflow run``'s preset), made once per test
    session (about half a minute on 2 cores) and shared by the tests that read it. Under
    xdist every worker has its own session: the first to take a file lock in the workers'
    shared temporary folder makes the run, the others wait for it and read it."""
    import fcntl
    import os

    from eosflow.experiments import DEFAULT, load_run, preset_config, run_experiment

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out = root / "shared-default-run" / DEFAULT
    with open(root / "shared-default-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        done = (out / "status.json").exists() and load_run(out).status.get("state") == "completed"
        if not done:
            record = run_experiment(preset_config(DEFAULT, {}), out, progress=False,
                                    overwrite=out.exists())
            assert record.status == "completed"
    return out
