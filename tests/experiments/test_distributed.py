"""Data-parallel runs over a device mesh and over processes give the single-device numbers."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from eosflow.experiments import Config, load_run, run_experiment

BASE = dict(name="dp", num_examples=200, widths=(16,), steps=20, lr=0.2, chunk_steps=10,
            dtype="float64", chunk_size=100, eval_every=10)
COLUMNS = ("loss", "grad_norm", "lambda_1", "residual_1", "align_rayleigh", "accuracy")

_FOUR_DEVICES = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import os, jax
    cache = os.environ.get("EOSFLOW_CACHE_DIR", "off")
    if cache.lower() not in ("off", "0", "none", ""):  # the session's compilation cache
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    from jax.flatten_util import ravel_pytree
    from eosflow.curvature import hessian_operator, top_eigenpairs
    from eosflow.experiments import Config, ConfigError, run_experiment
    from eosflow.problems import build_problem
    from eosflow.runner import Program
    base = Config(**json.loads(sys.argv[2]))
    out = {"devices": jax.device_count()}
    # one loss, gradient and lambda_1 on 1 device and sharded over 4
    p = build_problem(base)
    vals = []
    for n in (1, 4):
        eng = Program(base.replace(devices=n), p, None, None, None)
        batches, _, _ = eng.data()
        params = eng.place(eng.initial_state()).params
        f = jax.jit(lambda x, b: hessian_operator(p.loss_fn, x, batches=b).loss_and_grad())
        loss, grad = f(params, batches)
        lam = jax.jit(lambda x, b: top_eigenpairs(p.loss_fn, x, 1, batches=b, tol=1e-9)
                      .eigenvalues[0])(params, batches)
        vals.append([float(loss), np.asarray(ravel_pytree(grad)[0]).tolist(), float(lam),
                     str(batches["x"].sharding)])
    out["point"] = vals
    # whole runs, twice on 4 devices to check determinism
    run_experiment(base.replace(devices=1), sys.argv[1] + "/one")
    run_experiment(base.replace(devices=4), sys.argv[1] + "/four")
    run_experiment(base.replace(devices=4), sys.argv[1] + "/four_again")
    try:
        run_experiment(base.replace(devices=3, name="bad"), sys.argv[1] + "/bad")
    except ConfigError as err:
        out["bad"] = str(err)
    print(json.dumps(out))
    """
)


def _env(**extra):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    return env


def _same(a: np.ndarray, b: np.ndarray, rtol: float = 1e-10) -> None:
    ok = np.isfinite(a)
    np.testing.assert_array_equal(ok, np.isfinite(b))
    np.testing.assert_allclose(b[ok], a[ok], rtol=rtol, atol=1e-13)


def test_four_cpu_devices_match_one(tmp_path):
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=4")
    res = subprocess.run([sys.executable, "-c", _FOUR_DEVICES, str(tmp_path), json.dumps(BASE)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    (l1, g1, lam1, _), (l4, g4, lam4, sharding) = out["point"]
    assert "'data'" in sharding  # the example axis really is split over the mesh
    np.testing.assert_allclose(l4, l1, rtol=1e-10)
    np.testing.assert_allclose(g4, g1, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(lam4, lam1, rtol=1e-10)
    one, four, again = (load_run(tmp_path / d) for d in ("one", "four", "four_again"))
    for k in COLUMNS:
        _same(one.metrics[k], four.metrics[k])
        np.testing.assert_array_equal(four.metrics[k], again.metrics[k])  # deterministic
    assert four.metadata["mesh"]["shape"] == [4]
    assert "devices: 3 devices do not divide the physical batch of 100" in out["bad"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two JAX processes, ~45 s on CI's two cores (CI's 15 minutes); the
# sharded path itself runs in CI: test_four_cpu_devices_match_one
def test_two_processes_match_one(tmp_path):
    port = _free_port()
    args = ["--steps", "20", "--chunk_steps", "10", "--num_examples", "200", "--widths", "16",
            "--dtype", "float64", "--chunk_size", "100", "--eval_every", "10", "--devices", "2",
            "--quiet", "--no-report", "--out", str(tmp_path / "mp"),
            "--coordinator", f"localhost:{port}", "--num-processes", "2"]
    procs = [subprocess.Popen([sys.executable, "-m", "eosflow", "run", "tiny", *args,
                               "--process-id", str(i)], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    multi = load_run(tmp_path / "mp" / "tiny")
    assert multi.metadata["mesh"]["processes"] == 2
    single = run_experiment(Config(**{**BASE, "name": "tiny"}), tmp_path / "single")
    for k in COLUMNS:
        _same(single.metrics[k], multi.metrics[k])


def test_unreachable_coordinator_is_a_clear_error(tmp_path):
    port = _free_port()  # nobody listens there
    res = subprocess.run(
        [sys.executable, "-m", "eosflow", "run", "tiny", "--out", str(tmp_path),
         "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", "1",
         "--coordinator-timeout", "2"], env=_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert f"the coordinator localhost:{port} is unreachable" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_coordinator_that_accepts_but_never_answers_is_a_clear_error(tmp_path):
    with socket.socket() as silent:  # listens, never speaks: a hung or foreign process
        silent.bind(("localhost", 0))
        silent.listen(4)
        address = f"localhost:{silent.getsockname()[1]}"
        res = subprocess.run(
            [sys.executable, "-m", "eosflow", "run", "tiny", "--out", str(tmp_path),
             "--coordinator", address, "--num-processes", "2", "--process-id", "1",
             "--coordinator-timeout", "2"], env=_env(), capture_output=True, text=True,
            timeout=120)
    assert res.returncode == 2, res.stderr  # JAX's runtime alone aborts (SIGABRT) here
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "does not answer as a JAX coordination service" in err[0], err
    assert address in err[0]


@pytest.mark.parametrize("flags", [["--num-processes", "2"], ["--process-id", "0"]])
def test_incomplete_multiprocess_flags(flags, tmp_path, capsys):
    from eosflow.experiments import main

    assert main(["run", "tiny", "--out", str(tmp_path), *flags]) == 2
    assert "multi-process runs need" in capsys.readouterr().err
