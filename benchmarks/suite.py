"""eosflow against the methods researchers use today, side by side, in one run (issues 3, 7).

Every row is a workload with eosflow's figure, a baseline's figure measured in the same
process (interleaved where it matters: the machine's speed swings), and their ratio. Times
are medians of repeats after a warm-up call; compile times are reported in their own table.
Baselines (``baselines_torch.py``): eager PyTorch, Cohen et al.'s double-backward HVP +
SciPy ``eigsh``, power iteration with PyHessian's stopping rule, and bare JAX loops.

Run from the repository root::

    python benchmarks/suite.py --quick   # ~7 min on the shared 2-core VM, less when idle
    python benchmarks/suite.py           # the full run: ~19 min there

The JSON goes to ``benchmarks/results/suite.json`` (``suite_quick.json`` with ``--quick``).
``benchmarks/README.md`` explains each row.
"""

import argparse
import itertools
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from _common import (
    digits_mlp,
    fit_exponent,
    fmt_time,
    gd_trajectory,
    interleave,
    print_table,
    save,
    timed_run,
    timeit,
)
from eosflow.curvature import (
    extrapolated_start,
    hessian_operator,
    push_warm_start,
    top_eigenpairs,
    tracking_history,
)

try:  # the baselines need PyTorch; without it the JAX-only sections still run
    import torch

    import baselines_torch as bt
except ImportError:
    torch = bt = None
from eosflow.experiments import Config
from eosflow.problems import MLP, Dataset, load_digits, supervised_problem


@dataclass(frozen=True)
class Settings:
    rounds: int  # interleaved rounds for the loop comparisons
    gd_steps: int  # steps per timing of the bare and eager GD loops
    runner_steps: int  # steps of a timed runner run on the MLP (chunks of 100)
    hvp_rounds: int  # interleaved rounds for single HVPs and gradients
    warmup: int  # GD steps before the EoS window
    track: int  # steps of the EoS window (lambda1 tracked at each)
    cohen_track: int  # steps of the window on which the Cohen-style baseline runs
    points: int  # points of the window for the one-estimate comparison
    estimate_repeats: int
    toy_steps: int  # runner / bare-scan steps on toy A
    toy_torch_steps: int
    sweep_steps: int
    sweep_chunk: int
    growth_repeats: int
    growth_eig_repeats: int
    peak_sizes: tuple[int, ...]
    cnn_rounds: int


QUICK = Settings(rounds=2, gd_steps=30, runner_steps=400, hvp_rounds=7, warmup=1330, track=20,
                 cohen_track=8, points=3, estimate_repeats=3, toy_steps=100_000,
                 toy_torch_steps=1000, sweep_steps=2000, sweep_chunk=500, growth_repeats=3,
                 growth_eig_repeats=1, peak_sizes=(1024, 2048), cnn_rounds=1)
FULL = Settings(rounds=3, gd_steps=100, runner_steps=1000, hvp_rounds=15, warmup=1200,
                track=200, cohen_track=100, points=8, estimate_repeats=5, toy_steps=300_000,
                toy_torch_steps=3000, sweep_steps=6000, sweep_chunk=1000, growth_repeats=7,
                growth_eig_repeats=3, peak_sizes=(1024, 2048, 4096), cnn_rounds=3)

LR = 0.1  # digits MLP: 2/LR = 20, the sharpness GD settles at (Edge of Stability)
# lambda_2/lambda_1 reaches 0.9989 at GD step 1343 (a near-crossing): the quick window
# (steps 1330..1349) and the full one (1200..1399) both hold it
HVP_CHAIN = 10  # linearized HVPs chained in one program, as the eigen-solvers apply them
TRACK_BLOCK = 2  # lambda1 tracked with the top pair, as the runner does (eig_block None)
TOY_LR, TOY_X0 = 0.1, (14.7, -3.0)
SWEEP_LRS = np.geomspace(0.01, 1.0, 1024)
# toy A with record_every: one metrics row per RECORD_EVERY steps, which makes long chunks
# affordable (a chunk's fixed cost, its three fsynced files, is ~30 ms on the 2-core VM:
# 3 µs per step in 10 000-step chunks); a sweep's 1024 points recorded every step would
# hold 40 MB of rows per 1000 steps
RECORD_EVERY, TOY_LONG_CHUNK, SWEEP_LONG_CHUNK = 1000, 1_000_000, 10_000


class Report:
    """The main table's rows, the side tables, and the JSON payload."""

    def __init__(self):
        self.rows: list[list] = []
        self.compile: list[list] = []
        self.accuracy: list[list] = []
        self.growth: list[list] = []
        self.notes: list[str] = []
        self.payload: dict = {}

    def row(self, workload, eos, base, ratio, target="", met=None):
        flag = "" if met is None else ("yes" if met else "NO")
        self.rows.append([workload, eos, base, _ratio(ratio), target, flag])
        self.payload.setdefault("rows", []).append(
            {"workload": workload, "eosflow": eos, "baseline": base, "ratio": ratio,
             "target": target, "met": met})

    def skip(self, workload, why):
        self.rows.append([workload, "skipped", why, "", "", ""])
        self.payload.setdefault("rows", []).append({"workload": workload, "skipped": why})


def _ratio(r):
    if r is None or (isinstance(r, float) and not math.isfinite(r)):
        return "n/a"
    return f"{r:.3g}x"


def _per_s(s: float) -> str:
    return f"{fmt_time(s)} ({1 / s:,.0f}/s)"


def _rel(lam, ref):
    return np.abs(np.asarray(lam, np.float64) - ref) / np.abs(ref)


def _tree_index(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


# --- the digits MLP: one GD step --------------------------------------------------------------


def mlp_gd_step(S: Settings, ctx: dict, rep: Report) -> None:
    prob = ctx["problem"]
    grad = jax.grad(prob.full_loss)
    step = jax.jit(lambda p: optax.tree.add_scale(p, -LR, grad(p)))
    n = S.gd_steps

    def bare_loop():
        p = prob.params
        for _ in range(n):
            p = step(p)
        return p

    @jax.jit
    def bare_scan(p):
        body = lambda x, _: (optax.tree.add_scale(x, -LR, grad(x)), None)
        return jax.lax.scan(body, p, None, length=n)[0]

    model = bt.mlp_from_eqx(prob.params)
    torch_loop = bt.gd_loop(model, bt.mse, ctx["tx"], ctx["ty"], LR)
    config = Config(name="bench-mlp-gd", lr=LR, steps=S.runner_steps, chunk_steps=100,
                    eig_every=None)
    no_eval = config.replace(eval_every=None)
    per = {"bare": [], "scan": [], "torch": [], "runner": [], "runner_no_eval": []}
    fastest = {"bare": math.inf, "runner": math.inf, "torch": math.inf}
    compile_s = {}
    for r in range(S.rounds):
        t = interleave({"bare": bare_loop, "scan": lambda: bare_scan(prob.params),
                        "torch": lambda: torch_loop(n)}, rounds=3)
        for k in ("bare", "scan", "torch"):
            per[k].append(t[k]["median_s"] / n)
        for k in ("bare", "torch"):
            fastest[k] = min(fastest[k], t[k]["min_s"] / n)
        if r == 0:
            compile_s["bare jitted GD step (+ n steps)"] = t["bare"]["first_s"]
            compile_s["bare lax.scan GD (+ n steps)"] = t["scan"]["first_s"]
        run = timed_run(config, problem=prob)
        per["runner"].append(run["step_s"])
        fastest["runner"] = min(fastest["runner"], min(run["chunk_gaps_s"]) / 100)
        per["runner_no_eval"].append(timed_run(no_eval, problem=prob)["step_s"])
        if r == 0:
            compile_s["runner, MLP, eig off (first chunk's extra time)"] = run["compile_s"]
    ratio_bare = statistics.median(a / b for a, b in zip(per["runner"], per["bare"], strict=True))
    ratio_torch = statistics.median(
        a / b for a, b in zip(per["torch"], per["runner"], strict=True))
    med = {k: statistics.median(v) for k, v in per.items()}
    rep.row("MLP GD step: runner (metrics, eig off) vs bare jitted GD step",
            fmt_time(med["runner"]), fmt_time(med["bare"]), 1 / ratio_bare,
            "runner <= 1.1x bare (ratio >= 0.909)", ratio_bare <= 1.1)
    rep.row("MLP GD step: runner vs bare lax.scan of GD steps", fmt_time(med["runner"]),
            fmt_time(med["scan"]), statistics.median(
                b / a for a, b in zip(per["runner"], per["scan"], strict=True)), "(info)")
    rep.row("MLP GD step: runner with eval_every=None (no accuracy pass) vs bare jitted step",
            fmt_time(med["runner_no_eval"]), fmt_time(med["bare"]), statistics.median(
                b / a for a, b in zip(per["runner_no_eval"], per["bare"], strict=True)),
            "(diagnosis)")
    rep.row("MLP GD step: runner vs eager PyTorch (SGD)", fmt_time(med["runner"]),
            fmt_time(med["torch"]), ratio_torch, ">= 2x", ratio_torch >= 2)
    for k, v in compile_s.items():
        rep.compile.append([k, fmt_time(v)])
    rep.notes.append(
        f"MLP GD step by fastest times instead of medians: runner {fmt_time(fastest['runner'])}, "
        f"bare jitted {fmt_time(fastest['bare'])} (runner/bare "
        f"{fastest['runner'] / fastest['bare']:.3f}), eager torch {fmt_time(fastest['torch'])} "
        f"(torch/runner {fastest['torch'] / fastest['runner']:.2f}).")
    rep.payload["mlp_gd_step"] = {"per_step_s": per, "median_s": med, "fastest_s": fastest,
                                  "runner_over_bare": ratio_bare,
                                  "torch_over_runner": ratio_torch, "compile_s": compile_s}
    ctx["gd_step_s"] = med


# --- the digits MLP: one HVP ------------------------------------------------------------------


def mlp_hvp(S: Settings, ctx: dict, rep: Report) -> None:
    prob = ctx["problem"]
    params = ctx["eos_params"]
    hvp = jax.jit(lambda p, v: hessian_operator(prob.loss_fn, p, batches=prob.batches).mv(v))
    grad = jax.jit(jax.grad(prob.full_loss))
    v = optax.tree.random_like(jax.random.key(1), params)
    model = bt.mlp_from_eqx(params)
    fresh = bt.TorchHessian(model, bt.mse, ctx["tx"], ctx["ty"])
    kept = bt.TorchHessian(model, bt.mse, ctx["tx"], ctx["ty"], retain=True)
    vt = torch.from_numpy(np.array(ravel_pytree(v)[0]))
    check = np.asarray(ravel_pytree(hvp(params, v))[0])
    diff = np.linalg.norm(check - fresh.mv(vt).numpy()) / np.linalg.norm(check)
    _, lin = jax.linearize(jax.grad(lambda q: prob.full_loss(q)), params)
    apply_lin = jax.jit(lambda f, u: f(u))
    # as the eigen-solvers apply it: HVP_CHAIN products in one compiled loop (the single
    # call above also pays a dispatch with the residuals as arguments)
    chain = jax.jit(lambda f, u: jax.lax.fori_loop(
        0, HVP_CHAIN, lambda i, w: optax.tree.scale(1 / (2 / LR), f(w)), u))
    t = interleave({
        "eos_hvp": lambda: hvp(params, v),
        "jax_hvp_linearized": lambda: apply_lin(lin, v),
        "jax_hvp_chained": lambda: chain(lin, v),
        "eos_grad": lambda: grad(params),
        "torch_hvp_fresh": lambda: fresh.mv(vt),
        "torch_hvp_retained": lambda: kept.mv(vt),
        "torch_grad": fresh.gradient,
    }, rounds=S.hvp_rounds)
    med = {k: d["median_s"] for k, d in t.items()}
    best_torch = min(med["torch_hvp_fresh"], med["torch_hvp_retained"])
    rep.row("MLP HVP: forward-over-reverse vs torch double backward (Cohen: fresh graph)",
            fmt_time(med["eos_hvp"]), fmt_time(med["torch_hvp_fresh"]),
            med["torch_hvp_fresh"] / med["eos_hvp"], "(info)")
    rep.row("MLP HVP: vs torch double backward (PyHessian: graph kept)",
            fmt_time(med["eos_hvp"]), fmt_time(med["torch_hvp_retained"]),
            med["torch_hvp_retained"] / med["eos_hvp"], "(info)")
    rep.row("MLP HVP, linearized once and reused (jax.linearize) vs torch graph kept",
            fmt_time(med["jax_hvp_linearized"]), fmt_time(med["torch_hvp_retained"]),
            med["torch_hvp_retained"] / med["jax_hvp_linearized"], "(diagnosis)")
    rep.row(f"MLP HVP, linearized once, {HVP_CHAIN} products chained in one program (as in "
            "the eigen-solvers) vs torch graph kept", fmt_time(med["jax_hvp_chained"] / HVP_CHAIN),
            fmt_time(med["torch_hvp_retained"]),
            med["torch_hvp_retained"] / (med["jax_hvp_chained"] / HVP_CHAIN), "(diagnosis)")
    rep.row("MLP HVP / gradient: eosflow vs torch (fresh graph)",
            f"{med['eos_hvp'] / med['eos_grad']:.2f}",
            f"{med['torch_hvp_fresh'] / med['torch_grad']:.2f}", None,
            "eosflow <= 2.5 (issue 2)", med["eos_hvp"] / med["eos_grad"] <= 2.5)
    rep.compile.append(["eosflow HVP (jit)", fmt_time(t["eos_hvp"]["first_s"])])
    rep.compile.append(["eosflow gradient (jit)", fmt_time(t["eos_grad"]["first_s"])])
    rep.payload["mlp_hvp"] = {"timings": t, "best_torch_hvp_s": best_torch,
                              "eos_vs_torch_rel_diff": float(diff)}
    rep.notes.append(f"HVP check: eosflow and torch HVPs agree to {diff:.1e} (relative).")
    ctx["hvp_s"], ctx["grad_s"] = med["eos_hvp"], med["eos_grad"]
    ctx["hvp_linearized_s"] = med["jax_hvp_chained"] / HVP_CHAIN  # as the solvers apply it
    ctx["torch_hvp_s"], ctx["torch_grad_s"] = med["torch_hvp_fresh"], med["torch_grad"]


# --- the digits MLP: lambda1 at the Edge of Stability ------------------------------------------


def eos_window(S: Settings, ctx: dict, rep: Report) -> None:
    """GD to the EoS, the next ``track`` iterates, and a converged reference at each."""
    prob = ctx["problem"]
    t0 = time.perf_counter()
    traj = gd_trajectory(prob, LR, S.warmup, S.track)
    jax.block_until_ready(traj)
    ctx["traj"] = traj
    ctx["eos_params"] = _tree_index(traj, 0)
    t_traj = time.perf_counter() - t0

    @jax.jit
    def reference(traj, v0):
        def body(v, p):
            r = top_eigenpairs(prob.loss_fn, p, 3, v0=v, batches=prob.batches, tol=1e-5,
                               max_matvecs=2000, throw=False)
            return r.warm_start, (r.eigenvalues, r.converged, r.num_matvecs)

        return jax.lax.scan(body, v0, traj)[1]

    t0 = time.perf_counter()
    lams, conv, mv = jax.device_get(reference(traj, _random_block(prob.params, 3)))
    ctx["lam_ref"] = lams[:, 0].astype(np.float64)
    ctx["ref_converged"] = conv
    rep.notes.append(
        f"EoS window: {S.track} GD steps at lr {LR} after {S.warmup} warm-up steps; reference "
        f"lambda1 {lams[:, 0].min():.3f}..{lams[:, 0].max():.3f} (2/lr = {2 / LR:g}), median "
        f"lambda2/lambda1 {np.median(lams[:, 1] / lams[:, 0]):.4f} (max "
        f"{np.max(lams[:, 1] / lams[:, 0]):.4f}); reference = warm-started "
        f"top_eigenpairs k=3, tol 1e-5, converged at {conv.mean():.0%} of steps "
        f"({mv.mean():.0f} HVPs/step); trajectory {t_traj:.1f} s, reference "
        f"{time.perf_counter() - t0:.1f} s.")
    rep.payload["eos_window"] = {"lambda_ref": lams.tolist(), "ref_converged": conv.tolist(),
                                 "ref_matvecs": mv.tolist()}


def _random_block(params, b, seed=7):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, (b, *x.shape), x.dtype)
                                        for k, x in zip(keys, leaves, strict=True)])


def lambda_once(S: Settings, ctx: dict, rep: Report) -> None:
    """One lambda1 estimate at a few points of the window: eosflow cold and warm, Cohen-style
    eigsh (LM and LA), power iteration; each timed at the same points and checked."""
    prob, traj, ref = ctx["problem"], ctx["traj"], ctx["lam_ref"]
    cold = jax.jit(lambda p: top_eigenpairs(prob.loss_fn, p, 1, batches=prob.batches, tol=1e-3))
    warm = jax.jit(lambda p, v0: top_eigenpairs(prob.loss_fn, p, 1, v0=v0, batches=prob.batches,
                                                tol=1e-3))
    idx = np.linspace(1, S.track - 1, S.points).astype(int)
    res = {m: {"s": [], "mv": [], "lam": []} for m in
           ("eos_cold", "eos_warm", "cohen_LM", "cohen_LA", "power")}
    first = {}
    for i in idx:
        p, prev = _tree_index(traj, int(i)), _tree_index(traj, int(i) - 1)
        t0 = time.perf_counter()
        v0 = jax.block_until_ready(cold(prev)).warm_start
        first.setdefault("eos_cold", time.perf_counter() - t0)
        for name, fn in (("eos_cold", lambda p=p: cold(p)),
                         ("eos_warm", lambda p=p, v0=v0: warm(p, v0))):
            t = timeit(fn, repeats=S.estimate_repeats)
            out = fn()
            first.setdefault(name, t["first_s"])
            res[name]["s"].append(t["median_s"])
            res[name]["mv"].append(int(out.num_matvecs))
            res[name]["lam"].append(float(out.eigenvalues[0]))
        model = bt.mlp_from_eqx(p)
        for which in ("LM", "LA"):
            h = bt.TorchHessian(model, bt.mse, ctx["tx"], ctx["ty"])
            out = bt.cohen_sharpness(h, which=which)
            res[f"cohen_{which}"]["s"].append(out["seconds"])
            res[f"cohen_{which}"]["mv"].append(out["num_matvecs"])
            res[f"cohen_{which}"]["lam"].append(float(out["eigenvalues"][0]))
        h = bt.TorchHessian(model, bt.mse, ctx["tx"], ctx["ty"], retain=True)
        out = bt.power_iteration(h, tol=1e-3, seed=int(i))
        res["power"]["s"].append(out["seconds"])
        res["power"]["mv"].append(out["num_matvecs"])
        res["power"]["lam"].append(out["eigenvalue"])
    summary = {}
    labels = {"eos_cold": "eosflow top_eigenpairs, cold, tol 1e-3",
              "eos_warm": "eosflow top_eigenpairs, warm (previous step's vector)",
              "cohen_LM": "Cohen-style eigsh which='LM' (their default), cold",
              "cohen_LA": "Cohen-style eigsh which='LA', cold",
              "power": "power iteration, PyHessian rule (1e-3), cold"}
    for name, d in res.items():
        err = _rel(d["lam"], ref[idx])
        summary[name] = {"median_s": statistics.median(d["s"]), "mean_matvecs": np.mean(d["mv"]),
                         "max_rel_err": float(err.max()), "off_1e-3": int((err > 1e-3).sum()),
                         **d}
        rep.accuracy.append([f"once @ {len(idx)} points: {labels[name]}",
                             fmt_time(summary[name]["median_s"]),
                             f"{np.mean(d['mv']):.1f}", f"{err.max():.1e}",
                             f"{int((err > 1e-3).sum())}/{len(idx)}"])
    e_c, e_w = summary["eos_cold"], summary["eos_warm"]

    def cell(s):
        return f"{fmt_time(s['median_s'])}, {s['mean_matvecs']:.0f} HVP, err {s['max_rel_err']:.0e}"

    for base in ("cohen_LM", "cohen_LA", "power"):
        b = summary[base]
        rep.row(f"MLP lambda1 once, cold: eosflow vs {labels[base]}", cell(e_c), cell(b),
                b["median_s"] / e_c["median_s"], "(info)")
    rep.row("MLP lambda1 once, warm: eosflow vs Cohen-style eigsh LA", cell(e_w),
            cell(summary["cohen_LA"]), summary["cohen_LA"]["median_s"] / e_w["median_s"],
            "(info)")
    rep.compile.append(["eosflow top_eigenpairs cold (jit)", fmt_time(first["eos_cold"])])
    rep.compile.append(["eosflow top_eigenpairs warm (jit)", fmt_time(first["eos_warm"])])
    rep.payload["lambda_once"] = {"points": idx.tolist(), **summary}


def lambda_tracking(S: Settings, ctx: dict, rep: Report) -> None:
    """lambda1 at every step of the window: eosflow warm-started in one compiled scan and inside
    the runner, against Cohen-style eigsh at every step."""
    prob, traj, ref = ctx["problem"], ctx["traj"], ctx["lam_ref"]
    n = S.track

    def track(traj, history):
        def body(h, p):  # as the runner does: the step's gradient (timed here) and the
            # solve share one linearisation, the gradient is the hint; k + 1 vectors,
            # started from the same phase's solves, the fresh direction multiplied only
            # when they and their Krylov continuation fail
            _, grad, op = hessian_operator(prob.loss_fn, p, batches=prob.batches).linearize()
            v0 = extrapolated_start(h, TRACK_BLOCK, period=2)
            r = top_eigenpairs(op, p, 1, v0=v0, tol=1e-3, hint=grad, min_matvecs=TRACK_BLOCK)
            return (push_warm_start(h, r.warm_start),
                    (r.eigenvalues[0], r.num_matvecs, r.converged))

        return jax.lax.scan(body, history, traj)[1]

    v0 = tracking_history(prob.params, TRACK_BLOCK, period=2)
    t0 = time.perf_counter()
    compiled = jax.jit(track).lower(traj, v0).compile()
    compile_scan = time.perf_counter() - t0
    t = timeit(lambda: compiled(traj, v0), repeats=max(1, S.rounds - 1))
    lam, mv, conv = jax.device_get(compiled(traj, v0))
    err = _rel(lam, ref)
    scan = {"s_per_estimate": t["median_s"] / n, "mean_matvecs": float(mv.mean()),
            "max_rel_err": float(err.max()), "off_1e-3": int((err > 1e-3).sum()),
            "converged": float(conv.mean()), "matvecs": mv.tolist(), "lam": lam.tolist()}
    rep.accuracy.append([f"tracking {n} steps: eosflow warm (top pair, extrapolated), scan",
                         fmt_time(scan["s_per_estimate"]), f"{scan['mean_matvecs']:.2f}",
                         f"{err.max():.1e}", f"{scan['off_1e-3']}/{n}"])
    rep.compile.append(["eosflow tracking scan (AOT compile)", fmt_time(compile_scan)])

    # inside the runner: the same GD from the window's first point, eig on and off
    start = eqx.tree_at(lambda p: p.params, prob, ctx["eos_params"])
    chunk = max(1, n // 4) if n < 400 else 100
    steps = chunk * (n // chunk)
    base_cfg = Config(name="bench-track", lr=LR, steps=steps, chunk_steps=chunk,
                      eig_every=None, track_alignment=False)
    on_cfg = base_cfg.replace(eig_every=1, eig_tol=1e-3)
    offs, ons = [], []
    for _ in range(max(1, S.rounds - 1)):
        off = timed_run(base_cfg, problem=start)
        on = timed_run(on_cfg, problem=start)
        offs.append(off["step_s"])
        ons.append(on["step_s"])
    m = on["record"].metrics
    r_lam, r_mv, r_conv = m["lambda_1"], m["eig_matvecs"], m["eig_converged"]
    r_err = _rel(r_lam, ref[:len(r_lam)])
    bare_loss = np.asarray(jax.vmap(prob.full_loss)(jax.tree.map(lambda x: x[:len(r_lam)],
                                                                  traj)))
    drift = float(np.max(np.abs(m["loss"] - bare_loss) / bare_loss))
    runner = {"s_per_estimate": statistics.median(ons) - statistics.median(offs),
              "step_on_s": ons, "step_off_s": offs, "mean_matvecs": float(r_mv.mean()),
              "max_rel_err": float(r_err.max()), "off_1e-3": int((r_err > 1e-3).sum()),
              "converged": float(r_conv.mean()), "loss_drift_vs_window": drift,
              "compile_s": on["compile_s"], "matvecs": r_mv.tolist(), "lam": r_lam.tolist()}
    rep.accuracy.append([f"tracking {len(r_lam)} steps: eosflow inside the runner (eig_every=1)",
                         fmt_time(runner["s_per_estimate"]) + " (step on - off)",
                         f"{runner['mean_matvecs']:.2f}", f"{r_err.max():.1e}*",
                         f"{runner['off_1e-3']}/{len(r_lam)}"])
    rep.notes.append(f"* the runner's iterates are its own; they follow the window's to "
                     f"{drift:.1e} in loss, and its estimates are compared with the window's "
                     f"reference.")
    rep.compile.append(["runner, MLP, eig every step (first chunk's extra time)",
                        fmt_time(on["compile_s"])])

    if bt is None:
        rep.payload["lambda_tracking"] = {"scan": scan, "runner": runner, "cohen": None,
                                          "scan_compile_s": compile_scan}
        rep.notes.append("PyTorch not installed: the Cohen-style baseline was not measured.")
        return
    # Cohen-style: cold eigsh at every step, in a Python loop
    cohen = {}
    model = bt.mlp_from_eqx(prob.params)
    for which in ("LA", "LM"):
        lam_c, mv_c, sec = [], [], []
        for i in range(S.cohen_track):
            _load_weights(model, _tree_index(traj, i))
            out = bt.cohen_sharpness(bt.TorchHessian(model, bt.mse, ctx["tx"], ctx["ty"]),
                                     which=which)
            lam_c.append(out["eigenvalues"][0])
            mv_c.append(out["num_matvecs"])
            sec.append(out["seconds"])
        e = _rel(lam_c, ref[: S.cohen_track])
        cohen[which] = {"s_per_estimate": float(np.mean(sec)), "median_s": statistics.median(sec),
                        "mean_matvecs": float(np.mean(mv_c)), "max_rel_err": float(e.max()),
                        "off_1e-3": int((e > 1e-3).sum()), "lam": lam_c}
        rep.accuracy.append([f"tracking {S.cohen_track} steps: Cohen-style eigsh {which}, cold",
                             fmt_time(cohen[which]["s_per_estimate"]),
                             f"{np.mean(mv_c):.1f}", f"{e.max():.1e}",
                             f"{int((e > 1e-3).sum())}/{S.cohen_track}"])

    def cell(d):
        return f"{fmt_time(d['s_per_estimate'])}/est, err {d['max_rel_err']:.0e}"

    base = cohen["LA"]
    for label, d in (("compiled scan", scan), ("inside the runner", runner)):
        ratio = base["s_per_estimate"] / d["s_per_estimate"]
        accurate = d["off_1e-3"] == 0 and d["max_rel_err"] <= max(base["max_rel_err"], 1e-3)
        rep.row(f"MLP lambda1 every step ({n} at EoS), warm, {label} vs Cohen-style eigsh LA",
                cell(d), cell(base), ratio, ">= 20x at equal/better accuracy",
                ratio >= 20 and accurate)
    rep.payload["lambda_tracking"] = {"scan": scan, "runner": runner, "cohen": cohen,
                                      "scan_compile_s": compile_scan}


def _load_weights(model, params) -> None:  # model: a torch.nn.Sequential
    lins = [m for m in model if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for lin, layer in zip(lins, params.layers, strict=True):
            lin.weight.copy_(torch.from_numpy(np.array(layer.weight, np.float32)))
            lin.bias.copy_(torch.from_numpy(np.array(layer.bias, np.float32)))


# --- toy A ----------------------------------------------------------------------------------


def toy_a(S: Settings, ctx: dict, rep: Report) -> None:
    f = lambda z: (1 + z[0] ** 2) * z[1] ** 2
    x0 = jnp.asarray(TOY_X0, jnp.float32)
    n = S.toy_steps

    def ngd(x, lr):
        g = jax.grad(f)(x)
        return x - lr * g / jnp.linalg.norm(g)

    @jax.jit
    def bare(x):
        return jax.lax.scan(lambda x, _: (ngd(x, TOY_LR), None), x, None, length=n)[0]

    from eosflow.optim import normalized_gd

    opt = normalized_gd(TOY_LR)

    @jax.jit
    def with_optimizer(x):
        def body(c, _):
            x, s = c
            loss, g = jax.value_and_grad(f)(x)
            u, s = opt.update(g, s, x, value=loss)
            return (x + u, s), None

        return jax.lax.scan(body, (x, opt.init(x)), None, length=n // 10)[0]

    # no PyTorch: the eager-loop rows are skipped, the rest runs
    torch_loop = bt.toy_a_normalized_gd_loop(TOY_X0, TOY_LR) if bt is not None else None
    m = S.toy_torch_steps
    config = Config(name="bench-toy-a", problem="toy_a", dataset="none",
                    optimizer="normalized_gd", lr=TOY_LR, steps=n, chunk_steps=10_000,
                    eig_every=None, dtype="float32", x0=TOY_X0)
    # the same run in 1M-step chunks, every row and one per RECORD_EVERY steps
    long = config.replace(steps=3 * TOY_LONG_CHUNK, chunk_steps=TOY_LONG_CHUNK,
                          name="bench-toy-a-long")
    decimated = long.replace(record_every=RECORD_EVERY, name="bench-toy-a-decimated")
    per = {"bare": [], "torch": [], "runner": [], "optimizer": [], "runner_long": [],
           "runner_k": []}
    for r in range(S.rounds):
        fns = {"bare": lambda: bare(x0), "optimizer": lambda: with_optimizer(x0)}
        if torch_loop is not None:
            fns["torch"] = lambda: torch_loop(m)
        t = interleave(fns, rounds=3)
        per["bare"].append(t["bare"]["median_s"] / n)
        if torch_loop is not None:
            per["torch"].append(t["torch"]["median_s"] / m)
        per["optimizer"].append(t["optimizer"]["median_s"] / (n // 10))
        run = timed_run(config)
        per["runner"].append(run["step_s"])
        per["runner_long"].append(timed_run(long)["step_s"])
        per["runner_k"].append(timed_run(decimated)["step_s"])
        if r == 0:
            rep.compile.append(["toy A bare scan (jit + run)", fmt_time(t["bare"]["first_s"])])
            rep.compile.append(["runner, toy A (first chunk's extra time)",
                                fmt_time(run["compile_s"])])
    chunk_only = _engine_chunk_s(config, None, 10_000, repeats=3)
    slow = statistics.median(a / b for a, b in zip(per["runner"], per["bare"], strict=True))
    slow_k = statistics.median(a / b for a, b in zip(per["runner_k"], per["bare"], strict=True))
    slow_long = statistics.median(a / b for a, b in zip(per["runner_long"], per["bare"],
                                                        strict=True))
    fast = statistics.median(a / b for a, b in zip(per["torch"], per["runner"], strict=True)
                             ) if per["torch"] else None
    med = {k: statistics.median(v) for k, v in per.items() if v}
    rep.row("toy A NGD step: runner (metrics, eig off) vs bare lax.scan NGD",
            _per_s(med["runner"]), _per_s(med["bare"]), 1 / slow,
            "runner <= 2x bare (ratio >= 0.5)", slow <= 2)
    rep.row(f"toy A NGD step: runner, {TOY_LONG_CHUNK:,}-step chunks, every row, vs bare "
            "lax.scan NGD", _per_s(med["runner_long"]), _per_s(med["bare"]), 1 / slow_long,
            "(diagnosis)")
    rep.row(f"toy A NGD step: runner, {TOY_LONG_CHUNK:,}-step chunks, record_every="
            f"{RECORD_EVERY}, vs bare lax.scan NGD", _per_s(med["runner_k"]),
            _per_s(med["bare"]), 1 / slow_k, "runner <= 2x bare (ratio >= 0.5)", slow_k <= 2)
    if fast is None:
        rep.skip("toy A NGD step: runner vs eager PyTorch loop", "PyTorch not installed")
    else:
        rep.row("toy A NGD step: runner vs eager PyTorch loop", _per_s(med["runner"]),
                _per_s(med["torch"]), fast, ">= 1000x", fast >= 1000)
        rep.row("toy A NGD step: bare lax.scan vs eager PyTorch loop", fmt_time(med["bare"]),
                fmt_time(med["torch"]), statistics.median(
                    a / b for a, b in zip(per["torch"], per["bare"], strict=True)), "(info)")
    if chunk_only is not None:
        rep.row("toy A NGD step: the runner's compiled chunk alone (no I/O) vs bare scan",
                fmt_time(chunk_only / 10_000), fmt_time(med["bare"]),
                med["bare"] / (chunk_only / 10_000), "(diagnosis)")
    rep.row("toy A NGD step: scan with eosflow.optim.normalized_gd vs bare scan",
            fmt_time(med["optimizer"]), fmt_time(med["bare"]), statistics.median(
                b / a for a, b in zip(per["optimizer"], per["bare"], strict=True)),
            "(diagnosis)")
    rep.payload["toy_a"] = {"per_step_s": per, "median_s": med, "runner_over_bare": slow,
                            "torch_over_runner": fast, "record_every": RECORD_EVERY,
                            "long_chunk": TOY_LONG_CHUNK, "runner_long_over_bare": slow_long,
                            "runner_record_every_over_bare": slow_k}

    # a sweep of 1024 learning rates, vmapped, through the runner
    lrs = jnp.asarray(SWEEP_LRS, jnp.float32)
    ns = S.sweep_steps

    @jax.jit
    def bare_sweep(x):
        xs = jnp.broadcast_to(x, (lrs.size, 2))
        step = jax.vmap(ngd)
        return jax.lax.scan(lambda x, _: (step(x, lrs), None), xs, None, length=ns)[0]

    sweep_cfg = config.replace(steps=ns, chunk_steps=S.sweep_chunk, name="bench-toy-a-sweep")
    # the sweep in long chunks: affordable only with record_every (its rows: 1024 points x
    # ~10 columns per recorded step)
    sweep_k = sweep_cfg.replace(steps=3 * SWEEP_LONG_CHUNK, chunk_steps=SWEEP_LONG_CHUNK,
                                record_every=RECORD_EVERY, name="bench-toy-a-sweep-decimated")
    eos, base, eos_k = [], [], []
    for _ in range(S.rounds):
        tb = timeit(lambda: bare_sweep(x0), repeats=3)
        run = timed_run(sweep_cfg, sweep={"lr": [float(v) for v in SWEEP_LRS]})
        base.append(tb["median_s"] / ns / lrs.size)
        eos.append(run["step_s"] / lrs.size)
        run_k = timed_run(sweep_k, sweep={"lr": [float(v) for v in SWEEP_LRS]})
        eos_k.append(run_k["step_s"] / lrs.size)
    e, b = statistics.median(eos), statistics.median(base)
    e_k = statistics.median(eos_k)
    sweep_chunk = _engine_chunk_s(sweep_cfg, {"lr": [float(v) for v in SWEEP_LRS]},
                                  S.sweep_chunk, repeats=3)
    if sweep_chunk is not None:
        c = sweep_chunk / S.sweep_chunk / lrs.size
        rep.row("toy A sweep: the runner's compiled chunk alone (no I/O) vs bare vmapped scan",
                fmt_time(c), fmt_time(b), b / c, "(diagnosis)")
    rep.row("toy A sweep of 1024 lr, per step per trajectory: runner vs bare vmapped scan",
            fmt_time(e), fmt_time(b), statistics.median(
                y / x for x, y in zip(eos, base, strict=True)), "runner <= 0.05 µs", e <= 0.05e-6)
    rep.row(f"toy A sweep of 1024 lr, per step per trajectory: runner, {SWEEP_LONG_CHUNK:,}-step "
            f"chunks, record_every={RECORD_EVERY}, vs bare vmapped scan", fmt_time(e_k),
            fmt_time(b), statistics.median(y / x for x, y in zip(eos_k, base, strict=True)),
            "runner <= 0.05 µs", e_k <= 0.05e-6)
    rep.compile.append(["runner, toy A sweep (first chunk's extra time)",
                        fmt_time(run["compile_s"])])
    rep.payload["toy_a_sweep"] = {"runner_s_per_step_traj": eos, "bare_s_per_step_traj": base,
                                  "record_every": RECORD_EVERY, "long_chunk": SWEEP_LONG_CHUNK,
                                  "runner_record_every_s_per_step_traj": eos_k}


def _engine_chunk_s(config, sweep, n, *, repeats):
    """Median time of the runner's compiled ``n``-step chunk alone, without its I/O.

    Diagnosis only: it reaches into the runner's private ``_Engine``; returns None if that
    has changed.
    """
    try:
        from eosflow.problems import build_problem
        from eosflow.runner import Program

        points = None if sweep is None else len(next(iter(sweep.values())))
        engine = Program(config, build_problem(config), sweep, points, None)
        state, hyper = engine.initial_state(), engine.hyper()
        args = (state, hyper)
        if hasattr(engine, "data"):  # newer runner: data passed as a jit argument
            args = (engine.place(state), hyper, engine.data())
        fn = engine.chunk_fn(n)
        return timeit(lambda: fn(*args), repeats=repeats)["median_s"]
    except Exception as err:  # a private API: report, do not fail the suite
        print(f"(runner chunk diagnosis skipped: {type(err).__name__}: {err})")
        return None


# --- a CNN on a CIFAR-sized batch ------------------------------------------------------------


def cnn(S: Settings, ctx: dict, rep: Report) -> None:
    name = "CNN (2x conv32 + pool, 256 x 3x32x32, MSE)"
    try:
        from eosflow.problems import CNN
    except ImportError as err:
        why = f"eosflow.problems.CNN not importable ({err})"
        rep.skip(f"{name}: GD step", why)
        rep.skip(f"{name}: HVP", why)
        return
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, 256)
    y = np.eye(10, dtype=np.float32)[labels]
    data = Dataset(x, y, labels, np.arange(256), "synthetic-cifar")
    model = CNN(3, 10, image_size=32, act="relu", width=32, key=jax.random.key(0),
                dtype=jnp.float32)
    prob = supervised_problem(model, data, loss="mse")
    params = prob.params
    grad = jax.grad(prob.full_loss)
    step = jax.jit(lambda p: optax.tree.add_scale(p, -LR, grad(p)))
    hvp = jax.jit(lambda p, v: hessian_operator(prob.loss_fn, p, batches=prob.batches).mv(v))
    v = optax.tree.random_like(jax.random.key(1), params)
    net = bt.cnn(3, 10, image_size=32, width=32, act="relu")
    same = bt.copy_weights_in_order(params, net)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    if same:
        out_j = np.asarray(jax.vmap(eqx.combine(params, eqx.partition(model, eqx.is_inexact_array)
                                                [1]))(jnp.asarray(x)))
        same = bool(np.allclose(out_j, net(tx).detach().numpy(), rtol=1e-3, atol=1e-4))
    if not same:
        rep.notes.append("CNN: the equinox and torch layouts differ; torch keeps its own init "
                         "(timings are still like for like).")
    opt = torch.optim.SGD(net.parameters(), lr=LR)

    def torch_step():
        opt.zero_grad(set_to_none=True)
        loss = bt.mse(net(tx), ty)
        loss.backward()
        opt.step()

    h = bt.TorchHessian(net, bt.mse, tx, ty)
    vt = torch.randn(h.size, generator=torch.Generator().manual_seed(1))
    # diagnosis: the same gradient without the lax.scan over (one) chunk of data
    one = jax.tree.map(lambda a: a[0], prob.batches)
    grad_flat = jax.jit(jax.grad(lambda p: prob.loss_fn(p, one)))
    grad_scan = jax.jit(grad)
    t = interleave({"eos_step": lambda: step(params), "torch_step": torch_step,
                    "eos_hvp": lambda: hvp(params, v), "torch_hvp": lambda: h.mv(vt),
                    "grad_scan": lambda: grad_scan(params),
                    "grad_no_scan": lambda: grad_flat(params)},
                   rounds=S.cnn_rounds)
    med = {k: d["median_s"] for k, d in t.items()}
    rep.row(f"{name}: gradient, Problem.full_loss (lax.scan over 1 chunk) vs loss_fn directly",
            fmt_time(med["grad_scan"]), fmt_time(med["grad_no_scan"]),
            med["grad_no_scan"] / med["grad_scan"], "(diagnosis)")
    rep.row(f"{name}: GD step, jitted vs eager torch", fmt_time(med["eos_step"]),
            fmt_time(med["torch_step"]), med["torch_step"] / med["eos_step"], "(info)")
    rep.row(f"{name}: HVP, forward-over-reverse vs torch double backward",
            fmt_time(med["eos_hvp"]), fmt_time(med["torch_hvp"]),
            med["torch_hvp"] / med["eos_hvp"], "(info)")
    rep.compile.append(["CNN GD step (jit)", fmt_time(t["eos_step"]["first_s"])])
    rep.payload["cnn"] = {"timings": t, "weights_transferred": same}


# --- cost growth ----------------------------------------------------------------------------


def _width_for(num_params: float) -> int:
    # 64-w-w-10: params = w^2 + 76 w + 10
    return round((-76 + math.sqrt(76**2 + 4 * (num_params - 10))) / 2)


def growth(S: Settings, ctx: dict, rep: Report) -> None:
    base_n = 1797
    base_p = ctx["num_params"]
    digits = load_digits()
    rng = np.random.default_rng(0)
    cases = [("params", f, _width_for(base_p * f), base_n) for f in (1, 4, 16)]
    cases += [("data", f, 200, base_n * f) for f in (4, 16)]
    out = []
    for axis, factor, width, n in cases:
        if n == base_n:
            data = digits
        else:
            x = rng.standard_normal((n, 64)).astype(np.float32)
            labels = rng.integers(0, 10, n)
            data = Dataset(x, np.eye(10, dtype=np.float32)[labels], labels, np.arange(n),
                           "synthetic")
        model = MLP(64, 10, [width, width], "tanh", key=jax.random.key(0))
        prob = supervised_problem(model, data, loss="mse")
        p = prob.params
        grad = jax.jit(jax.grad(prob.full_loss))
        hvp = jax.jit(lambda q, v, prob=prob: hessian_operator(
            prob.loss_fn, q, batches=prob.batches).mv(v))
        eig = jax.jit(lambda q, prob=prob: top_eigenpairs(prob.loss_fn, q, 1,
                                                          batches=prob.batches, tol=1e-3))
        v = optax.tree.random_like(jax.random.key(1), p)
        t = interleave({"grad": lambda g=grad, p=p: g(p), "hvp": lambda h=hvp, p=p, v=v: h(p, v)},
                       rounds=S.growth_repeats)
        te = timeit(lambda e=eig, p=p: e(p), repeats=S.growth_eig_repeats)
        res = eig(p)
        row = {"axis": axis, "factor": factor, "width": width, "examples": n,
               "num_params": int(sum(x.size for x in jax.tree.leaves(p))),
               "grad_s": t["grad"]["median_s"], "hvp_s": t["hvp"]["median_s"],
               "eig_s": te["median_s"], "eig_matvecs": int(res.num_matvecs)}
        out.append(row)
        rep.growth.append([axis, f"x{factor}", width, n, row["num_params"],
                           fmt_time(row["grad_s"]), fmt_time(row["hvp_s"]),
                           f"{row['hvp_s'] / row['grad_s']:.2f}", fmt_time(row["eig_s"]),
                           row["eig_matvecs"]])
    fits = {}
    for axis, size_key in (("params", "num_params"), ("data", "examples")):
        rows = [r for r in out if r["axis"] == axis or (r["factor"] == 1)]
        sizes = [r[size_key] for r in rows]
        fits[axis] = {k: fit_exponent(sizes, [r[k] for r in rows])
                      for k in ("grad_s", "hvp_s", "eig_s")}
        fits[axis]["eig_per_matvec_s"] = fit_exponent(
            sizes, [r["eig_s"] / r["eig_matvecs"] for r in rows])
        f = fits[axis]
        rep.row(f"cost growth with {axis} (x1, x4, x16): log-log exponent of HVP vs gradient",
                f"HVP {f['hvp_s']:.2f}, lambda1 {f['eig_s']:.2f} "
                f"({f['eig_per_matvec_s']:.2f}/HVP)", f"gradient {f['grad_s']:.2f}",
                None, "HVP exponent <= gradient's + 0.05", f["hvp_s"] <= f["grad_s"] + 0.05)
    rep.payload["growth"] = {"cases": out, "exponents": fits}


# --- physical reference ---------------------------------------------------------------------


def mlp_products(sizes: list[int], n: int) -> dict[str, list[tuple[str, int, int, int]]]:
    """The matrix products of one full-batch gradient and one HVP of an MLP on ``n``
    examples, as ``(form, M, K, N)``: ``"ab"`` is an (M, K) by (K, N) product, ``"atb"`` a
    transposed (K, M) operand (the weight gradients, contracted over the examples).

    Gradient: forward (W a per layer), weight gradients (delta a^T) and input gradients
    (W^T delta, not for the data layer). HVP, forward-over-reverse: the primal forward and
    input gradients, the tangent forward (dW a + W da; da = 0 at the data), tangent weight
    gradients (d delta a^T + delta da^T) and tangent input gradients (dW^T delta + W^T d delta);
    the primal weight gradients are dead code that XLA removes. A linearised HVP
    (``hvp_linearized``, the eigen-solvers' products after one ``jax.linearize``) reuses the
    primal pass and computes the tangent products only.
    """
    pairs = list(itertools.pairwise(sizes))
    fwd = [("ab", n, a, b) for a, b in pairs]  # activations (n, a) by W^T (a, b)
    back_w = [("atb", a, n, b) for a, b in pairs]  # a^T (a, n) by delta (n, b)
    back_x = [("ab", n, b, a) for a, b in pairs[1:]]  # delta (n, b) by W (b, a)
    tangent = (fwd + fwd[1:]) + (back_w + back_w[1:]) + 2 * back_x
    return {"forward": fwd, "gradient": fwd + back_w + back_x,
            "hvp": fwd + back_x + tangent, "hvp_linearized": tangent}


def mlp_flops(sizes: list[int], n: int) -> dict[str, int]:
    """Matmul FLOPs (2 per multiply-add) of :func:`mlp_products`' forward pass, gradient and
    HVP. Element-wise work (tanh and its derivatives, the loss) adds about 1% and is left
    out."""
    return {k: 2 * sum(m * kk * nn for _, m, kk, nn in v)
            for k, v in mlp_products(sizes, n).items()}


def _products_seconds(products: list[tuple[str, int, int, int]], repeats: int) -> float:
    """The median time of one jitted program that computes every product of ``products``
    and nothing else (float32, random operands): what the matmuls of a gradient or an HVP
    cost at their own shapes, with one dispatch like the program that holds them."""
    keys = jax.random.split(jax.random.key(0), 2 * len(products))
    operands = [(jax.random.normal(ka, (m, k) if form == "ab" else (k, m), jnp.float32),
                 jax.random.normal(kb, (k, n), jnp.float32))
                for (form, m, k, n), ka, kb in zip(products, keys[::2], keys[1::2], strict=True)]
    forms = [form for form, *_ in products]

    @jax.jit
    def run(operands):
        return [a @ b if form == "ab" else a.T @ b
                for form, (a, b) in zip(forms, operands, strict=True)]

    return timeit(lambda: run(operands), repeats=repeats)["median_s"]


def _xla_flops(fn, *args) -> float | None:
    try:
        cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    except Exception:  # cost analysis is optional in XLA
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def physical(S: Settings, ctx: dict, rep: Report) -> None:
    prob = ctx["problem"]
    fl = mlp_flops([64, 200, 200, 10], 1797)
    p = ctx["eos_params"]
    v = optax.tree.random_like(jax.random.key(1), p)
    xla_grad = _xla_flops(jax.grad(prob.full_loss), p)
    xla_hvp = _xla_flops(lambda q, u: hessian_operator(prob.loss_fn, q,
                                                       batches=prob.batches).mv(u), p, v)
    peak = {}
    for size in S.peak_sizes:
        a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
        mm = jax.jit(lambda a: a @ a)
        t = timeit(lambda mm=mm, a=a: mm(a), repeats=max(5, int(2e10 / (2 * size**3))))
        peak[size] = 2 * size**3 / t["min_s"]
    best = max(peak.values())
    nominal, pipes = _nominal_peak() or (None, "")
    rates = {
        "GD step, runner": (fl["gradient"], ctx["gd_step_s"]["runner"]),
        "GD step, eager torch": (fl["gradient"], ctx["gd_step_s"]["torch"]),
        "gradient, jitted": (fl["gradient"], ctx["grad_s"]),
        "HVP, eosflow": (fl["hvp"], ctx["hvp_s"]),
        "HVP, torch double backward": (fl["hvp"], ctx["torch_hvp_s"]),
    }
    for what, (flops, s) in rates.items():
        rep.row(f"MLP physical: {what}", f"{flops / s / 1e9:.1f} GFLOP/s",
                f"peak {best / 1e9:.1f} GFLOP/s", flops / s / best, "(fraction of peak)")
    # where the rest goes: the same products in one program of their own, at their shapes
    # (skinny: K = 64 at the data layer, N = 10 at the output), against the whole
    products = mlp_products([64, 200, 200, 10], 1797)
    account = {}
    for what, key, step_s in (("gradient, jitted", "gradient", ctx["grad_s"]),
                              ("HVP, eosflow", "hvp", ctx["hvp_s"])):
        mm_s = _products_seconds(products[key], repeats=max(5, S.rounds * 5))
        account[what] = {"products": len(products[key]), "products_s": mm_s, "step_s": step_s,
                         "flops": fl[key]}
        rep.row(f"MLP physical: {what}'s {len(products[key])} products alone, at their shapes",
                f"{fl[key] / mm_s / 1e9:.1f} GFLOP/s", f"peak {best / 1e9:.1f} GFLOP/s",
                fl[key] / mm_s / best, "(fraction of peak)")
        rep.row(f"MLP physical: {what}'s products alone, against the whole {what}",
                fmt_time(mm_s), fmt_time(step_s), mm_s / step_s,
                "(< 1: the rest is element-wise work; >= 1: none to win)")
    rep.notes.append(
        f"FLOPs (counted, matmuls): gradient {fl['gradient'] / 1e6:.0f} MFLOP, HVP "
        f"{fl['hvp'] / 1e6:.0f} MFLOP ({fl['hvp'] / fl['gradient']:.2f}x); XLA cost analysis: "
        f"gradient {_mflop(xla_grad)}, HVP {_mflop(xla_hvp)}. Measured peak: best of jitted "
        f"float32 square matmuls (size: GFLOP/s, fastest of >= 5 runs, all cores) "
        + ", ".join(f"{k}: {val / 1e9:.1f}" for k, val in peak.items())
        + (f"; nominal {nominal / 1e9:.0f} GFLOP/s (cores x cpuinfo MHz x {pipes})."
           if nominal else "."))
    rep.payload["physical"] = {
        "nominal_peak_flops": nominal, "flops_counted": fl, "peak_flops": peak,
        "xla_flops": {"gradient": xla_grad, "hvp": xla_hvp},
        "rates": {k: a / b for k, (a, b) in rates.items()}, "account": account,
    }


def _nominal_peak() -> tuple[float, str] | None:
    """The cores' nominal float32 FLOP/s from /proc/cpuinfo, and how it was counted."""
    import os
    from pathlib import Path

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    mhz = [float(line.split(":")[1]) for line in text.splitlines() if line.startswith("cpu MHz")]
    if not mhz or " avx2" not in text or " fma" not in text:
        return None
    # two FMA pipes at the widest vector width
    per, pipes = ((64, "AVX-512, two 512-bit FMA pipes") if " avx512f" in text
                  else (32, "AVX2, two 256-bit FMA pipes"))
    return (os.cpu_count() or 1) * max(mhz) * 1e6 * per, f"{per} float32 FLOP/cycle: {pipes}"


def _mflop(x):
    return "n/a" if x is None else f"{x / 1e6:.0f} MFLOP"


def calibrate_torch_threads(ctx: dict) -> dict:
    """Give PyTorch the faster of 1 thread and one per core (interleaved HVPs and GD steps on
    the digits MLP), so that the baseline is not slowed by a thread count that does not suit
    a loaded machine. Returns the timings."""
    cores = torch.get_num_threads()
    if cores <= 1:
        return {}
    model = bt.mlp_from_eqx(ctx["problem"].params)
    h = bt.TorchHessian(model, bt.mse, ctx["tx"], ctx["ty"])
    vt = torch.randn(h.size, generator=torch.Generator().manual_seed(0))

    def with_threads(n):
        def run():
            torch.set_num_threads(n)
            h.mv(vt)
            h.gradient()
        return run

    t = interleave({str(n): with_threads(n) for n in (1, cores)}, rounds=6)
    best = min(t, key=lambda k: t[k]["median_s"])
    torch.set_num_threads(int(best))
    return {k: d["median_s"] for k, d in t.items()}


# --- main -----------------------------------------------------------------------------------


# --- compile times, cold, each in a fresh process (issue 17) ----------------------------------

_COLD = r"""
import json, os, subprocess, sys, tempfile, time
sys.path.insert(0, "benchmarks")
t0 = time.perf_counter()
import jax
from _common import digits_mlp
from eosflow.curvature import top_eigenpairs
out = {"import_s": time.perf_counter() - t0}
prob = digits_mlp()
p, loss, batches = prob.params, prob.loss_fn, prob.batches
batch = jax.tree.map(lambda x: x[0], batches)
t0 = time.perf_counter()
jax.block_until_ready(jax.jit(jax.grad(prob.full_loss))(p))
out["grad_first_s"] = time.perf_counter() - t0
t0 = time.perf_counter()
r = top_eigenpairs(loss, p, batch=batch)
jax.block_until_ready(r.eigenvalues)
out["lambda1_first_s"] = time.perf_counter() - t0
t0 = time.perf_counter()
jax.block_until_ready(top_eigenpairs(loss, p, batch=batch, v0=r.warm_start).eigenvalues)
out["lambda1_again_s"] = time.perf_counter() - t0
lowered = []  # retraces of the solver, through JAX's public monitoring events
listen = lambda event, secs, fun_name="", **kw: lowered.append(
    event.endswith("jaxpr_trace_duration") and "_solve" in str(fun_name))
jax.monitoring.register_event_duration_secs_listener(listen)
v, times = r.warm_start, []
for i in range(3):  # the data as an argument: new values, same shapes
    b = jax.tree.map(lambda x: x * (1 + 1e-3 * (i + 1)), batch)
    t0 = time.perf_counter()
    v = top_eigenpairs(loss, p, batch=b, v0=v).warm_start
    jax.block_until_ready(v)
    times.append(time.perf_counter() - t0)
out["batch_arg_loop_s"] = times
jax.monitoring.unregister_event_duration_listener(listen)
out["batch_arg_new_compiles"] = sum(lowered)
times = []
for i in range(2):  # what users write: a fresh closure at every call
    t0 = time.perf_counter()
    v = top_eigenpairs(lambda q: loss(q, batch), p, v0=v).warm_start
    jax.block_until_ready(v)
    times.append(time.perf_counter() - t0)
out["closure_loop_s"] = times
with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "eosflow", "list"], check=True, capture_output=True)
    out["list_s"] = time.perf_counter() - t0
    subprocess.run([sys.executable, "-m", "eosflow", "run", "--out", tmp, "--quiet",
                    "--steps", "100"], check=True, capture_output=True)
    status = json.load(open(os.path.join(tmp, "digits-gd", "status.json")))
    out["run_compile_s"] = status["compile_seconds"]
print(json.dumps(out))
"""


def compile_times(S: Settings, ctx: dict, rep: Report) -> None:
    """Cold compile times in fresh processes with the persistent cache off: the first
    lambda1 on the digits MLP, a loop of calls with new data, the default run's first chunk."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "EOSFLOW_CACHE_DIR": "off", "JAX_COMPILATION_CACHE_DIR": ""}
    runs = []
    for _ in range(max(1, S.rounds - 1)):
        done = subprocess.run([sys.executable, "-c", _COLD], env=env, capture_output=True,
                              text=True, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    best = {k: min(r[k] for r in runs) for k in runs[0] if not isinstance(runs[0][k], list)}
    best["batch_arg_loop_s"] = min(max(r["batch_arg_loop_s"]) for r in runs)
    best["closure_loop_s"] = min(min(r["closure_loop_s"]) for r in runs)
    for label, key in (("gradient, digits MLP (jit, first call)", "grad_first_s"),
                       ("first lambda1, digits MLP (top_eigenpairs, first call)",
                        "lambda1_first_s"),
                       ("lambda1 again, warm start (cached)", "lambda1_again_s"),
                       ("lambda1 with new data as batch= (slowest of 3 calls)",
                        "batch_arg_loop_s"),
                       ("lambda1 with a fresh closure per call (fastest of 2)",
                        "closure_loop_s"),
                       ("`eosflow list` (process)", "list_s"),
                       ("`eosflow run` default: first chunk's compile", "run_compile_s")):
        rep.compile.append([label + " [cold process, cache off]", fmt_time(best[key])])
    rep.payload["compile_cold"] = {"runs": runs, "best": best}
    ctx["compile_cold"] = best


def targets(rep: Report, ctx: dict) -> list[list]:
    """Every target of issue 17 with its measured value, met / missed / not measured."""
    P = rep.payload
    out = []

    def add(target, value, met):
        out.append([target, value, "not measured" if met is None else
                    ("met" if met else "missed")])

    c = ctx.get("compile_cold")
    if c:
        ratio = c["lambda1_first_s"] / c["grad_first_s"]
        add("first lambda1 (digits MLP, compile incl.) <= 1.5 s",
            fmt_time(c["lambda1_first_s"]), c["lambda1_first_s"] <= 1.5)
        add("first lambda1 <= 4x gradient's compile + run", f"{ratio:.1f}x", ratio <= 4)
        add("loop with new data compiles once (batch=)",
            f"{c['batch_arg_new_compiles']} new compiles", c["batch_arg_new_compiles"] == 0)
        add("`eosflow run` default compiles in <= 3 s", fmt_time(c["run_compile_s"]),
            c["run_compile_s"] <= 3)
        add("`eosflow list` answers in <= 1 s", fmt_time(c["list_s"]), c["list_s"] <= 1)
    else:
        for t in ("first lambda1 <= 1.5 s", "`eosflow run` compiles <= 3 s",
                  "`eosflow list` <= 1 s"):
            add(t, "", None)
    tr = P.get("lambda_tracking")
    if tr:
        s, cohen = tr["scan"], (tr["cohen"] or {}).get("LA")
        add("tracking on the EoS window <= 2.5 HVPs/step (compiled scan)",
            f"{s['mean_matvecs']:.2f}", s["mean_matvecs"] <= 2.5)
        add("tracking inside the runner <= 2.5 HVPs/step",
            f"{tr['runner']['mean_matvecs']:.2f}", tr["runner"]["mean_matvecs"] <= 2.5)
        add("every estimate within 1e-3 of the reference",
            f"max {max(s['max_rel_err'], tr['runner']['max_rel_err']):.1e}",
            s["off_1e-3"] == 0 and tr["runner"]["off_1e-3"] == 0)
        ratio = cohen and cohen["s_per_estimate"] / s["s_per_estimate"]
        add(">= 20x faster per estimate than Cohen-style", f"{ratio:.1f}x" if ratio else "",
            None if ratio is None else ratio >= 20)
    else:
        add("tracking on the EoS window <= 2.5 HVPs/step", "", None)
    toy = P.get("toy_a")
    add("toy A runner end to end <= 2x a bare scan",
        f"{toy['runner_over_bare']:.0f}x" if toy else "", toy and toy["runner_over_bare"] <= 2)
    dec = toy and toy.get("runner_record_every_over_bare")
    add(f"toy A runner, {TOY_LONG_CHUNK:,}-step chunks, record_every {RECORD_EVERY}, <= 2x a "
        "bare scan",
        f"{dec:.2f}x" if dec else "", None if not dec else dec <= 2)
    sw = P.get("toy_a_sweep")
    val = statistics.median(sw["runner_s_per_step_traj"]) if sw else None
    add("1024-lr sweep <= 50 ns/step/trajectory", fmt_time(val) if val else "",
        None if val is None else val <= 50e-9)
    val = statistics.median(sw["runner_record_every_s_per_step_traj"]) if sw else None
    add(f"1024-lr sweep, {SWEEP_LONG_CHUNK:,}-step chunks, record_every {RECORD_EVERY}, <= 50 "
        "ns/step/trajectory", fmt_time(val) if val else "", None if val is None else val <= 50e-9)
    ph = P.get("physical")
    for key, part, whole, goal, label in (
            ("GD step, runner", "gradient, jitted", "gradient", 0.75,
             "GD step >= 75% of matmul peak"),
            ("HVP, eosflow", "HVP, eosflow", "HVP", 0.65, "HVP >= 65% of matmul peak")):
        peak = max(ph["peak_flops"].values()) if ph else None
        v = ph["rates"][key] / peak if ph else None
        text = f"{v:.0%}" if v is not None else ""
        a = ph and ph["account"].get(part)
        if a:  # where the rest goes (the physical section's rows)
            text += (f" (its products alone, at their shapes: "
                     f"{a['flops'] / a['products_s'] / peak:.0%}; taking "
                     f"{a['products_s'] / a['step_s']:.0%} of the whole {whole}'s time)")
        add(label, text, None if v is None else v >= goal)
    if "hvp_s" in ctx:  # beside each, the ratio of matmul FLOPs (mlp_flops): its floor
        fl = mlp_flops([64, 200, 200, 10], 1797)
        r = ctx["hvp_s"] / ctx["grad_s"]
        add("HVP <= 2.2 gradients (one HVP, forward-over-reverse)",
            f"{r:.2f} (its matmul FLOPs: {fl['hvp'] / fl['gradient']:.2f}x a gradient's)",
            r <= 2.2)
        r = ctx["hvp_linearized_s"] / ctx["grad_s"]
        add("HVP <= 2.2 gradients (in the eigen-solvers: linearized once, products chained)",
            f"{r:.2f} (its matmul FLOPs: {fl['hvp_linearized'] / fl['gradient']:.2f}x)",
            r <= 2.2)
    else:
        add("HVP <= 2.2 gradients", "", None)
    acc = ctx.get("accelerator")
    vgg = acc and next((r for r in acc["runs"] if r["preset"] == "paper-cifar-vgg-ngd"), None)
    if vgg:  # no target number: the issue asks for the measurement
        out.append(["GPU suite (CIFAR-10-5k VGG-11, steps/s with tracking)",
                    f"{1 / vgg['seconds_per_step']:.2f} steps/s on {acc['device']} "
                    f"(JAX {acc['jax']}, {vgg['matmul_precision']} products)", "measured"])
    else:
        add("GPU suite (CIFAR-10-5k VGG-11, steps/s with tracking)", "", None)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller repeats and windows")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="PyTorch intra-op threads (default: one per core, like XLA)")
    ap.add_argument("--only", nargs="*", default=None,
                    help="run only these sections: gd hvp once track toy cnn growth physical "
                         "compile")
    ap.add_argument("--accelerator-json", type=Path, default=None,
                    help="accelerator_runs.json written by benchmarks/accelerator_runs.py on a "
                         "GPU: its VGG-11 row fills the GPU target")
    args = ap.parse_args(argv)
    S = QUICK if args.quick else FULL
    wall0 = time.perf_counter()
    threads = bt.configure_threads(args.torch_threads) if bt else {"torch": "not installed"}
    rep = Report()
    rep.payload.update(settings=S.__dict__, threads=threads, quick=args.quick)
    data = load_digits()
    problem = digits_mlp()
    ctx = {"problem": problem,
           **({"tx": torch.from_numpy(data.x), "ty": torch.from_numpy(data.y)} if torch else {}),
           "num_params": int(sum(x.size for x in jax.tree.leaves(problem.params)))}
    if args.accelerator_json is not None:
        ctx["accelerator"] = json.loads(args.accelerator_json.read_text())
    if args.torch_threads is None and torch is not None:
        threads["calibration_s"] = calibrate_torch_threads(ctx)
        threads["torch_threads"] = torch.get_num_threads()
    print(f"threads: {threads}; settings: {'quick' if args.quick else 'full'}", flush=True)
    want = set(args.only or ["compile", "gd", "hvp", "once", "track", "toy", "cnn", "growth",
                             "physical"])
    sections = [("compile", compile_times), ("gd", mlp_gd_step), ("window", eos_window),
                ("hvp", mlp_hvp),
                ("once", lambda_once), ("track", lambda_tracking), ("toy", toy_a), ("cnn", cnn),
                ("growth", growth), ("physical", physical)]
    needs_window = want & {"hvp", "once", "track", "physical"}
    for key, fn in sections:
        if key == "window" and not needs_window:
            continue
        if key != "window" and key not in want:
            continue
        if key == "physical" and not {"gd", "hvp"} <= want:
            continue
        t0 = time.perf_counter()
        fn(S, ctx, rep)
        print(f"[{key}: {time.perf_counter() - t0:.0f} s]", flush=True)

    print_table("eosflow vs baselines (ratio = baseline time / eosflow time: > 1 means "
                "eosflow is faster)", ["workload", "eosflow", "baseline", "ratio", "target",
                                       "met"], rep.rows)
    if rep.accuracy:
        print_table("lambda1 estimates on the digits MLP at EoS (errors against the reference)",
                    ["method", "s/estimate", "HVPs", "max rel err", "off > 1e-3"],
                    rep.accuracy)
    if rep.growth:
        print_table("cost growth (digits MLP 64-w-w-10; data: synthetic, width 200)",
                    ["axis", "factor", "width", "examples", "params", "gradient", "HVP",
                     "HVP/grad", "lambda1 (cold)", "HVPs"], rep.growth)
    if rep.compile:
        print_table("compile / first-call times", ["what", "time"], rep.compile)
    goals = targets(rep, ctx)
    rep.payload["targets"] = goals
    print_table("issue 17 targets", ["target", "measured", "status"], goals)
    print()
    for note in rep.notes:
        print(f"- {note}")
    total = time.perf_counter() - wall0
    print(f"- total wall time {total:.0f} s")
    rep.payload["notes"] = rep.notes
    rep.payload["wall_s"] = total
    name = "suite_quick" if args.quick else "suite"
    if args.only:
        name += "_partial"  # never overwrite a complete run's JSON with a partial one
    print(f"\nwrote {save(name, rep.payload)}")


if __name__ == "__main__":
    main()
