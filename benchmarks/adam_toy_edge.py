"""Where full-batch Adam's preconditioned sharpness sits on the central-flow toy, and whether
the RMSProp central flow's reduction (momentum averaged out) describes it.

    python benchmarks/adam_toy_edge.py [--beta2 0.95 0.99 0.999] [--steps 3000]

On L = -cx + (a + x) y^2 / 2 (c = 0.5, a = 1, eta = 0.1, from (4, 1e-3)), optax.adam
(beta1 = 0.9, eps = 0) drifts in x while y oscillates. Its preconditioned sharpness is
(a + x)/sqrt(nu_hat_y) (units of 1/eta after multiplying by eta; the frozen-preconditioner
edge is (2 + 2 beta1)/(1 - beta1) = 38). With the momentum averaged out (m = the mean
gradient, beta1's 10 steps short against the drift) the central flow of RMSProp carries
over with the edge 38/eta: x' = eta (c - s/2)/sqrt(nu_hat_x), nu_hat' = rate (g^2 - nu_hat)
with s = E y^2 fixed by d/dt[(a + x) - (38/eta) sqrt(nu_hat_y)] = 0. For windows of steps it
prints eta * lambda_1(P^-1 H) averaged, x's speed against that reduction's (at Adam's own
x, nu_hat), the time average of y^2 against the reduction's s, and nu_hat_y against
s (a + x)^2 (what nu would be if it followed the oscillation's mean square).
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from eosflow.flows import rmsprop_rate
from eosflow.optim import METHODS

LR, C, A, BETA1 = 0.1, 0.5, 1.0, 0.9
EDGE = LR * METHODS["adam"].edge(LR, BETA1)  # (2 + 2 beta1)/(1 - beta1) = 38, times eta


def loss(w):
    return -C * w[0] + 0.5 * (A + w[0]) * w[1] ** 2


def run(beta2: float, steps: int):
    tx = optax.adam(LR, b1=BETA1, b2=beta2, eps=0.0)

    def step(carry, _):
        w, st = carry
        u, st = tx.update(jax.grad(loss)(w), st, w)
        adam = st[0]
        return (w + u, st), (w, adam.nu / (1 - beta2**adam.count))  # nu_hat the update used

    w0 = jnp.array([4.0, 1e-3])
    _, (ws, nus) = jax.lax.scan(step, (w0, tx.init(w0)), None, length=steps)
    return np.asarray(ws), np.asarray(nus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--beta2", type=float, nargs="+", default=[0.95, 0.99, 0.999])
    ap.add_argument("--steps", type=int, default=3000)
    a = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
    print("beta2 | steps | eta*lambda1(P^-1 H) | speed of x: Adam, reduction | "
          "mean y^2, reduction's s | nu_hat_y / (mean y^2 (a + x)^2)")
    for beta2 in a.beta2:
        ws, nus = run(beta2, a.steps)
        for lo, hi in ((a.steps // 15, a.steps // 3), (2 * a.steps // 3, a.steps - 1)):
            x, nx, ny = ws[lo:hi, 0], nus[lo:hi, 0], nus[lo:hi, 1]
            rate = np.asarray(rmsprop_rate(beta2, np.arange(lo, hi), bias_correction=True))
            s = ((LR * C / np.sqrt(nx) + EDGE * rate * np.sqrt(ny) / (2 * LR))
                 / (EDGE * rate * (A + x) ** 2 / (2 * LR * np.sqrt(ny)) + LR / (2 * np.sqrt(nx))))
            y2 = np.mean(ws[lo:hi, 1] ** 2)
            print(f"{beta2} | {lo}-{hi} | {np.mean(LR * (A + x) / np.sqrt(ny)):.2f} | "
                  f"{np.diff(ws[lo:hi + 1, 0]).mean():.6f}, "
                  f"{np.mean(LR * (C - s / 2) / np.sqrt(nx)):.6f} | "
                  f"{y2:.3e}, {s.mean():.3e} | {np.mean(ny) / np.mean(y2 * (A + x) ** 2):.3f}")


if __name__ == "__main__":
    main()
