"""Shared pieces of the benchmark scripts: timing, tables, the digits MLP at EoS."""

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp

RESULTS = Path(__file__).parent / "results"


def timeit(fn: Callable[[], object], *, repeats: int = 7, warmup: int = 1) -> dict:
    """Median and minimum wall time of ``fn()`` (blocking on its output), after warm-up.

    The first call's time is reported separately as ``first_s`` (compile + run).
    """
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "first_s": first}


def machine() -> dict:
    return {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def _fmt(c) -> str:
    if isinstance(c, float):
        if c == 0 or 1e-3 <= abs(c) < 1e4:
            return f"{c:.4g}"
        return f"{c:.3e}"
    return str(c)


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=float))
    return path


def digits_mlp(dtype=jnp.float32, seed: int = 0):
    """The digits MLP 64-200-200-10 (tanh) with MSE, as an eosflow Problem."""
    from eosflow.problems import MLP, load_digits, supervised_problem

    model = MLP(64, 10, [200, 200], "tanh", key=jax.random.key(seed), dtype=dtype)
    return supervised_problem(model, load_digits(), loss="mse", dtype=dtype)


def gd_trajectory(problem, lr: float, warmup: int, steps: int):
    """Run ``warmup`` GD steps, then return the stacked parameters of the next ``steps``."""
    import optax

    grad = jax.grad(problem.full_loss)

    @jax.jit
    def advance(params):
        def body(x, _):
            return optax.tree.add_scale(x, -lr, grad(x)), None

        return jax.lax.scan(body, params, None, length=warmup)[0]

    @jax.jit
    def record(params):
        def body(x, _):
            return optax.tree.add_scale(x, -lr, grad(x)), x

        return jax.lax.scan(body, params, None, length=steps)[1]

    return record(advance(problem.params))


def interleave(fns: dict[str, Callable[[], object]], *, rounds: int = 7) -> dict[str, dict]:
    """Time several functions in alternation (A B C A B C ...), so that a change in the
    machine's speed hits all of them alike. Each is called once first (``first_s``: compile +
    run); returns, per name, ``median_s``, ``min_s``, ``first_s`` and the list ``times``."""
    out = {name: {"times": []} for name in fns}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        out[name]["first_s"] = time.perf_counter() - t0
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order
            t0 = time.perf_counter()
            jax.block_until_ready(fns[name]())
            out[name]["times"].append(time.perf_counter() - t0)
    for d in out.values():
        d["median_s"] = statistics.median(d["times"])
        d["min_s"] = min(d["times"])
    return out


class _ChunkClock:
    """A run logger (``eosflow.runner.Logger``) that notes when each chunk's rows arrive: the
    runner hands them over once per chunk, after its compute and its metrics file, so the
    gaps between arrivals are the steady-state cost of a chunk with all its I/O (the
    checkpoint and status files included). The progress line's redraws no longer serve: on
    a non-terminal the runner prints a line every 30 s, not every chunk."""

    def __init__(self):
        self.times: list[float] = []

    def log_rows(self, columns, start_step) -> None:
        self.times.append(time.perf_counter())

    def close(self) -> None:
        pass


def timed_run(config, *, problem=None, sweep=None) -> dict:
    """Run ``run_experiment`` in a temporary directory and time its chunks from outside.

    A logger notes when each chunk's rows arrive (:class:`_ChunkClock`); the gaps between
    arrivals are the steady-state cost of a chunk with all its I/O. ``step_s`` is the median
    gap over chunks 2.. divided by ``config.chunk_steps`` (which must be set); ``compile_s``
    is the first chunk's extra time (setup, tracing, compilation). Returns those, every gap,
    the total and the record.
    """
    import contextlib
    import io
    import tempfile

    from eosflow.experiments import run_experiment

    if config.chunk_steps is None or config.steps < 3 * config.chunk_steps:
        raise ValueError("timed_run needs chunk_steps set and at least 3 chunks")
    clock = _ChunkClock()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # progress on, as a user runs it
            record = run_experiment(config, Path(tmp) / "run", problem=problem, sweep=sweep,
                                    progress=True, loggers=[clock])
        total = time.perf_counter() - t0
    gaps = [b - a for a, b in zip(clock.times[:-1], clock.times[1:], strict=True)]
    if not gaps:
        raise RuntimeError("the runner logged fewer than two chunks; cannot time them")
    chunk = statistics.median(gaps)
    return {
        "step_s": chunk / config.chunk_steps,
        "chunk_s": chunk,
        "chunk_gaps_s": gaps,
        "compile_s": (clock.times[0] - t0) - chunk,
        "total_s": total,
        "record": record,
    }


def fit_exponent(sizes, times) -> float:
    """The slope of log(time) against log(size), least squares."""
    import numpy as np

    return float(np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(times, float)),
                            1)[0])


def fmt_time(s: float) -> str:
    """Seconds as a short human string (ns, µs, ms, s)."""
    if s != s:  # nan
        return "nan"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if abs(s) >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"
