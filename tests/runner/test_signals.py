"""SIGTERM and SIGINT end a run at the next chunk boundary: its write finished, the folder
resumable, status "interrupted", the process gone within about two seconds."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from eosflow import load_run, run_experiment
from eosflow.runner import Config

ROOT = Path(__file__).resolve().parents[2]
# many short chunks: the signal lands mid-run, and a chunk lasts well under a second
CONFIG = dict(name="s", problem="toy_a", dataset="none", dtype="float64", x0=(3.0, -1.0),
              optimizer="normalized_gd", lr=0.05, steps=200_000, chunk_steps=2000,
              checkpoint_every=20_000, eig_every=None)
# what the command line does with the record: exit 128 + the signal's number
_CHILD = textwrap.dedent(f"""
    import sys
    from eosflow import run_experiment
    from eosflow.runner import Config
    record = run_experiment(Config(**{CONFIG!r}), sys.argv[1])
    print(record.status, record.message, flush=True)
    sys.exit(128 + record.signal if record.status == "interrupted" else 0)
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_at_the_chunk_boundary_and_resumes_bit_for_bit(tmp_path, signum):
    out = tmp_path / "r"
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while (not (out / "metrics").is_dir() or not any((out / "metrics").glob("*.npz"))) and (
        proc.poll() is None and time.time() < deadline
    ):
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    sent = time.time()
    os.kill(proc.pid, signum)
    stdout, stderr = proc.communicate(timeout=60)
    took = time.time() - sent
    assert proc.returncode == 128 + signum, stderr[-2000:]
    assert took < 10  # a chunk of 2000 toy steps plus the writes; loose for a busy machine
    name = signal.Signals(signum).name
    assert stdout.startswith(f"interrupted interrupted by {name} at step ")
    assert f"eosflow resume {out}" in stdout
    status = json.loads((out / "status.json").read_text())
    step = status["step"]
    assert status["state"] == "interrupted" and 0 < step < CONFIG["steps"] and step % 2000 == 0
    assert len(load_run(out).metrics["step"]) == step  # the chunk's write finished
    assert not (out / ".lock").exists()
    # resumable: shortened to end soon after, it equals one uninterrupted run of that length
    config = Config(**CONFIG).replace(steps=step + 2000)
    again = run_experiment(config, out, resume=True, progress=False)
    assert again.status == "completed"
    one = run_experiment(config, tmp_path / "one", progress=False)
    for k, v in one.metrics.items():
        np.testing.assert_array_equal(again.metrics[k], v, err_msg=k)
    np.testing.assert_array_equal(np.asarray(again.params), np.asarray(one.params))
