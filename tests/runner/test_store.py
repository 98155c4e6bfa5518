"""The run directory cannot be fooled: one process per folder, a start resumable from its
first byte, files that disagree refused naming the file (or repaired exactly), extensions
equal to one long run, errors inside the compiled loop and divergence recorded with the step."""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from eosflow import load_run, run_experiment
from eosflow.optim import BELOW_LOSS_MIN
from eosflow.problems import build_problem
from eosflow.runner import CHECKPOINT, Config, ConfigError, Program, RunDirError, load_checkpoint

TOY = dict(name="t", problem="toy_a", dataset="none", dtype="float64", x0=(3.0, -1.0),
           optimizer="normalized_gd", lr=0.05, steps=40, chunk_steps=10, checkpoint_every=20,
           eig_every=None)
ROOT = Path(__file__).resolve().parents[2]


def _toy(**kw) -> Config:
    return Config(**{**TOY, **kw})


def assert_same_run(a: Path, b: Path, config: Config) -> None:
    """Metrics and final checkpoint identical, bit for bit."""
    ma, mb = load_run(a).metrics, load_run(b).metrics
    assert sorted(ma) == sorted(mb)
    for k in ma:
        np.testing.assert_array_equal(ma[k], mb[k], err_msg=k)
    like = Program(config, build_problem(config), None, None, None).initial_state()
    sa, _ = load_checkpoint(a, like)
    sb, _ = load_checkpoint(b, like)
    for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted 40-step run every other is compared with."""
    out = tmp_path_factory.mktemp("straight") / "r"
    run_experiment(_toy(), out, progress=False)
    return out


# --- extension -----------------------------------------------------------------------------


def test_extending_a_finished_run_equals_one_long_run(tmp_path):
    config = _toy(eig_every=5)
    short = run_experiment(config.replace(steps=20), tmp_path / "x", progress=False)
    assert short.status == "completed"
    longer = run_experiment(config, tmp_path / "x", resume=True, progress=False)
    assert longer.status == "completed" and longer.steps_done == 40
    assert any("extending from 20 to 40" in n for n in longer.notes)
    run_experiment(config, tmp_path / "one", progress=False)
    assert_same_run(tmp_path / "x", tmp_path / "one", config)
    run = load_run(tmp_path / "x")
    assert run.config["steps"] == 40 and run.status["state"] == "completed"
    assert run.metadata["extensions"] == [
        {**run.metadata["extensions"][0], "from_steps": 20, "to_steps": 40, "at_step": 20}]
    # steps is the one field that may change; below the step reached it cannot
    with pytest.raises(ConfigError, match=r"steps: 30 is below the step the run has reached"):
        run_experiment(config.replace(steps=30), tmp_path / "x", resume=True)
    with pytest.raises(ConfigError, match="lr: differs"):
        run_experiment(config.replace(lr=0.1, steps=60), tmp_path / "x", resume=True)


# --- the lock --------------------------------------------------------------------------------

_HOLD = textwrap.dedent("""
    import sys, time
    from eosflow.runner import claim
    lock = claim(sys.argv[1])
    print("claimed", flush=True)
    time.sleep(60)
""")


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu",
                PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT),
                                            os.environ.get("PYTHONPATH", "")]))


def test_a_second_process_on_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "r"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        host = socket.gethostname()
        with pytest.raises(RunDirError, match=f"in use by process {holder.pid} on {host}"):
            run_experiment(_toy(), out)
        with pytest.raises(RunDirError, match=f"in use by process {holder.pid}"):
            run_experiment(_toy(), out, overwrite=True)
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written by us
    finally:
        holder.kill()
        holder.wait()
    # its process is gone: the lock is stale and taken over, with a note saying so
    record = run_experiment(_toy(), out, progress=False)
    assert record.status == "completed"
    assert any(f"took over the lock of process {holder.pid}" in n for n in record.notes)
    assert not (out / ".lock").exists()  # released at the end


def test_two_concurrent_runs_the_second_refused_the_first_intact(tmp_path, straight):
    out = tmp_path / "r"
    child = textwrap.dedent(f"""
        import sys
        from eosflow import run_experiment
        from eosflow.runner import Config
        print(run_experiment(Config(**{TOY!r}), sys.argv[1]).status)
    """)
    first = subprocess.Popen([sys.executable, "-c", child, str(out)], env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / ".lock").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    try:
        with pytest.raises(RunDirError, match=f"in use by process {first.pid}"):
            run_experiment(_toy(lr=0.1), out)
    finally:
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-2000:]
    assert stdout.strip() == "completed"
    assert_same_run(out, straight, _toy())


# --- a kill at every write point --------------------------------------------------------------

# the 40-step toy run writes, in order: config, metadata, checkpoint 0, status, metrics 0,
# metrics 10, checkpoint 20, status, metrics 20, metrics 30, checkpoint 40, status, status
WRITES = 13
_KILLED = textwrap.dedent(f"""
    import sys
    from eosflow import run_experiment
    from eosflow.runner import Config
    run_experiment(Config(**{TOY!r}), sys.argv[1], resume=sys.argv[2] == "1")
""")
FAST = {(1, "renamed"), (2, "renamed"), (3, "renamed"), (5, "renamed"), (7, "renamed"),
        (3, "temp")}
KILLS = [pytest.param(n, phase, marks=() if (n, phase) in FAST else pytest.mark.slow)
         for phase in ("renamed", "temp") for n in range(1, WRITES + 1)]


@pytest.mark.parametrize(("at", "phase"), KILLS)
def test_a_kill_at_any_write_resumes_bit_for_bit(tmp_path, straight, at, phase):
    out = tmp_path / "r"
    env = dict(_env(), EOSFLOW_TEST_EXIT_AT_WRITE=str(at), EOSFLOW_TEST_EXIT_PHASE=phase)
    proc = subprocess.run([sys.executable, "-c", _KILLED, str(out), "0"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 137, proc.stderr[-2000:]
    assert (out / ".lock").exists()  # as a kill -9 leaves it
    record = run_experiment(_toy(), out, resume=True, progress=False)
    assert record.status == "completed"
    assert any("took over the lock" in n for n in record.notes)
    if at <= 2:  # killed before the step-0 checkpoint: a restart that says so
        assert any("from step 0" in n for n in record.notes)
    assert not list(out.rglob("*.tmp"))
    assert_same_run(out, straight, _toy())


def test_a_failed_write_stops_the_run_and_what_was_written_resumes(tmp_path, straight,
                                                                    monkeypatch):
    """Chunk files are written on a background thread while the next chunk computes: a
    write that fails (a full disk) stops the run one chunk later with that error, the later
    writes are dropped (no checkpoint claims rows that are not on disk), and the folder
    resumes to the same run."""
    from eosflow.runner import _store as rd

    real, calls = rd.write_metrics_chunk, []

    def full_disk(run, start, columns):
        calls.append(start)
        if start == 20:
            raise OSError(28, "No space left on device")
        real(run, start, columns)

    monkeypatch.setattr(rd, "write_metrics_chunk", full_disk)
    out, config = tmp_path / "r", _toy(checkpoint_every=10)
    with pytest.raises(OSError, match="No space left"):
        run_experiment(config, out, progress=False)
    monkeypatch.undo()
    assert calls == [0, 10, 20]
    assert [s for s, _ in rd.metric_files(out)] == [0, 10]
    # the step-30 checkpoint, submitted after the failed write, was dropped
    assert rd.checkpoint_info(out)["step"] == 20
    assert json.loads((out / "status.json").read_text())["step"] == 20
    record = run_experiment(config, out, resume=True, progress=False)
    assert record.status == "completed"
    assert_same_run(out, straight, config)


def test_a_folder_with_only_a_stale_lock_is_a_fresh_start(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (out / ".lock").write_text(json.dumps({"pid": int(dead), "host": socket.gethostname()}))
    (out / ".config.json.abc.tmp").write_text("{")
    record = run_experiment(_toy(steps=10), out, progress=False)
    assert record.status == "completed" and not (out / ".config.json.abc.tmp").exists()


# --- tampered folders -------------------------------------------------------------------


def _stopped_at_20(src: Path, dst: Path) -> Path:
    """A copy of a 40-step run as a kill right after its step-20 checkpoint leaves it."""
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def halfway(tmp_path_factory):
    """A 40-step run stopped (as by a kill) after its step-20 checkpoint and metrics 20..29."""
    out = tmp_path_factory.mktemp("half") / "r"
    env = dict(_env(), EOSFLOW_TEST_EXIT_AT_WRITE="9")  # after metrics 20 is renamed
    proc = subprocess.run([sys.executable, "-c", _KILLED, str(out), "0"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 137, proc.stderr[-2000:]
    (out / ".lock").unlink()
    return out


def _edit_json(path: Path, **changes):
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


def _later_checkpoint(run: Path, straight: Path):
    shutil.copy(straight / CHECKPOINT, run / CHECKPOINT)


def _overlap(run: Path, straight: Path):
    with np.load(run / "metrics" / "000000000010.npz") as z:
        cols = {k: z[k] for k in z.files}
    cols["step"] = cols["step"] - 5
    np.savez(run / "metrics" / "000000000005.npz", **cols)


def _truncate(path: Path, size: int):
    data = path.read_bytes()
    path.write_bytes(data[:size])


TAMPER = {
    "deleted metrics chunk": (lambda r, s: (r / "metrics" / "000000000010.npz").unlink(),
                              r"metrics: steps 10\.\.19 are missing"),
    "overlapping chunk": (_overlap, r"000000000005\.npz starts at step 5, inside"),
    "missing metrics/": (lambda r, s: shutil.rmtree(r / "metrics"),
                         r"checkpoint\.npz is at step 20 but the metrics in .*metrics end at"),
    "checkpoint from a later step": (_later_checkpoint,
                                     r"checkpoint\.npz is at step 40 but the metrics"),
    "hand-edited lr": (lambda r, s: _edit_json(r / "config.json", lr=0.2),
                       r"config\.json: lr is 0\.2 but checkpoint\.npz was written with lr = 0\.05"),
    "truncated checkpoint": (lambda r, s: _truncate(r / CHECKPOINT, 100),
                             r"checkpoint\.npz is damaged"),
    "empty checkpoint": (lambda r, s: _truncate(r / CHECKPOINT, 0), r"checkpoint\.npz is damaged"),
    "truncated metrics chunk": (lambda r, s: _truncate(r / "metrics" / "000000000000.npz", 50),
                                r"000000000000\.npz is damaged"),
    "deleted metadata": (lambda r, s: (r / "metadata.json").unlink(),
                         r"metadata\.json is missing"),
}


@pytest.mark.parametrize("case", list(TAMPER))
def test_a_tampered_folder_is_refused_naming_the_file(tmp_path, halfway, straight, case):
    tamper, message = TAMPER[case]
    run = _stopped_at_20(halfway, tmp_path / "r")
    tamper(run, straight)
    config = _toy(lr=0.2) if case == "hand-edited lr" else _toy()  # as `resume` reads it
    with pytest.raises(RunDirError, match=message):
        run_experiment(config, run, resume=True, progress=False)
    assert not (run / ".lock").exists()  # released on the way out
    if (run / "config.json").exists():  # and never reported as completed
        try:
            state = load_run(run).status.get("state")
        except RunDirError:
            state = None
        assert state != "completed"


def test_status_claiming_completion_early_is_not_believed(tmp_path, halfway, straight):
    run = _stopped_at_20(halfway, tmp_path / "r")
    _edit_json(run / "status.json", state="completed", step=40)
    shown = load_run(run).status
    assert shown["state"] == "damaged" and shown["claimed_state"] == "completed"
    assert "says completed, but the metrics end at step 30" in shown["message"]
    # resuming trusts the checkpoint, not status.json: metrics after it are dropped and
    # recomputed exactly (a repair that says so)
    record = run_experiment(_toy(), run, resume=True, progress=False)
    assert any("dropped the metric rows after step 19" in n for n in record.notes)
    assert load_run(run).status["state"] == "completed"
    assert_same_run(run, straight, _toy())


def test_leftover_temporaries_are_removed_and_the_run_continues(tmp_path, halfway, straight):
    run = _stopped_at_20(halfway, tmp_path / "r")
    (run / "metrics" / ".000000000030.npz.x1.tmp").write_bytes(b"half")
    record = run_experiment(_toy(), run, resume=True, progress=False)
    assert any("removed temporary files" in n for n in record.notes)
    assert not list(run.rglob("*.tmp"))
    assert_same_run(run, straight, _toy())


# --- errors inside the compiled loop, divergence ------------------------------------------


def test_an_error_inside_the_compiled_loop_ends_the_run_cleanly(tmp_path):
    # a caller's optax transformation with a run-time check (equinox.error_if): GD on
    # sqrt(L - L*) with L* = 100 above the loss fires in step 0, inside the compiled chunk
    from eosflow.optim import sqrt_loss_gd

    record = run_experiment(_toy(steps=20), tmp_path / "r", progress=False,
                            optimizer=sqrt_loss_gd(0.05, loss_min=100.0), edge="sqrt_loss_gd")
    assert record.status == "failed" and not record.ok
    assert "the loss is below loss_min" in record.message and "\n" not in record.message
    assert record.message.startswith("failed in steps 0..9: ")
    status = load_run(tmp_path / "r").status
    assert status["state"] == "failed" and status["message"] == record.message
    assert not (tmp_path / "r" / ".lock").exists()


def test_a_loss_below_loss_min_stops_the_run_at_its_step(tmp_path):
    # L* = 0.5 lies above toy A's minimum value 0: GD on sqrt(L - L*) walks down until the
    # loss falls below 0.5 in a later chunk; the step stops the run there (stop code 4,
    # not the optimizer's host callback, which keeps programs out of the persistent cache)
    config = _toy(optimizer="sqrt_loss_gd", loss_min=0.5, lr=0.05, steps=400, chunk_steps=10,
                  checkpoint_every=None, x0=(1.0, -2.0))
    record = run_experiment(config, tmp_path / "r", progress=False)
    assert record.status == "failed"
    run = load_run(tmp_path / "r")
    loss, steps = run.metrics["loss"], run.metrics["step"]
    stop = int(steps[-1])
    assert stop > 10 and np.all(loss[:-1] >= 0.5) and loss[-1] < 0.5  # every step kept
    np.testing.assert_array_equal(steps, np.arange(stop + 1))
    assert run.status["message"] == f"step {stop}: {BELOW_LOSS_MIN}"
    info = json.loads(bytes(np.load(tmp_path / "r" / CHECKPOINT)["info"]).decode())
    assert info["step"] == run.status["step"]  # checkpointed where it stopped: nothing lost
    # the check is the step's own: no host callback in the compiled program
    prog = Program(config, build_problem(config), None, None, None)
    text = prog.chunk_fn(2).lower(prog.initial_state(), prog.hyper(), prog.data()).as_text()
    assert "callback" not in text.lower()


def test_no_false_divergence_at_a_minimum(tmp_path):
    from eosflow.experiments import preset_config

    # x0 = (1, 0) is on the manifold of minimizers: the initial loss is exactly 0, and
    # normalized GD's first step leaves it at 1e-21 (more than 1000 x 0)
    config = preset_config("toy-a-ngd", {"x0": (1.0, 0.0), "steps": 200})
    record = run_experiment(config, tmp_path / "r", progress=False)
    assert record.metrics["loss"][0] == 0.0
    assert record.status == "completed", record.message


def test_a_diverged_run_says_so_on_resume(tmp_path):
    config = _toy(problem="quadratic", x0=None, optimizer="gd", lr=1.5, steps=1000,
                  chunk_steps=10, checkpoint_every=None)
    record = run_experiment(config, tmp_path / "r", progress=False)
    assert record.status == "diverged"
    stop = int(record.metrics["step"][-1])
    status = load_run(tmp_path / "r").status
    assert status["diverged_at"] == stop and f"step {stop}" in status["message"]
    before = sorted(p.name for p in (tmp_path / "r" / "metrics").iterdir())
    again = run_experiment(config, tmp_path / "r", resume=True, progress=False)
    assert again.status == "diverged" and again.message == record.message
    assert any("already stopped" in n for n in again.notes)
    assert sorted(p.name for p in (tmp_path / "r" / "metrics").iterdir()) == before
    np.testing.assert_array_equal(again.metrics["loss"], record.metrics["loss"])


def test_status_records_the_peak_memory(tmp_path):
    """``status.json["peak_memory"]``: the host's peak resident set size is at least what
    this process held before the run; the device's peak is what its backend reports (CPU
    reports none)."""
    held = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    run_experiment(_toy(), tmp_path / "t", progress=False)
    peak = json.loads((tmp_path / "t" / "status.json").read_text())["peak_memory"]
    assert peak["host_rss"] >= held.nbytes
    if jax.devices()[0].memory_stats() is None:
        assert peak["device"] is None
    else:
        assert peak["device"] > 0


@pytest.mark.parametrize("precision", ["high", "highest"])
def test_matmul_precision_is_scoped_to_the_run_and_recorded(tmp_path, precision):
    """``matmul_precision`` holds while the run traces its programs (TF32 on a GPU would
    otherwise change lambda_1 at the 1e-3 level) and not after; metadata.json records it."""
    seen = []

    def metrics_fn(params, row):
        seen.append(jax.config.jax_default_matmul_precision)
        return {}

    before = jax.config.jax_default_matmul_precision
    run_experiment(_toy(matmul_precision=precision), tmp_path / "t", progress=False,
                   metrics_fn=metrics_fn)
    assert seen and set(seen) == {precision}
    assert jax.config.jax_default_matmul_precision == before
    meta = json.loads((tmp_path / "t" / "metadata.json").read_text())
    assert meta["matmul_precision"].startswith(f"{precision} ")
    with pytest.raises(ConfigError, match="matmul_precision"):
        _toy(matmul_precision="tf32")


def test_host_cpu_is_recorded(tmp_path):
    """metadata.json names the CPU (float32 rounding, and so a run at the edge, depends on
    it): the model and the widest vector extension from /proc/cpuinfo, the platform's own
    answer when there is none."""
    from eosflow.runner._devices import host_cpu

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse4_2 avx "
                    "avx2 fma\n\nprocessor\t: 1\nmodel name\t: other\nflags\t\t: avx512f\n")
    got = host_cpu(str(info))
    assert got.startswith("AMD EPYC 7B13, ") and got.endswith(", avx2"), got
    assert host_cpu(str(tmp_path / "missing")).split(", ")[-1] not in ("avx2", "avx512f")
    run_experiment(_toy(), tmp_path / "t", progress=False)
    meta = json.loads((tmp_path / "t" / "metadata.json").read_text())
    assert meta["host_cpu"] == host_cpu() and meta["host_cpu"] != "unknown"
