"""Compile times of two source trees side by side, and what one XLA:CPU option trades (issue 17).

Two measurements, each interleaved so that the machine's swings hit both sides alike:

* ``--trees OLD_SRC NEW_SRC``: the suite's cold-process compile script (``suite._COLD``: the
  first lambda1 on the digits MLP, a loop with a fresh closure, the default run's first
  chunk), run alternately against two ``src`` folders (e.g. a ``git worktree`` of the last
  commit and this tree), in fresh processes with the persistent cache off.
* ``--fusion-emitters``: compile and run times of the GD step (a 20-step scan), one HVP and
  one cold lambda1 on the digits MLP, compiled with XLA:CPU's default options and with
  ``xla_cpu_use_fusion_emitters=False`` (the older emitters).

Run from the repository root::

    git worktree add /tmp/old COMMIT   # the commit before the change
    python benchmarks/compile_ab.py --trees /tmp/old/src src --rounds 3
    python benchmarks/compile_ab.py --fusion-emitters
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

KEYS = ("grad_first_s", "lambda1_first_s", "closure_loop_s", "run_compile_s")


def trees(old: str, new: str, rounds: int) -> None:
    from suite import _COLD

    out = {"old": [], "new": []}
    for _ in range(rounds):
        for name, src in (("old", old), ("new", new)):
            env = {**os.environ, "EOSFLOW_CACHE_DIR": "off", "JAX_COMPILATION_CACHE_DIR": "",
                   "PYTHONPATH": os.path.abspath(src)}
            done = subprocess.run([sys.executable, "-c", _COLD], env=env, capture_output=True,
                                  text=True, check=True)
            out[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{'':16s}" + "".join(f"{k:>22s}" for k in KEYS))
    for name, runs in out.items():
        cells = []
        for k in KEYS:
            vals = [min(r[k]) if isinstance(r[k], list) else r[k] for r in runs]
            cells.append(f"{statistics.median(vals):9.2f} (min {min(vals):5.2f})")
        print(f"{name:16s}" + "".join(f"{c:>22s}" for c in cells))


def fusion_emitters(repeats: int) -> None:
    import jax
    import jax.numpy as jnp

    from _common import digits_mlp
    from eosflow.curvature import hessian_operator, top_eigenpairs

    jax.config.update("jax_enable_compilation_cache", False)
    prob = digits_mlp()
    p = prob.params
    v = jax.tree.map(jnp.ones_like, p)

    def gd20(p):
        def step(p, _):
            g = jax.grad(prob.full_loss)(p)
            return jax.tree.map(lambda a, b: a - 0.01 * b, p, g), None
        return jax.lax.scan(step, p, None, length=20)[0]

    work = {"GD, 20-step scan": (gd20, (p,)),
            "HVP": (lambda p, v: hessian_operator(prob.full_loss, p).mv(v), (p, v)),
            "lambda1, cold": (lambda p: top_eigenpairs(prob.full_loss, p).eigenvalues, (p,))}
    options = {"default": {}, "fusion emitters off": {"xla_cpu_use_fusion_emitters": False}}
    print(f"{'':18s}{'options':>22s}{'compile s':>12s}{'run ms (median)':>18s}")
    for label, (fn, args) in work.items():
        compiled, seconds, times = {}, {}, {o: [] for o in options}
        for o, opts in options.items():
            t0 = time.perf_counter()
            compiled[o] = jax.jit(fn).lower(*args).compile(compiler_options=opts)
            seconds[o] = time.perf_counter() - t0
            jax.block_until_ready(compiled[o](*args))
        for _ in range(repeats):
            for o in options:
                t0 = time.perf_counter()
                jax.block_until_ready(compiled[o](*args))
                times[o].append(time.perf_counter() - t0)
        for o in options:
            print(f"{label:18s}{o:>22s}{seconds[o]:12.2f}"
                  f"{1e3 * statistics.median(times[o]):18.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", nargs=2, metavar=("OLD_SRC", "NEW_SRC"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fusion-emitters", action="store_true")
    args = ap.parse_args()
    if not args.trees and not args.fusion_emitters:
        ap.error("pass --trees OLD_SRC NEW_SRC and/or --fusion-emitters")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if args.trees:
        trees(*args.trees, args.rounds)
    if args.fusion_emitters:
        fusion_emitters(repeats=7)


if __name__ == "__main__":
    main()
