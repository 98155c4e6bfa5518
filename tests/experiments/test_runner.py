"""The runner: records, stopping rules, sweeps, and nothing lost when a run is killed."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eosflow.experiments import Config, ConfigError, RunDirError, load_run, run_experiment
from eosflow.problems import Problem

TOY = dict(problem="toy_a", dataset="none", dtype="float64", x0=(3.0, -1.0), chunk_steps=100)


def _toy(**kw) -> Config:
    return Config(**{"name": "toy", **TOY, **kw})


def test_normalized_gd_record_matches_hand_computed_steps(tmp_path):
    config = _toy(optimizer="normalized_gd", lr=0.05, steps=300)
    record = run_experiment(config, tmp_path / "r")
    m = record.metrics
    assert record.status == "completed" and record.steps_done == 300
    np.testing.assert_array_equal(m["step"], np.arange(300))
    # replay the same steps by hand from x0: x <- x - eta g / |g|
    loss = lambda z: (1 + z[0] ** 2) * z[1] ** 2

    def step(x, _):
        g = jax.grad(loss)(x)
        gn = jnp.linalg.norm(g)
        lam = jnp.linalg.eigvalsh(jax.hessian(loss)(x))[-1]
        return x - 0.05 * g / gn, (loss(x), gn, lam)

    x, (losses, gnorms, lams) = jax.lax.scan(step, jnp.array([3.0, -1.0]), None, length=300)
    np.testing.assert_allclose(m["loss"], losses, rtol=1e-12)
    np.testing.assert_allclose(m["grad_norm"], gnorms, rtol=1e-12)
    np.testing.assert_allclose(m["eff_lr"], 0.05 / gnorms, rtol=1e-10)
    np.testing.assert_allclose(m["lambda_1"], lams, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(record.params), np.asarray(x), rtol=1e-10)
    np.testing.assert_allclose(m["eta_lambda"], m["eff_lr"] * m["lambda_1"], rtol=1e-12)
    run = load_run(tmp_path / "r")
    assert run.config["optimizer"] == "normalized_gd"
    assert run.metadata["dtype"] == "float64" and run.metadata["seed"] == 0
    assert run.status["state"] == "completed"


def test_adam_warmup_then_normalized_gd_matches_hand_computed_steps(tmp_path):
    config = _toy(optimizer="normalized_gd", lr=0.05, steps=60, warmup_steps=20,
                  warmup_optimizer="adam", warmup_lr=0.1, eig_every=None)
    record = run_experiment(config, tmp_path / "r")
    # by hand: Adam's textbook update (b1 0.9, b2 0.999, eps 1e-8) for 20 steps, then NGD
    loss = lambda z: (1 + z[0] ** 2) * z[1] ** 2
    x, m1, m2, losses = np.array([3.0, -1.0]), np.zeros(2), np.zeros(2), []
    for t in range(60):
        losses.append(float(loss(x)))
        g = np.asarray(jax.grad(loss)(jnp.asarray(x)))
        if t < 20:
            m1, m2 = 0.9 * m1 + 0.1 * g, 0.999 * m2 + 0.001 * g * g
            mh, vh = m1 / (1 - 0.9 ** (t + 1)), m2 / (1 - 0.999 ** (t + 1))
            x = x - 0.1 * mh / (np.sqrt(vh) + 1e-8)
        else:
            x = x - 0.05 * g / np.linalg.norm(g)
    np.testing.assert_allclose(record.metrics["loss"], losses, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(record.params), x, rtol=1e-10)
    assert load_run(tmp_path / "r").config["warmup_optimizer"] == "adam"


def test_eig_every_and_user_metrics(tmp_path):
    config = _toy(optimizer="gd", lr=0.01, steps=50, eig_every=5)

    def extra(params, row):
        return {"x_coord": params[0], "double_loss": 2 * row["loss"]}

    m = run_experiment(config, tmp_path / "r", metrics_fn=extra).metrics
    measured = np.isfinite(m["lambda_1"])
    np.testing.assert_array_equal(measured, m["step"] % 5 == 0)
    assert np.all(m["eig_matvecs"][~measured] == 0)
    np.testing.assert_allclose(m["double_loss"], 2 * m["loss"])
    assert np.all(np.diff(m["x_coord"]) != 0)


def test_divergence_stops_keeps_data_and_names_the_step(tmp_path):
    # L = x^T diag(2, 1, 0.5) x / 2 with lr 1.5: the top mode grows by |1 - 3| = 2 per step
    config = _toy(problem="quadratic", x0=None, optimizer="gd", lr=1.5, steps=1000)
    record = run_experiment(config, tmp_path / "r")
    assert record.status == "diverged" and not record.ok
    m = record.metrics
    stop = int(np.flatnonzero(m["stop_reason"] > 0)[0])
    assert stop == len(m["step"]) - 1  # rows up to and including the stopping step
    assert f"step {int(m['step'][stop])}" in record.message and "loss" in record.message
    assert load_run(tmp_path / "r").status["state"] == "diverged"
    assert np.all(np.isfinite(np.asarray(record.params)))  # the state before the blow-up


def test_loss_goal_stops(tmp_path):
    config = _toy(optimizer="gd", lr=0.01, steps=5000, loss_goal=1e-3)
    record = run_experiment(config, tmp_path / "r")
    assert record.status == "goal_reached"
    loss = record.metrics["loss"]
    assert loss[-1] <= 1e-3 < loss[-2]


def test_nan_initial_params_fail_before_any_step(tmp_path):
    loss = lambda z: jnp.sum(z**2)
    bad = Problem(loss, jnp.array([1.0, jnp.nan]))
    with pytest.raises(ValueError, match="params: the initial parameters contain nan"):
        run_experiment(_toy(steps=10), tmp_path / "r", problem=bad)
    assert not (tmp_path / "r" / "metrics").exists()


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_problems_are_refused_in_one_line(tmp_path, dtype):
    """The runner trains in float32 or float64; a caller's half-precision Problem used to
    fail deep in its compiled step (float32 eigenvalues against float16 placeholders)."""
    half = Problem(lambda z: jnp.sum(z**2), jnp.array([1.0, 2.0], dtype))
    with pytest.raises(ConfigError, match=f"dtype: the problem's params are "
                                          f"{jnp.dtype(dtype).name}"):
        run_experiment(_toy(steps=10), tmp_path / "r", problem=half)
    assert not (tmp_path / "r" / "metrics").exists()


def test_existing_run_is_never_overwritten_silently(tmp_path):
    config = _toy(steps=20, eig_every=None)
    run_experiment(config, tmp_path / "r")
    with pytest.raises(RunDirError, match=r"--resume .* or --overwrite"):
        run_experiment(config, tmp_path / "r")
    run_experiment(config, tmp_path / "r", overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="already exists"):
        run_experiment(config, tmp_path / "other")
    with pytest.raises(RunDirError, match="not an eosflow run"):
        run_experiment(config, tmp_path / "other", overwrite=True)
    assert (tmp_path / "other" / "notes.txt").exists()
    with pytest.raises(ConfigError, match="lr: differs"):
        run_experiment(config.replace(lr=0.2), tmp_path / "r", resume=True)


def test_vmapped_sweep_matches_single_runs(tmp_path):
    lrs = [0.02, 0.05, 0.1]
    config = _toy(optimizer="normalized_gd", steps=200, eig_every=10)
    sweep = run_experiment(config, tmp_path / "s", sweep={"lr": lrs})
    assert sweep.metrics["loss"].shape == (200, 3)
    for j, lr in enumerate(lrs):
        single = run_experiment(config.replace(lr=lr), tmp_path / f"r{j}").metrics
        np.testing.assert_allclose(sweep.metrics["loss"][:, j], single["loss"], rtol=1e-9)
        np.testing.assert_allclose(sweep.metrics["lambda_1"][::10, j], single["lambda_1"][::10],
                                   rtol=1e-9)
    assert load_run(tmp_path / "s").sweep == {"lr": lrs}
    with pytest.raises(ConfigError, match="widths: cannot be swept"):
        run_experiment(config, tmp_path / "bad", sweep={"widths": [1, 2]})


def test_progress_off_is_silent_and_on_a_file_is_plain_lines(tmp_path, capsys):
    run_experiment(_toy(steps=30, eig_every=None), tmp_path / "a", progress=False)
    assert capsys.readouterr().err == ""
    run_experiment(_toy(steps=30), tmp_path / "b")  # stderr is not a terminal here
    err = capsys.readouterr().err
    assert "toy: compiling the 30-step chunk..." in err and "compiled in" in err
    assert "steps/s" in err and "λ1" in err and "ηλ1" in err and "30/30" in err
    assert "\r" not in err


# --- crash safety ---------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys
    from eosflow.experiments import Config, run_experiment
    import os, jax
    cache = os.environ.get("EOSFLOW_CACHE_DIR", "off")
    if cache.lower() not in ("off", "0", "none", ""):  # the session's compilation cache
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    from tests.experiments.test_runner import KILL_CONFIG
    c = Config(**KILL_CONFIG)
    run_experiment(c, sys.argv[1], resume=sys.argv[2] == "1")
    """
)
# small chunks so that the run spends its time in many chunk boundaries (writes, renames):
# 100 of them, five kills spread over the run
KILL_CONFIG = dict(name="k", problem="toy_a", dataset="none", optimizer="normalized_gd",
                   lr=0.05, x0=(3.0, -1.0), dtype="float64", steps=1000, chunk_steps=10,
                   checkpoint_every=20, eig_every=1)


def _max_chunk(run: Path) -> int:
    files = sorted((run / "metrics").glob("*.npz")) if (run / "metrics").exists() else []
    return int(files[-1].stem) if files else -1


@pytest.mark.slow  # ~36 s of subprocesses (CI's 15 minutes); kills at every write point
# of the run store are checked in CI in-process: tests/runner/test_store.py, test_signals.py
@pytest.mark.parametrize("kill_after", [[10, 170, 370, 580, 780]])
def test_sigkill_at_many_points_then_resume_is_bit_identical(tmp_path, kill_after):
    run = tmp_path / "killed"
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    resume = "0"
    kills = 0
    for target in kill_after:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(run), resume], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while proc.poll() is None and _max_chunk(run) < target and time.time() < deadline:
            time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        else:
            assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
        resume = "1"
    assert kills >= 5
    final = subprocess.run([sys.executable, "-c", _CHILD, str(run), "1"], env=env,
                           capture_output=True, timeout=300)
    assert final.returncode == 0, final.stderr.decode()[-2000:]

    c = Config(**KILL_CONFIG)
    straight = run_experiment(c, tmp_path / "straight")
    resumed = load_run(run)
    np.testing.assert_array_equal(resumed.metrics["step"], np.arange(1000))  # none lost or twice
    for k, v in straight.metrics.items():
        np.testing.assert_array_equal(resumed.metrics[k], v, err_msg=k)
    from eosflow.problems import build_problem
    from eosflow.runner import Program, load_checkpoint

    eng = Program(c, build_problem(c), None, None, None)
    a, _ = load_checkpoint(run, eng.initial_state())
    b, _ = load_checkpoint(tmp_path / "straight", eng.initial_state())
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert len(resumed.status["resumed_at"]) >= 5
    with pytest.raises(AttributeError, match="immutable once built: cannot set 'config'"):
        eng.config = c.replace(lr=1.0)  # what it compiled stays what it was built from


def test_normalized_gd_measures_sharpness_in_consecutive_pairs(tmp_path):
    record = run_experiment(_toy(optimizer="normalized_gd", lr=0.05, steps=30, eig_every=10),
                            tmp_path / "p")
    measured = np.flatnonzero(np.isfinite(record.metrics["lambda_1"]))
    np.testing.assert_array_equal(measured, [0, 1, 10, 11, 20, 21])
    gd = run_experiment(_toy(optimizer="gd", lr=0.05, steps=30, eig_every=10), tmp_path / "g")
    np.testing.assert_array_equal(np.flatnonzero(np.isfinite(gd.metrics["lambda_1"])),
                                  [0, 10, 20])


def test_reprojection_prediction_starts_within_the_phase_one_distance(tmp_path, capfd):
    from eosflow.analysis import headline, prediction_comparison, prediction_line
    from eosflow.experiments import load_run

    from .conftest import solve_potential, toy_a_flow

    eta, warm, steps = 0.05, 50, 450
    config = _toy(optimizer="normalized_gd", lr=eta, steps=steps, warmup_steps=warm,
                  warmup_lr=0.02, reproject_steps=40, chunk_steps=100, eig_every=10,
                  phi_every=200)
    run_experiment(config, tmp_path / "r")
    run = load_run(tmp_path / "r")
    # the first boundary after the warm-up whose last measured pair is within 1.5 eta of Γ
    start = run.status["prediction"]["start_step"]
    assert run.status["prediction"]["status"] == "ok" and start == 100
    pred = np.load(tmp_path / "r" / "prediction.npz")
    assert str(pred["method"]) == "reprojection:normalized_gd" and "X" not in pred.files
    assert int(pred["start_step"]) == start
    np.testing.assert_allclose(pred["tau"], np.linspace(0, eta**2 * (steps - start), 41))
    np.testing.assert_allclose(run.prediction["tau"], pred["tau"])
    # the oracle: GD, then normalized GD by hand to the start, Phi in closed form (gradient
    # flow on toy A conserves ln|x| + x^2/2 - y^2/2), then the closed-form NGD flow on tau
    x, y = 3.0, -1.0
    for _ in range(warm):
        x, y = x - 0.02 * 2 * x * y * y, y - 0.02 * 2 * (1 + x * x) * y
    at = {}
    for t in range(warm, steps):
        at[t] = (x, y)
        gx, gy = 2 * x * y * y, 2 * (1 + x * x) * y
        norm = np.hypot(gx, gy)
        x, y = x - eta * gx / norm, y - eta * gy / norm
    at[steps] = (x, y)
    def phi(x, y):  # the closed form of Phi on toy A: the flow's invariant at y = 0
        return solve_potential(np.log(x) + x * x / 2 - y * y / 2)

    X0 = phi(*at[start])
    lam = 2 * (1 + toy_a_flow(X0, pred["tau"]) ** 2)
    np.testing.assert_allclose(pred["lambda_1"], lam, rtol=2e-3)  # O(h) re-projection steps
    assert pred["lambda_1"][-1] < 0.95 * pred["lambda_1"][0]  # the flow moves: lambda1 falls
    # lambda1 at Phi(x_t) every phi_every steps from the start and at the end, on Gamma
    checks = run.phi
    np.testing.assert_array_equal(checks["step"], [300, steps])
    phis = np.array([phi(*at[t]) for t in checks["step"]])
    np.testing.assert_allclose(checks["lambda_phi"], 2 * (1 + phis**2), rtol=1e-6)
    dist = [np.hypot(at[t][0] - X, at[t][1]) for t, X in zip(checks["step"], phis, strict=True)]
    np.testing.assert_allclose(checks["phi_dist"], dist, rtol=1e-5,
                               atol=1e-9)  # Phi to the flow's gtol 2.5e-9
    # Phi(x_t) follows the flow (Thm 4.3): the run's comparison on Gamma, from the oracle
    tau = eta**2 * (checks["step"] - start)
    ref = np.interp(tau, pred["tau"], pred["lambda_1"])
    gap = np.max(np.abs(2 * (1 + phis**2) - ref) / ref)
    cmp = prediction_comparison(run)
    np.testing.assert_allclose(cmp["phi_max_rel_gap"], gap, rtol=1e-4)
    assert cmp["phi_num_compared"] == 2 and gap < 5e-3
    # the progress report says what the run is doing between chunks, and how it ended
    err = capfd.readouterr().err
    assert "step 100: computing the re-projection prediction (40 steps)..." in err
    assert "prediction ok in " in err
    assert f"step 300: lambda_1 at Phi(x_t) = {float(checks['lambda_phi'][0]):.4g}" in err
    assert "40 steps" in run.metadata["prediction"] and "h/256" in run.metadata["prediction"]
    # the step control's cost is counted, per step in the file and in all in the status
    entry = run.status["prediction"]
    assert pred["substeps"].shape == pred["tau"].shape and pred["substeps"][0] == 0
    assert entry["substeps"] == pred["substeps"].sum() and entry["unresolved"] == 0
    assert f"; {entry['substeps']} re-projection substeps" in prediction_line(headline(run))


def test_a_run_that_never_comes_within_the_phase_one_distance_says_so(tmp_path):
    from eosflow.analysis import headline, prediction_line
    from eosflow.experiments import load_run

    # the first boundary after the warm-up is the run's end: no start, said everywhere
    config = _toy(optimizer="normalized_gd", lr=0.05, steps=100, warmup_steps=50,
                  warmup_lr=0.02, reproject_steps=4, phi_every=50, chunk_steps=100,
                  eig_every=10)
    run_experiment(config, tmp_path / "r")
    run = load_run(tmp_path / "r")
    entry = run.status["prediction"]
    assert entry["status"] == "failed" and entry["start_step"] is None
    assert entry["reason"].startswith("not computed: the run never came within the phase-I")
    assert run.prediction is None and run.prediction_error == entry["reason"]
    assert run.phi is None  # no prediction, nothing to check it against
    assert prediction_line(headline(run)) == f"prediction: FAILED: {entry['reason']}"


def test_start_on_gamma_moves_the_warm_up_end_once_and_resumes_bit_for_bit(tmp_path,
                                                                          monkeypatch):
    """start_on_gamma: at the warm-up's end x_w moves to Phi(x_w) + (eta/2) v1 (toy A: Phi in
    closed form, v1 = e_y), the prediction starts there, and NGD is in the symmetric two-step
    cycle from its first step. A run stopped by a signal right after the move resumes from
    the moved checkpoint without moving again, bit for bit."""
    from eosflow.analysis import flow_figure, headline, prediction_line
    from eosflow.runner import Program

    from .conftest import solve_potential

    eta, warm = 0.05, 20
    config = _toy(optimizer="normalized_gd", lr=eta, steps=60, warmup_steps=warm,
                  warmup_lr=0.02, reproject_steps=2, chunk_steps=20, eig_every=10,
                  start_on_gamma=True)
    straight = run_experiment(config, tmp_path / "a")
    x, y = 3.0, -1.0
    for _ in range(warm):
        x, y = x - 0.02 * 2 * x * y * y, y - 0.02 * 2 * (1 + x * x) * y
    u = solve_potential(np.log(x) + x * x / 2 - y * y / 2)
    run = load_run(tmp_path / "a")
    entry = run.status["start_on_gamma"]
    assert entry["status"] == "ok" and entry["step"] == warm
    np.testing.assert_allclose([entry["lambda_1"], entry["half_width"], entry["phi_dist"]],
                               [2 * (1 + u * u), eta / 2, np.hypot(x - u, y)], rtol=1e-6)
    # the row of step w is the moved iterate's: (u, -eta/2), loss (1 + u^2) eta^2 / 4
    loss = straight.metrics["loss"]
    np.testing.assert_allclose(loss[warm], (1 + u * u) * eta**2 / 4, rtol=1e-8)
    # the symmetric cycle across Γ from the first step: the loss stays at that of +-eta/2
    np.testing.assert_allclose(loss[warm:warm + 10], loss[warm], rtol=0.02)
    assert run.status["prediction"]["status"] == "ok"
    assert run.status["prediction"]["start_step"] == warm
    # from the moved iterate: Phi(u, -eta/2), O(eta^2) along Γ from (u, 0)
    u1 = solve_potential(np.log(u) + u * u / 2 - eta**2 / 8)
    np.testing.assert_allclose(run.prediction["lambda_1"][0], 2 * (1 + u1 * u1), rtol=1e-6)
    assert "(x_w moved onto Γ there" in prediction_line(headline(run))
    labels = [ln.get_label() for ln in flow_figure(run).axes[0].get_lines()]
    assert f"prediction starts (step {warm}, iterate moved onto Γ)" in labels
    assert "start_on_gamma" in run.metadata and "cycle_start" in run.metadata["start_on_gamma"]

    calls = []
    real = Program.start_on_gamma

    def stop_after_the_move(self, state, step):
        calls.append(step)
        moved = real(self, state, step)
        os.kill(os.getpid(), signal.SIGTERM)  # the run stops at this boundary
        return moved

    monkeypatch.setattr(Program, "start_on_gamma", stop_after_the_move)
    stopped = run_experiment(config, tmp_path / "b")
    assert stopped.status == "interrupted" and load_run(tmp_path / "b").status["step"] == warm
    # as if killed between the checkpoint at w and its status.json: the checkpoint says moved
    status = json.loads((tmp_path / "b" / "status.json").read_text())
    del status["start_on_gamma"], status["prediction"]
    (tmp_path / "b" / "status.json").write_text(json.dumps(status))
    resumed = run_experiment(config, tmp_path / "b", resume=True)
    assert resumed.status == "completed" and calls == [warm]  # moved once
    again = load_run(tmp_path / "b")
    assert again.status["start_on_gamma"]["status"] == "ok"
    assert again.status["prediction"]["start_step"] == warm  # from the moved checkpoint
    np.testing.assert_array_equal(again.prediction["lambda_1"], run.prediction["lambda_1"])
    for k, v in straight.metrics.items():
        np.testing.assert_array_equal(resumed.metrics[k], v, err_msg=k)
    # a second signal (KeyboardInterrupt) during the prediction: the moved state was
    # checkpointed before it, so the resume starts there and computes the prediction
    monkeypatch.setattr(Program, "start_on_gamma", real)
    predict = Program.write_reprojection

    def interrupted_once(self, *args, **kwargs):
        monkeypatch.setattr(Program, "write_reprojection", predict)
        raise KeyboardInterrupt

    monkeypatch.setattr(Program, "write_reprojection", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, tmp_path / "c")
    status = json.loads((tmp_path / "c" / "status.json").read_text())
    assert status["start_on_gamma"]["status"] == "ok" and status["step"] == warm
    assert "prediction" not in status
    resumed = run_experiment(config, tmp_path / "c", resume=True)
    for k, v in straight.metrics.items():
        np.testing.assert_array_equal(resumed.metrics[k], v, err_msg=k)
    np.testing.assert_array_equal(load_run(tmp_path / "c").prediction["lambda_1"],
                                  run.prediction["lambda_1"])


def test_start_on_gamma_moves_each_sweep_point_by_its_own_half_width(tmp_path):
    """A sweep over lr: every point's x_w (the same GD warm-up) moves to (u, -eta_i/2)."""
    from .conftest import solve_potential

    etas, warm = [0.05, 0.02], 20
    config = _toy(optimizer="normalized_gd", lr=etas[0], steps=40, warmup_steps=warm,
                  warmup_lr=0.02, chunk_steps=20, eig_every=None, start_on_gamma=True)
    record = run_experiment(config, tmp_path / "r", sweep={"lr": etas})
    x, y = 3.0, -1.0
    for _ in range(warm):
        x, y = x - 0.02 * 2 * x * y * y, y - 0.02 * 2 * (1 + x * x) * y
    u = solve_potential(np.log(x) + x * x / 2 - y * y / 2)
    np.testing.assert_allclose(record.metrics["loss"][warm],
                               (1 + u * u) * np.square(etas) / 4, rtol=1e-6)  # Phi to gtol
    entry = load_run(tmp_path / "r").status["start_on_gamma"]
    np.testing.assert_allclose(entry["half_width"], np.array(etas) / 2, rtol=1e-8)


def test_a_failed_start_on_gamma_leaves_the_iterate_and_says_so(tmp_path):
    """A projection that cannot reach its gtol: x_w is kept, the prediction waits for the
    phase-I distance as without the option, and the summary line says why."""
    from eosflow.analysis import headline, prediction_line

    config = _toy(optimizer="normalized_gd", lr=0.05, steps=40, warmup_steps=20,
                  warmup_lr=0.02, chunk_steps=20, eig_every=10, reproject_steps=2,
                  start_on_gamma=True, phi_gtol=1e-300)
    moved = run_experiment(config, tmp_path / "a").metrics["loss"]
    kept = run_experiment(config.replace(start_on_gamma=False), tmp_path / "b").metrics["loss"]
    np.testing.assert_array_equal(moved, kept)
    run = load_run(tmp_path / "a")
    entry = run.status["start_on_gamma"]
    assert entry["status"] == "failed" and entry["reason"].startswith("Phi(x_20) did not")
    # not started at the warm-up's end as a moved run's would be: by the phase-I rule
    assert run.status["prediction"]["start_step"] != 20
    assert prediction_line(headline(run)).startswith(
        f"prediction: start on Γ FAILED: {entry['reason']}; ")
    # a run that stopped during its warm-up (here at its loss goal) is not moved
    stopped = run_experiment(config.replace(loss_goal=1e9, phi_gtol=None), tmp_path / "c")
    assert stopped.status == "goal_reached"
    entry = load_run(tmp_path / "c").status["start_on_gamma"]
    assert entry["status"] == "failed" and entry["reason"].startswith("the run had stopped")


def test_start_on_gamma_needs_a_warm_up_and_a_flow_optimizer():
    with pytest.raises(ConfigError, match="start_on_gamma: moves the warm-up's last iterate"):
        _toy(optimizer="normalized_gd", start_on_gamma=True)
    with pytest.raises(ConfigError, match="start_on_gamma: places the two-step cycle of"):
        _toy(optimizer="gd", warmup_steps=10, steps=20, start_on_gamma=True)
    moved = dict(optimizer="normalized_gd", warmup_steps=10, steps=20, start_on_gamma=True)
    with pytest.raises(ConfigError, match="start_on_gamma: Γ and its two-step cycle are the "
                       "full-batch"):
        Config(name="r", **moved, batch_size=8)
    with pytest.raises(ConfigError, match="warmup_steps: must be a multiple of record_every"):
        _toy(**moved, record_every=4, chunk_steps=20)


def test_reprojection_needs_a_flow_optimizer():
    with pytest.raises(ConfigError, match="reproject_steps: the re-projection flow predicts"):
        _toy(optimizer="gd", reproject_steps=10)


def test_a_run_written_before_a_field_existed_resumes(tmp_path):
    import json

    config = _toy(optimizer="normalized_gd", lr=0.05, steps=200, eig_every=None)
    whole = run_experiment(config, tmp_path / "whole")
    run_experiment(config.replace(steps=100), tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    saved = json.loads(path.read_text())
    del saved["reproject_steps"], saved["warmup_optimizer"]  # as an older eosflow wrote it
    saved["steps"] = 200  # a run stopped halfway
    path.write_text(json.dumps(saved))
    (tmp_path / "old" / "status.json").write_text(json.dumps({"state": "running", "step": 100}))
    record = run_experiment(config, tmp_path / "old", resume=True)
    assert record.status == "completed"
    np.testing.assert_array_equal(np.asarray(record.params), np.asarray(whole.params))
    with pytest.raises(ConfigError, match="lr: differs"):  # what differs still refuses
        run_experiment(config.replace(lr=0.1), tmp_path / "old", resume=True)


def test_density_at_chunk_boundaries(tmp_path):
    from eosflow.experiments import preset_config

    config = preset_config("tiny", {"density_at": (0, 20), "eig_every": 1})
    record = run_experiment(config, tmp_path / "d")
    lam = record.metrics["lambda_1"]
    for step in (0, 20):
        z = np.load(tmp_path / "d" / "density" / f"{step:012d}.npz")
        assert int(z["step"]) == step and int(z["dim"]) == 64 * 16 + 16 + 16 * 10 + 10
        np.testing.assert_allclose(z["weights"].sum(axis=-1), 1.0, rtol=1e-4)  # per probe
        # the largest Ritz value of 60 Lanczos steps is lambda1, which the runner's
        # eigen-solver measured independently at the same step
        np.testing.assert_allclose(z["nodes"].max(), lam[step], rtol=1e-3)


def test_predictions_of_a_float32_run_are_computed_in_prediction_dtype(tmp_path):
    """A float32 run's re-projection flow and Phi(x_t) checks run in float64 by default: the
    projections reach float64's default |grad L| of 2.5e-9, which float32 (epsilon 1.2e-7)
    cannot; prediction_dtype="float32" keeps them in the run's dtype."""
    base = dict(optimizer="normalized_gd", lr=0.05, steps=300, warmup_steps=50, warmup_lr=0.02,
                reproject_steps=10, chunk_steps=100, eig_every=10, phi_every=100,
                dtype="float32")
    wide = run_experiment(_toy(**base), tmp_path / "wide")
    assert wide.status == "completed" and wide.config.prediction_dtype == "float64"
    from eosflow.experiments import load_run

    run = load_run(tmp_path / "wide")
    assert run.prediction is not None and np.all(run.phi["grad_norm"] <= 2.5e-9)
    assert np.max(run.prediction["grad_norm"]) <= 2.5e-9
    run_experiment(_toy(**base, prediction_dtype="float32"), tmp_path / "narrow")
    narrow = load_run(tmp_path / "narrow")
    assert np.all(narrow.phi["grad_norm"] > 2.5e-9)  # float32's own floor and default gtol
