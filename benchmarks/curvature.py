"""Sharpness tracking along a GD trajectory at the Edge of Stability (issue 2's benchmark).

Workload: the digits MLP 64-200-200-10 (tanh, 55 210 parameters, 1797 examples, MSE with the
1/2), full-batch GD at lr 0.1 (2/lr = 20): ``--warmup`` steps untracked (progressive
sharpening up to lambda1 ~ 20), then lambda1 estimated at each of the next ``--steps`` steps by

* warm-started ``top_eigenpairs`` (block sizes 1-3, residual and gap stopping rules), all
  steps inside one compiled ``lax.scan``;
* cold ``top_eigenpairs`` at every step;
* SciPy ``eigsh(which='LA')``, cold, default tolerance (Cohen et al.'s method), on the same
  jitted HVP, in a Python loop;

each compared with a converged reference (cold, tol 1e-5, k = 3). Also: one HVP's time over
one gradient's time. Run: ``python benchmarks/curvature.py`` (about 5 minutes on 2 cores).
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from _common import digits_mlp, gd_trajectory, print_table, save, timeit
from eosflow.curvature import hessian_operator, top_eigenpairs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=1200)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args(argv)

    problem = digits_mlp()
    loss_fn, batches = problem.loss_fn, problem.batches
    traj = gd_trajectory(problem, args.lr, args.warmup, args.steps)
    at = lambda i: jax.tree.map(lambda x: x[i], traj)
    n = args.steps

    # --- reference ---------------------------------------------------------------------
    ref_solve = jax.jit(
        lambda p: top_eigenpairs(loss_fn, p, 3, batches=batches, tol=1e-5, max_matvecs=2000)
    )
    ref = [ref_solve(at(i)) for i in range(n)]
    lam_ref = np.array([float(r.eigenvalues[0]) for r in ref])
    lam2_ref = np.array([float(r.eigenvalues[1]) for r in ref])
    ref_ok = np.array([bool(r.converged) for r in ref])
    v1 = [r.eigenvectors for r in ref]
    first = lambda t: jax.tree.leaves(jax.tree.map(lambda x: x[0], t))
    turn = [
        abs(float(sum(jnp.vdot(a, b) for a, b in zip(first(v1[i]), first(v1[i + 1]), strict=True))))
        for i in range(n - 1)
    ]
    print(
        f"trajectory: {n} steps after {args.warmup} warm-up steps at lr {args.lr}; "
        f"lambda1 {lam_ref.min():.3f}..{lam_ref.max():.3f} (2/lr = {2 / args.lr:g}); "
        f"median lambda2/lambda1 {np.median(lam2_ref / lam_ref):.4f}; "
        f"top eigenvector turns by > 25 deg at "
        f"{np.mean(np.array(turn) < np.cos(np.radians(25))):.1%} "
        f"of steps; reference converged at {ref_ok.mean():.0%} of steps"
    )

    rows, payload = [], {"args": vars(args), "lambda1_reference": lam_ref.tolist()}

    def summarise(name, lam, mv, conv, seconds):
        rel = np.abs(lam - lam_ref) / lam_ref
        conv = np.asarray(conv, bool)
        bad = rel[conv] > 1e-3
        row = {
            "method": name,
            "hvps_per_step": float(np.mean(mv)),
            "s_per_estimate": seconds / n,
            "converged": float(conv.mean()),
            "max_rel_err_converged": float(rel[conv].max()) if conv.any() else float("nan"),
            "off_by_1e-3_converged": int(bad.sum()),
            "off_by_1e-3_all": int((rel > 1e-3).sum()),
        }
        payload.setdefault("methods", []).append(row)
        rows.append(list(row.values()))

    # --- warm-started tracking inside one compiled loop ----------------------------------
    for criterion in ("residual", "gap"):
        for b in (1, 2, 3):
            start = top_eigenpairs(loss_fn, at(0), b, batches=batches, tol=1e-5)

            @jax.jit
            def track(traj, v0, b=b, criterion=criterion):
                def step(v, p):
                    r = top_eigenpairs(
                        loss_fn, p, 1, v0=v, batches=batches, tol=args.tol, criterion=criterion
                    )
                    return r.warm_start, (r.eigenvalues[0], r.num_matvecs, r.converged)

                return jax.lax.scan(step, v0, traj)[1]

            jax.block_until_ready(track(traj, start.warm_start))  # compile
            t0 = time.perf_counter()
            lam, mv, conv = jax.block_until_ready(track(traj, start.warm_start))
            summarise(f"warm b={b} {criterion}", np.asarray(lam), np.asarray(mv), conv,
                      time.perf_counter() - t0)

    # --- cold top_eigenpairs every step --------------------------------------------------
    cold = jax.jit(lambda p: top_eigenpairs(loss_fn, p, 1, batches=batches, tol=args.tol))
    jax.block_until_ready(cold(at(0)))
    t0 = time.perf_counter()
    out = [cold(at(i)) for i in range(n)]
    jax.block_until_ready(out)
    summarise("cold top_eigenpairs", np.array([float(r.eigenvalues[0]) for r in out]),
              np.array([int(r.num_matvecs) for r in out]), [bool(r.converged) for r in out],
              time.perf_counter() - t0)

    # --- SciPy eigsh, cold, which='LA', default tol, on the same jitted HVP -----------------
    from jax.flatten_util import ravel_pytree
    from scipy.sparse.linalg import LinearOperator, eigsh

    flat0, unravel = ravel_pytree(at(0))
    hvp = jax.jit(lambda p, v: ravel_pytree(hessian_operator(loss_fn, p, batches=batches)
                                            .mv(unravel(v)))[0])
    lam_s, mv_s = [], []
    t0 = time.perf_counter()
    for i in range(n):
        p, count = at(i), [0]

        def mv(v, p=p, count=count):
            count[0] += 1
            return np.asarray(hvp(p, jnp.asarray(v, jnp.float32)), np.float64)

        op = LinearOperator((flat0.size, flat0.size), matvec=mv, dtype=np.float64)
        lam_s.append(eigsh(op, k=1, which="LA", return_eigenvectors=False)[0])
        mv_s.append(count[0])
    summarise("scipy eigsh LA (cold)", np.array(lam_s), np.array(mv_s), np.ones(n, bool),
              time.perf_counter() - t0)

    print_table(
        f"lambda1 at every step, tol {args.tol} (errors against the reference)",
        ["method", "HVPs/step", "s/estimate", "converged", "max rel err (conv.)",
         "off >1e-3 (conv.)", "off >1e-3 (all)"],
        rows,
    )

    # --- one HVP against one gradient -------------------------------------------------------
    p0 = at(n - 1)
    grad = jax.jit(jax.grad(problem.full_loss))
    v = jax.random.normal(jax.random.key(1), flat0.shape, jnp.float32)
    tg = timeit(lambda: grad(p0), repeats=21)
    th = timeit(lambda: hvp(p0, v), repeats=21)
    payload["grad_s"], payload["hvp_s"] = tg, th
    print_table("one HVP against one gradient (same data, jitted, median of 21)",
                ["gradient s", "HVP s", "HVP / gradient"],
                [[tg["median_s"], th["median_s"], th["median_s"] / tg["median_s"]]])
    print(f"\nwrote {save('curvature', payload)}")


if __name__ == "__main__":
    main()
