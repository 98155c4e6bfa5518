"""Φ on the paper's MNIST MLP: does the projection reach Γ, how fast, and λ1 there.

The paper's network (Arora, Li & Panigrahi 2022, arXiv 2205.09745): MLP 784-128-10 with GELU,
MSE without the ½ (``mse_nohalf``), 1000 examples, full batch, float32. GD at lr 0.01 for a
warm-up, then normalized GD at η = 0.01 for a few hundred steps (past phase I), then Φ by:

* ``gd_1/lambda``: the runner's old projection (GD with step 1/λ1, at most 2000 steps, until
  ‖∇L‖ falls to 1% of its start);
* ``gradient_flow``: :func:`eosflow.flows.project_solve` without residuals (diffrax Tsit5,
  at most 2000 steps; not run by default: about 4 minutes);
* ``auto``: :func:`eosflow.flows.project_solve` with the MSE's residuals
  (``Problem.full_residual``): 300 flow steps, Levenberg–Marquardt/Gauss–Newton, a polishing
  flow; success at ‖∇L‖ ≤ 1.6e-4 (float32 default).

Usage (real digits; the 10k test digits are copied as the training files of a scratch folder)::

    python benchmarks/projection.py --mnist /work/shared/data/mnist [--warmup 1500 --ngd 300]

Prints, per method: final ‖∇L‖, distance moved, seconds (compile included), λ1 at Φ.
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import optax

from eosflow.curvature import top_eigenpairs
from eosflow.flows import project_solve
from eosflow.optim import gd, normalized_gd
from eosflow.problems import MLP, load_mnist, supervised_problem


def digits_problem(mnist_dir: str, n: int = 1000, seed: int = 0):
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("images-idx3", "labels-idx1"):
            shutil.copy(Path(mnist_dir) / f"t10k-{kind}-ubyte.gz",
                        Path(tmp) / f"train-{kind}-ubyte.gz")
        data = load_mnist(tmp, n)
    model = MLP(784, 10, [128], "gelu", key=jax.random.key(seed))
    return supervised_problem(model, data, loss="mse_nohalf")


def train(problem, opt, params, steps: int):
    loss = problem.full_loss
    state = opt.init(params)

    @jax.jit
    def run(params, state):
        def step(carry, _):
            p, s = carry
            value, g = jax.value_and_grad(loss)(p)
            u, s = opt.update(g, s, p, value=value)
            return (optax.apply_updates(p, u), s), value
        return jax.lax.scan(step, (params, state), None, length=steps)

    (params, _), losses = run(params, state)
    return params, losses


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", required=True, help="folder with t10k-*-ubyte.gz")
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--ngd", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--methods", default="gd_1/lambda,auto")
    ap.add_argument("--cache", default=None, help="save/load the NGD end point (.npy)")
    args = ap.parse_args(argv)

    problem = digits_problem(args.mnist)
    loss = problem.full_loss
    params = problem.params
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    if args.cache and Path(args.cache).exists():
        params = unravel(jnp.load(args.cache))
        print(f"loaded the NGD end point from {args.cache}")
    else:
        t0 = time.perf_counter()
        params, losses = train(problem, gd(args.lr), params, args.warmup)
        lam = top_eigenpairs(loss, params, 1).eigenvalues[0]
        print(f"GD warm-up {args.warmup} steps: loss {float(losses[-1]):.4g}, "
              f"lambda_1 {float(lam):.4g} (2/eta = {2 / args.lr:.0f}), "
              f"{time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        params, losses = train(problem, normalized_gd(args.lr), params, args.ngd)
        print(f"normalized GD {args.ngd} steps: loss {float(losses[-1]):.4g}, "
              f"{time.perf_counter() - t0:.1f} s")
        if args.cache:
            jnp.save(args.cache, jax.flatten_util.ravel_pytree(params)[0])
    g0 = float(optax.tree.norm(jax.grad(loss)(params)))
    lam0 = float(top_eigenpairs(loss, params, 1).eigenvalues[0])
    print(f"start of the projection: |grad L| = {g0:.3g}, lambda_1 = {lam0:.4g}, "
          f"{flat.size} parameters")

    kwargs = {
        "gd_1/lambda": dict(method="gradient_flow", solver=diffrax.Euler(), dt0=1 / lam0,
                            stepsize_controller=diffrax.ConstantStepSize(), max_steps=2000,
                            gtol=max(0.01 * g0, 1e-12)),
        "gradient_flow": dict(method="gradient_flow", max_steps=2000),
        "auto": dict(residual_fn=problem.full_residual),
    }
    print(f"{'method':<14} {'|grad L|':>10} {'moved':>9} {'seconds':>8} {'lambda_1(Phi)':>14}"
          "  result")
    for name in args.methods.split(","):
        t0 = time.perf_counter()
        res = project_solve(loss, params, throw=False, **kwargs[name])
        jax.block_until_ready(res.value)
        secs = time.perf_counter() - t0
        lam = float(top_eigenpairs(loss, res.value, 1).eigenvalues[0])
        print(f"{name:<14} {float(res.grad_norm):10.3g} {float(res.distance):9.3g} {secs:8.1f} "
              f"{lam:14.5g}  {res.summary()}")


if __name__ == "__main__":
    main()
