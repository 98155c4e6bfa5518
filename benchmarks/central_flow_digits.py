"""Central flow vs GD on a digits MLP: predicted loss vs the two-step-averaged loss after the
EoS onset, weights vs the midpoint iterates, and the cost of a step.

    python benchmarks/central_flow_digits.py --n 300 --widths 32 --lr 0.4 --steps 300
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from eosflow.curvature import top_eigenpairs
from eosflow.flows import central_flow
from eosflow.problems import MLP, load_digits, supervised_problem


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--widths", type=str, default="200,200")
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--substeps", type=int, default=4)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--x64", action="store_true")
    a = ap.parse_args()
    if a.x64:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if a.x64 else jnp.float32
    widths = tuple(int(w) for w in a.widths.split(","))
    data = load_digits(a.n)
    model = MLP(64, 10, widths, "tanh", key=jax.random.key(0), dtype=dtype)
    prob = supervised_problem(model, data, loss="mse", dtype=dtype)
    batch = jax.tree.map(lambda x: x[0], prob.batches)
    loss = lambda p: prob.loss_fn(p, batch)
    w0 = prob.params
    n, lr = a.steps, a.lr

    @jax.jit
    def gd(w0):
        def step(w, _):
            L, g = jax.value_and_grad(loss)(w)
            return optax.tree.add_scale(w, -lr, g), (L, w)
        return jax.lax.scan(step, w0, None, length=n + 1)[1]

    t0 = time.perf_counter()
    ls, ws = jax.block_until_ready(gd(w0))
    t_gd = (time.perf_counter() - t0) / (n + 1)

    @jax.jit
    def stable(w0):  # gradient flow, Euler substeps like the central flow's
        def step(w, _):
            return optax.tree.add_scale(w, -lr / a.substeps, jax.grad(loss)(w)), None
        return jax.lax.scan(step, w0, None, length=n * a.substeps)[0]

    w_stable = stable(w0)
    t0 = time.perf_counter()
    flow = central_flow(loss, w0, lr=lr, num_steps=n, k=a.k, substeps=a.substeps, tol=a.tol,
                        save_every=n)
    jax.block_until_ready(flow)
    t_cf = (time.perf_counter() - t0) / n
    m = flow.metrics
    lam = np.asarray(m.eigenvalues[:, 0])
    onset = int(np.argmax(lam >= 0.99 * 2 / lr)) if np.any(lam >= 0.99 * 2 / lr) else None
    ls = np.asarray(ls)
    two = 0.5 * (ls[1:] + ls[:-1])  # two-step average at t + 1/2 ~ t
    pred = np.asarray(m.predicted_loss)
    def gd_lam(t):
        w_t = jax.tree.map(lambda x: x[t], ws)
        return float(top_eigenpairs(loss, w_t, 1, tol=1e-4).eigenvalues[0])

    # loss at the midpoint iterates (w_{t-1} + 2 w_t + w_{t+1}) / 4, t = 1..n-1; index t
    mids = jax.tree.map(lambda x: 0.25 * (x[:-2] + 2 * x[1:-1] + x[2:]), ws)
    l_mid = np.concatenate([[np.nan], np.asarray(jax.lax.map(loss, mids))])
    print(f"D = {sum(x.size for x in jax.tree.leaves(w0))}, examples = {len(data)}, lr = {lr}, "
          f"2/lr = {2 / lr:.3f}, steps = {n}, k = {a.k}, substeps = {a.substeps}")
    print(f"central flow: lambda1 first >= 0.99*2/lr at step {onset}; sigma2 > 0 from step "
          f"{int(np.argmax(np.asarray(m.sigma2) > 0))}; final lambda1 {lam[-1]:.4f}")
    if onset is not None:
        sl = slice(onset, n)
        rel = np.abs(pred[sl] - two[sl]) / two[sl]
        bare = np.mean(np.abs(np.asarray(m.loss)[sl] - two[sl]) / two[sl])
        print(f"after onset: predicted loss vs GD two-step average, relative error mean "
              f"{rel.mean():.4f}, median {np.median(rel):.4f}, max {rel.max():.4f}; L(w_central) "
              f"without the Sigma term: mean {bare:.4f}")
        w = 20  # a longer window also averages out GD's slow (catapult) oscillation
        kern = np.ones(w) / w
        ma_gd = np.convolve(two[sl], kern, "valid")
        ma_cf = np.convolve(pred[sl], kern, "valid")
        rel_w = np.abs(ma_cf - ma_gd) / ma_gd
        print(f"  {w}-step window averages: relative error mean {rel_w.mean():.4f}, median "
              f"{np.median(rel_w):.4f}, max {rel_w.max():.4f}; whole-window mean loss: GD "
              f"{two[sl].mean():.5f}, central {pred[sl].mean():.5f} "
              f"({abs(pred[sl].mean() / two[sl].mean() - 1):.4f})")
        for t in np.linspace(onset, n - 1, 6).astype(int):
            print(f"  t={t:4d} GD avg {two[t]:.5f}  central pred {pred[t]:.5f}  L(w) "
                  f"{float(m.loss[t]):.5f}  L(w_mid) {l_mid[t]:.5f}  sigma2 "
                  f"{float(m.sigma2[t]):.3e}  lam {lam[t]:.3f}  GD lam {gd_lam(t):.3f}")
    mid = jax.tree.map(lambda x: 0.25 * (x[n - 2] + 2 * x[n - 1] + x[n]), ws)
    w_c = flow.state.params
    d_c = float(optax.tree.norm(optax.tree.sub(w_c, mid)))
    d_s = float(optax.tree.norm(optax.tree.sub(w_stable, mid)))
    print(f"end (t = {n - 1}..{n}): |w_central - w_mid| = {d_c:.4f}, |w_stable - w_mid| = "
          f"{d_s:.4f}, ratio {d_c / d_s:.3f}")
    ok = bool(np.all(np.asarray(m.converged)))
    print(f"cost: GD step {1e3 * t_gd:.2f} ms, central step {1e3 * t_cf:.1f} ms (incl. "
          f"compile), HVPs/step {float(np.mean(np.asarray(m.num_matvecs))):.1f} + "
          f"{a.substeps} x {a.k * (a.k + 1) // 2} third derivatives; converged {ok}; max sdcp "
          f"residual {float(np.max(np.asarray(m.sdcp_residual))):.2e}, max iterations "
          f"{int(np.max(np.asarray(m.sdcp_iters)))}")


if __name__ == "__main__":
    main()
