"""The progress report: a bar on a terminal, timed plain lines elsewhere, nothing when off."""

import io
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from eosflow.runner import Progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def _stableness():
    return (lambda lam, eff_lr: eff_lr * lam), "ηλ1"


def test_plain_lines_on_a_file_every_interval_and_rate_without_compilation():
    out = io.StringIO()
    bar = Progress(100, stream=out, label="toy", interval=0.05, stableness=_stableness())
    bar.compiling(50)
    time.sleep(0.3)
    bar.compiled(0.3)  # the 0.3 s just spent is compilation, not stepping
    bar.update(50, loss=1.5, lam=10.0, eff_lr=0.2)  # a line: the interval has passed
    rate = bar.rate()
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "toy: compiling the 50-step chunk..."
    assert lines[1] == "toy: compiled in 0.3 s"
    assert lines[2].startswith("toy: step 50/100 (50%), ")
    assert "ETA" in lines[2] and "loss 1.5" in lines[2]
    assert "λ1 10, ηλ1 2.000" in lines[2]
    assert len(lines) == 3  # close() repeats nothing already printed
    assert rate > 50 / 0.3 * 2  # compilation excluded (included it would be < 167 steps/s)
    assert "\r" not in out.getvalue()


def test_lines_are_throttled_and_heartbeats_keep_the_last_measurement():
    out = io.StringIO()
    bar = Progress(1000, stream=out, label="r", interval=3600.0, stableness=_stableness())
    bar.heartbeat(10, 2.0, 5.0, 0.1)
    bar.heartbeat(20, 1.0, float("nan"), float("nan"))  # a step without a measurement
    bar.update(15, loss=9.0)  # late: older than the last heartbeat, ignored
    assert out.getvalue() == ""  # within the interval: nothing yet
    bar.close()  # but the final state is written
    (line,) = out.getvalue().splitlines()
    assert line.startswith("r: step 20/1000") and "loss 1," in line
    assert "λ1 5, ηλ1 0.500" in line


def test_bar_on_a_terminal_and_silence_when_off():
    tty = _Tty()
    bar = Progress(30, stream=tty, label="toy", stableness=_stableness())
    bar.update(30, loss=0.5, lam=20.0, eff_lr=0.1)
    bar.close()
    text = tty.getvalue()
    assert "\r" in text and "30/30" in text and "λ1 20" in text and "ηλ1 2.000" in text
    off = _Tty()
    bar = Progress(30, stream=off, enabled=False)
    bar.compiling(30)
    bar.compiled(1.0)
    bar.update(30, loss=0.5)
    bar.close()
    assert off.getvalue() == ""
    with pytest.raises(ValueError, match="progress interval"):
        Progress(10, interval=0)


_CHILD = textwrap.dedent("""
    from eosflow import Config, run_experiment
    config = Config(name="long", num_examples=64, widths=(8,), steps=20_000,
                    chunk_steps=20_000, eig_every=10, eval_every=None)
    run_experiment(config, {out!r}, progress_interval=0.2)
""")


def test_a_run_piped_to_a_file_logs_progress_while_it_runs(tmp_path):
    """One 20k-step chunk of a small network: the lines come from between its compiled
    pieces, not chunk ends (toys, whose chunks take milliseconds, report at chunk ends only)."""
    log = tmp_path / "stderr.log"
    code = _CHILD.format(out=str(tmp_path / "run"))
    src = str(Path(__file__).resolve().parents[2] / "src")
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-c", code], stderr=f,
                                stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": src})
    try:
        deadline = time.monotonic() + 300
        seen = []
        while time.monotonic() < deadline and proc.poll() is None:
            seen = [ln for ln in log.read_text().splitlines() if ": step " in ln]
            if len(seen) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, log.read_text()[-2000:]  # still running: lines came live
        assert len(seen) >= 2, log.read_text()[-2000:]
    finally:
        proc.kill()
        proc.wait()
    text = log.read_text()
    assert "long: compiling the 20000-step chunk..." in text
    assert "long: compiled in " in text
    first = seen[0]
    step = int(first.split("step ")[1].split("/")[0])
    assert 0 < step < 20_000 and "steps/s" in first and "λ1" in first


def test_a_network_chunk_runs_as_pieces_without_host_callbacks():
    """A network run's chunk runs as at most ten equal pieces (one compiled program; a prime
    length runs whole), reports after each (lambda_1 in the reports: the piped-run test
    above), and gives the rows and the state of one scan over the chunk. No piece contains a
    host callback: JAX's persistent cache does not store programs that do, so every process
    would compile every chunk again."""
    import jax
    import numpy as np

    from eosflow import Config
    from eosflow.problems import build_problem
    from eosflow.runner import Program

    config = Config(num_examples=32, widths=(6,), steps=100, chunk_steps=100, eig_every=None,
                    eval_every=None, dtype="float64")
    prog = Program(config, build_problem(config), None, None, None)
    assert prog.pieces(100) == [10] * 10 and prog.pieces(23) == [23]
    assert prog.pieces(12) == [2] * 6 and prog.pieces(5) == [1] * 5
    state, hyper, data = prog.initial_state(), prog.hyper(), prog.data()
    # the default configuration's step (eigen-solves, evaluation) holds no callback either
    default = Config(num_examples=32, widths=(6,))
    tracked = Program(default, build_problem(default), None, None, None)
    text = tracked.chunk_fn(2).lower(tracked.initial_state(), tracked.hyper(),
                                     tracked.data()).as_text()
    assert "callback" not in text.lower() and tracked.config.eig_every is not None
    heard = []
    prog.on_progress = lambda *a: heard.append(a)
    fn, seconds = prog.compiled(30, state, hyper, data)
    assert seconds > 0 and prog.is_compiled(30) and prog.pieces(30) == [3] * 10
    assert prog.compiled(30, state, hyper, data)[1] == 0.0  # cached: "compiled" not said
    new, rows = fn(state, hyper, data)
    assert [h[0] for h in heard] == list(range(3, 31, 3))
    assert [h[1] for h in heard] == [rows["loss"][i] for i in range(2, 30, 3)]
    whole, ref = prog.chunk_fn(30)(state, hyper, data)
    for k in ref:
        np.testing.assert_allclose(rows[k], np.asarray(ref[k]), rtol=1e-12, atol=0, err_msg=k)
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(new.params)[0],
                               jax.flatten_util.ravel_pytree(whole.params)[0], rtol=1e-12)


def test_adaptive_methods_show_s_from_the_preconditioned_sharpness():
    """RMSProp's S = 2 lambda_1(P^-1 H) / (2/eta): formed from precond_lambda_1, while the line
    still shows the raw lambda_1 (it showed 2 * 3 / 1000 = 0.006 before)."""
    import numpy as np

    from eosflow.optim import METHODS
    from eosflow.runner._progress import last_valid

    m, lr = METHODS["rmsprop"], 0.002
    rows = {"loss": np.array([0.5, 0.4]), "lambda_1": np.array([3.0, np.nan]),
            "eff_lr": np.array([lr, lr]), "precond_lambda_1": np.array([1100.0, np.nan])}
    out = io.StringIO()
    bar = Progress(10, stream=out, label="r", interval=3600.0,
                   stableness=((lambda lam, e: m.stableness(lam, e, lr, 0.9)), "S"))
    bar.update(10, **last_valid(rows))
    bar.close()
    assert "λ1 3, S 2.200" in out.getvalue()
