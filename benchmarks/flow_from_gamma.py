"""The paper's MNIST net started *on* Γ: does λ1 at Φ(x_t) follow the re-projection flow?

The `paper-mnist-*` presets switch from the GD warm-up to normalized GD or GD on √L where
the iterate is still far from Γ. This script removes that distance: it runs the preset's GD
warm-up, projects its last iterate onto Γ (float64), displaces it by the two-step cycle's
half-width along v1 (η/2 for normalized GD, η√(λ1/2)/2 for GD on √L: the theory's phase II
from its first step), computes one re-projection prediction from there, then runs the
optimizer at each learning rate to the same flow time τ = η²t and compares λ1 at Φ(x_t)
with the prediction. If the gap shrinks with η, it is the theory's O(η) error.

    python benchmarks/flow_from_gamma.py --data-dir DIR --method sqrt_loss_gd \
        --etas 0.01 0.005 0.0025 --tau 0.1 --reproject-steps 16 --checks 2

DIR holds MNIST in its idx files (the t10k files copied as the training files). Writes
``benchmarks/results/flow_from_gamma_<method>.json``.
"""

import argparse
import json
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from eosflow.curvature import top_eigenpairs
from eosflow.experiments import preset_values
from eosflow.flows import CONSTANTS, phase_one_distance, project_solve, reprojection_flow
from eosflow.problems import build_problem
from eosflow.runner import Config

PRESETS = {"sqrt_loss_gd": "paper-mnist-sqrt", "normalized_gd": "paper-mnist-ngd"}


def _cast(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--method", choices=sorted(PRESETS), default="sqrt_loss_gd")
    ap.add_argument("--etas", type=float, nargs="+", default=[0.01, 0.005, 0.0025])
    ap.add_argument("--tau", type=float, default=0.1, help="flow time eta^2 t of every run")
    ap.add_argument("--reproject-steps", type=int, default=16)
    ap.add_argument("--checks", type=int, default=2, help="Phi checks per run")
    ap.add_argument("--gtol", type=float, default=None,
                    help="|grad L| of every projection (default: the preset's phi_gtol)")
    a = ap.parse_args()

    values = preset_values(PRESETS[a.method]) | {"data_dir": a.data_dir}
    config = Config(**values)
    a.gtol = config.phi_gtol if a.gtol is None else a.gtol
    problem = build_problem(config)
    loss = problem.full_loss

    @jax.jit
    def warm_up(x):
        def step(x, _):
            return jax.tree.map(lambda p, g: p - config.warmup_lr * g, x, jax.grad(loss)(x)), None
        return jax.lax.scan(step, x, None, length=config.warmup_steps)[0]

    def phi(x):  # Phi(x) and lambda_1 there, in float64, as the runner's Phi checks make them
        with jax.enable_x64(True):
            p64 = _cast(problem, jnp.float64)
            proj = project_solve(p64.full_loss, _cast(x, jnp.float64), throw=False,
                                 residual_fn=p64.full_residual, gtol=a.gtol)
            return proj, top_eigenpairs(p64.full_loss, proj.value, 1)

    t0 = time.perf_counter()
    x_w = warm_up(problem.params)
    proj, eig = phi(x_w)
    lam0 = float(eig.eigenvalues[0])
    if not bool(proj.converged):
        raise SystemExit(f"Phi of the warm-up's end did not converge (|grad L| = "
                         f"{float(proj.grad_norm):.3g}); try a larger --gtol")
    out = {"method": a.method, "preset": PRESETS[a.method], "warmup_steps": config.warmup_steps,
           "lambda_phi_warmup": lam0, "phi_dist_warmup": float(proj.distance),
           "seconds_start": round(time.perf_counter() - t0, 1), "gtol": a.gtol, "runs": []}
    print(f"Phi(x_{config.warmup_steps}): lambda_1 = {lam0:.2f}, |x - Phi(x)| = "
          f"{float(proj.distance):.3g}", flush=True)

    with jax.enable_x64(True):
        on_gamma = proj.value
        v1 = jax.tree.map(lambda v: v[0], eig.eigenvectors)

    def start(eta):
        amp = float(phase_one_distance(eta, method=a.method, lambda_1=lam0)) / 2
        with jax.enable_x64(True):
            return _cast(jax.tree.map(lambda p, v: p + amp * v, on_gamma, v1), config.dtype)

    t0 = time.perf_counter()
    with jax.enable_x64(True):
        p64 = _cast(problem, jnp.float64)
        flow = reprojection_flow(
            p64.full_loss, _cast(start(min(a.etas)), jnp.float64), method=a.method,
            num_steps=a.reproject_steps, residual_fn=p64.full_residual, throw=False,
            step_size=CONSTANTS[a.method][0] * a.tau / a.reproject_steps, step_rtol=None,
            project_kwargs={"gtol": a.gtol})
        ts, lams = np.asarray(flow.ts), np.asarray(flow.sharpness)
    out["prediction"] = {"status": flow.status, "reason": flow.reason, "tau": ts.tolist(),
                         "lambda_1": lams.tolist(),
                         "seconds": round(time.perf_counter() - t0, 1)}
    print(f"prediction ({flow.status}, {out['prediction']['seconds']} s): lambda_1 "
          + " ".join(f"{x:.1f}" for x in lams), flush=True)

    for eta in a.etas:
        n = round(a.tau / eta**2) // a.checks

        @jax.jit
        def steps(x, eta=eta, n=n):
            def step(x, _):
                value, g = jax.value_and_grad(loss)(x)
                norm = optax.tree.norm(g)
                scale = eta / (2 * jnp.sqrt(value)) if a.method == "sqrt_loss_gd" else eta / norm
                return jax.tree.map(lambda p, d: p - scale * d, x, g), (value, norm)
            return jax.lax.scan(step, x, None, length=n)

        x = start(eta)
        for i in range(1, a.checks + 1):
            x, (values, norms) = steps(x)
            proj, eig = phi(x)
            lam, tau = float(eig.eigenvalues[0]), eta**2 * n * i
            pred = float(np.interp(tau, ts, lams))
            # the two-step cycle, 1 at the theory's edge: Thm 4.8, sqrt L(x_t) + sqrt L(x_t+1)
            # = eta lambda_1 / 2; Thm 4.7, 1/S_t + 1/S_t+1 = (|g_t| + |g_t+1|) / (eta lambda_1);
            # from the last two steps before the check, with lambda_1 at Phi of the check
            if a.method == "sqrt_loss_gd":
                pair = float(jnp.sqrt(values[-1]) + jnp.sqrt(values[-2])) / (eta * lam / 2)
            else:
                pair = float(norms[-1] + norms[-2]) / (eta * lam)
            row = {"eta": eta, "step": n * i, "tau": tau, "lambda_phi": lam, "predicted": pred,
                   "rel": lam / pred - 1, "phi_dist": float(proj.distance), "two_step": pair,
                   "phi_converged": bool(proj.converged)}
            out["runs"].append(row)
            if not row["phi_converged"]:
                print(f"warning: Phi did not converge (|grad L| = {float(proj.grad_norm):.3g})")
            print(f"eta {eta:g}  tau {tau:.4f}  lambda_1 at Phi {lam:.2f}  predicted {pred:.2f}  "
                  f"({lam / pred - 1:+.1%})  |x - Phi(x)| {row['phi_dist']:.3g}"
                  f"  two-step cycle {pair:.3f} (1 at the edge)", flush=True)

    path = Path(__file__).parent / "results" / f"flow_from_gamma_{a.method}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
