"""What one central-flow step costs next to one discrete step with tracking (the runner's
compiled chunks, digits MLP 64-200-200-10 at eta = 0.2), and where the time goes.

    python benchmarks/central_flow_cost.py [--steps 10] [--repeats 3] [--substeps 4] [--k 1]

Prints, per optimizer step (minimum over repeats; this VM's speed swings):
  discrete: GD step with lambda_1 tracked every step (the runner's default solver);
  +central: the same run with the central process; its increment is the central step;
  breakdown of one central substep: gradient, eigen-solve (warm, its HVPs), third
  derivatives (k(k+1)/2 jvps of an HVP), the complementarity solve.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from eosflow.curvature import top_eigenpairs
from eosflow.experiments import PRESETS
from eosflow.flows import solve_sdcp
from eosflow.problems import build_problem
from eosflow.runner import Program


def best(fn, repeats):
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def chunk_time(config, n, repeats):
    prog = Program(config, build_problem(config), None, None, None)
    state, hyper, data = prog.initial_state(), prog.hyper(), prog.data()
    fn = prog.chunk_fn(n)
    # start inside the run (after 140 steps: at the edge), where the solver works hardest
    warm, _ = prog.chunk_fn(140)(state, hyper, data)
    return best(lambda: fn(warm, hyper, data), repeats) / n, warm, prog


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--substeps", type=int, default=4)
    ap.add_argument("--k", type=int, default=1)
    a = ap.parse_args()
    base = PRESETS["digits-gd"].config(eig_every=1, num_eigs=a.k, eval_every=None,
                                          central_substeps=a.substeps)
    t_disc, _, _ = chunk_time(base, a.steps, a.repeats)
    cen = base.replace(processes=("discrete", "central"))
    t_cen, state, prog = chunk_time(cen, a.steps, a.repeats)
    print(f"digits MLP, eta = {base.lr}, k = {a.k}, substeps = {a.substeps}, min of "
          f"{a.repeats} x {a.steps} steps")
    print(f"discrete step with tracking: {1e3 * t_disc:.1f} ms; with the central process: "
          f"{1e3 * t_cen:.1f} ms; central step {1e3 * (t_cen - t_disc):.1f} ms = "
          f"{(t_cen - t_disc) / t_disc:.2f} x the discrete step")

    p = prog.problem
    w = state.processes.central.params
    warm = state.processes.central.warm_start
    loss = p.full_loss
    grad = jax.jit(jax.grad(loss))
    t_grad = best(lambda: grad(w), a.repeats)
    v = jax.tree.map(lambda x: x[0], warm)
    hvp = jax.jit(lambda w, v: jax.jvp(jax.grad(loss), (w,), (v,))[1])
    t_hvp = best(lambda: hvp(w, v), a.repeats)
    res = top_eigenpairs(loss, w, a.k, v0=warm, tol=base.eig_tol, throw=False)
    eig = jax.jit(lambda w, warm: top_eigenpairs(loss, w, a.k, v0=warm, tol=base.eig_tol,
                                                 throw=False))
    t_eig = best(lambda: eig(w, warm), a.repeats)
    third = jax.jit(lambda w, v: jax.jvp(lambda x: hvp(x, v), (w,), (v,))[1])
    t_third = best(lambda: third(w, v), a.repeats)
    k = a.k
    rng = np.random.default_rng(0)
    G = rng.standard_normal((k * k, 64))
    B = jnp.asarray((G @ G.T).reshape(k, k, k, k), jnp.float32)
    alpha = -jnp.eye(k, dtype=jnp.float32)
    sd = jax.jit(lambda al, B: solve_sdcp(al, B).X)
    t_sdcp = best(lambda: sd(alpha, B), a.repeats)
    pairs = k * (k + 1) // 2
    sub = t_grad + t_eig + pairs * t_third + t_sdcp
    print(f"one substep (x {a.substeps} per step): gradient {1e3 * t_grad:.2f} ms, eigen-solve "
          f"{1e3 * t_eig:.2f} ms ({int(res.num_matvecs)} HVPs; one HVP {1e3 * t_hvp:.2f} ms), "
          f"{pairs} third derivative(s) {1e3 * pairs * t_third:.2f} ms "
          f"({t_third / t_grad:.1f} gradients each), complementarity solve "
          f"{1e3 * t_sdcp:.3f} ms; sum {1e3 * sub:.1f} ms, x {a.substeps} = "
          f"{1e3 * a.substeps * sub:.1f} ms")


if __name__ == "__main__":
    main()
