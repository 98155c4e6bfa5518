"""Where full-batch RMSProp's preconditioned sharpness sits: at its iterates or at their
midpoints (the time average the central flow describes).

    python benchmarks/rmsprop_edge.py [--decay 0.9] [--start 250] [--count 10]

Runs optax.rmsprop on the `digits-rmsprop` preset's problem and initialization for
``start`` steps, then for ``count`` steps t prints eta * lambda_1(D^-1 H) with
D = sqrt(nu + eps) at (w_t, nu_t), the state of step t, and at the midpoint
(w_{t-1} + 2 w_t + w_{t+1})/4 with nu averaged the same way (top 3, tol 1e-4).
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from eosflow.curvature import preconditioned_sharpness
from eosflow.experiments._presets import preset_config
from eosflow.optim import RMSPROP_EPS
from eosflow.problems import build_problem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decay", type=float, default=0.9)
    ap.add_argument("--start", type=int, default=250)
    ap.add_argument("--count", type=int, default=10)
    a = ap.parse_args()
    cfg = preset_config("digits-rmsprop", {"decay": a.decay})
    prob = build_problem(cfg)
    batch = jax.tree.map(lambda x: x[0], prob.batches)
    loss = lambda w: prob.loss_fn(w, batch)
    tx = optax.rmsprop(cfg.lr, decay=a.decay, eps=RMSPROP_EPS)

    @jax.jit
    def step(carry, _):
        w, st = carry
        u, st = tx.update(jax.grad(loss)(w), st, w)
        return (optax.apply_updates(w, u), st), None

    state = (prob.params, tx.init(prob.params))
    state, _ = jax.lax.scan(step, state, None, length=a.start)
    ws, nus = [], []
    for _ in range(a.count + 2):
        ws.append(state[0])
        state, _ = step(state, None)
        nus.append(state[1][0].nu)  # the nu the step from ws[-1] divided by

    def sharp(w, nu):
        d = jax.tree.map(lambda n: jnp.sqrt(n + RMSPROP_EPS), nu)
        return cfg.lr * float(preconditioned_sharpness(loss, w, d, 3, tol=1e-4).eigenvalues[0])

    mid = lambda xs, t: jax.tree.map(lambda a, b, c: 0.25 * (a + 2 * b + c), *xs[t - 1:t + 2])
    at = [sharp(ws[t], nus[t]) for t in range(1, a.count + 1)]
    mp = [sharp(mid(ws, t), mid(nus, t)) for t in range(1, a.count + 1)]
    print(f"decay {a.decay}, steps {a.start + 1}-{a.start + a.count}, edge 2")
    print("eta * lambda_1(D^-1 H) at (w_t, nu_t):  ", np.round(at, 3), f"mean {np.mean(at):.3f}")
    print("eta * lambda_1(D^-1 H) at the midpoints:", np.round(mp, 3), f"mean {np.mean(mp):.3f}")


if __name__ == "__main__":
    main()
