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
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


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
