"""Batch sharpness on the digits MLP: its cost, and where it sits under mini-batch SGD (issue 18).

Workload: the digits MLP 64-200-200-10 (tanh, MSE with the 1/2, 1797 examples, float32);
``--widths``, ``--activation``, ``--init-scale`` and ``--dataset mnist --data-dir DIR`` (with
``--num-examples``, ``--split``, ``--center``) change the network and the data.

``cost``: one ``batch_sharpness`` estimate over ``--num-batches`` batches of ``--batch-size``
against one full-batch gradient and one full-batch HVP, all jitted, timed in alternation in
one process; the estimate's cost in HVPs (as reported) and in gradient-equivalents (time
ratio).

``sgd``: mini-batch SGD (``batch_indices``, without replacement unless ``--replace``) at
``--lr`` for each batch size in ``--sgd-batch-sizes``, ``--steps`` steps in compiled chunks
of ``--every``; at every chunk boundary batch sharpness (``--num-batches`` fresh i.i.d.
batches), the full-batch lambda1 (warm-started ``top_eigenpairs``) and the full loss.
Reports the last-third means against 2/lr, each with the standard error of its mean from
five consecutive blocks (batch means: successive measurements are correlated).

Run: ``python benchmarks/batch_sharpness.py [cost|sgd|both]``; the README's table comes
from ``sgd`` with the default net and with ``--widths 50 --lr 0.5 --steps 6000``.
"""

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from _common import interleave, print_table, save
from eosflow.curvature import batch_sharpness, hessian_operator, top_eigenpairs
from eosflow.problems import batch_indices, random_batch_indices


def _problem(args):
    """The MLP of ``--widths`` and ``--activation`` (MSE with the 1/2) on ``--dataset``; the
    defaults give ``digits_mlp()``."""
    from eosflow.problems import (
        ProblemSpec,
        build_model,
        load_digits,
        load_mnist,
        supervised_problem,
    )

    if args.dataset == "digits":
        data = load_digits(args.num_examples)
    else:
        if args.data_dir is None:
            raise SystemExit("--data-dir: required for --dataset mnist (the idx files' folder)")
        data = load_mnist(args.data_dir, args.num_examples, split=args.split,
                          subset="stratified", seed=args.seed, standardize=False)
        x = data.x.reshape(len(data), -1)
        # statistics of the selected images (the train split's own statistics need the train
        # files, which a test-split run may not have): one global mean and std, or per pixel
        # the mean removed and the global std divided (as load_digits does)
        mean = x.mean(axis=0) if args.center == "pixel" else x.mean()
        data = dataclasses.replace(data, x=((x - mean) / (x - mean).std()).astype(np.float32))
    spec = ProblemSpec(widths=tuple(args.widths), activation=args.activation,
                       init_scale=args.init_scale)
    model = build_model(spec, data.x.shape[1:], 10, jax.random.key(args.seed))
    return supervised_problem(model, data, loss="mse")


def _data(problem):
    return problem.batches["x"][0], problem.batches["y"][0]


def _minibatch_loss(problem):
    """The mean loss over a batch {x, y} of any size (the problem's loss with w = 1/B)."""

    def loss(p, batch):
        b = batch["x"].shape[0]
        return problem.loss_fn(p, {**batch, "w": jnp.full((b,), 1.0 / b, batch["x"].dtype)})

    return loss


def _gather(x, y, idx):
    return {"x": x[idx], "y": y[idx]}


def cost(args, problem):
    x, y = _data(problem)
    n = x.shape[0]
    loss = _minibatch_loss(problem)
    params = problem.params
    idx = random_batch_indices(0, n, args.batch_size, args.num_batches)
    batches = _gather(x, y, idx)
    full = {"x": x, "y": y}
    grad = jax.jit(jax.grad(lambda p: loss(p, full)))
    op = hessian_operator(lambda p: loss(p, full), params)
    hvp = jax.jit(lambda p, v: hessian_operator(lambda q: loss(q, full), p).mv(v))
    bs = jax.jit(lambda p, b: batch_sharpness(loss, p, b))
    mb_grad = jax.jit(lambda p, b: jax.lax.map(lambda bb: jax.grad(loss)(p, bb), b))
    v = op.mv(params)
    times = interleave({
        "full_gradient": lambda: grad(params),
        "full_hvp": lambda: hvp(params, v),
        "batch_sharpness": lambda: bs(params, batches),
        "minibatch_gradients": lambda: mb_grad(params, batches),
    }, rounds=15)
    res = bs(params, batches)
    g = times["full_gradient"]["median_s"]
    rows = [[k, d["median_s"] * 1e3, d["median_s"] / g] for k, d in times.items()]
    print_table(
        f"cost of one batch-sharpness estimate: {args.num_batches} batches of "
        f"{args.batch_size} on {n} examples ({int(res.num_matvecs)} HVPs, "
        f"{int(res.num_grads)} mini-batch gradients)",
        ["what", "median ms", "full gradients"], rows,
    )
    return {"times": times, "num_matvecs": int(res.num_matvecs),
            "num_grads": int(res.num_grads),
            "gradient_equivalents": times["batch_sharpness"]["median_s"] / g,
            "examples_touched_over_n": args.num_batches * args.batch_size / n}


def sgd(args, problem):
    x, y = _data(problem)
    n = x.shape[0]
    loss = _minibatch_loss(problem)
    full = {"x": x, "y": y}
    full_loss = lambda p: loss(p, full)
    sample_key = jax.random.key(args.seed)
    measure_key = jax.random.key(args.seed + 1000)
    out = {}
    for bsz in args.sgd_batch_sizes:

        @jax.jit
        def chunk(params, start, bsz=bsz):
            def body(p, t):
                idx = batch_indices(sample_key, t, n, bsz, replace=args.replace)
                g = jax.grad(loss)(p, _gather(x, y, idx))
                return optax.tree.add_scale(p, -args.lr, g), None

            return jax.lax.scan(body, params, start + jnp.arange(args.every))[0]

        @jax.jit
        def measure(params, t, v0, bsz=bsz):
            idx = random_batch_indices(jax.random.fold_in(measure_key, t), n, bsz,
                                       args.num_batches)
            bs = batch_sharpness(loss, params, _gather(x, y, idx))
            eig = top_eigenpairs(full_loss, params, 1, v0=v0, tol=1e-3)
            return bs, eig, full_loss(params)

        params = problem.params
        v0 = jax.tree.map(lambda a: a[None], params)
        rec = {"step": [], "batch_sharpness": [], "stderr": [], "lambda1": [], "loss": [],
               "ratio_of_means": []}
        t0 = time.perf_counter()
        for start in range(0, args.steps + 1, args.every):
            bs, eig, fl = measure(params, start, v0)
            v0 = eig.warm_start
            for k, val in (("step", start), ("batch_sharpness", bs.sharpness),
                           ("stderr", bs.stderr), ("lambda1", eig.eigenvalues[0]),
                           ("loss", fl), ("ratio_of_means", bs.ratio_of_means)):
                rec[k].append(float(val))
            if start < args.steps:
                params = chunk(params, start)
        secs = time.perf_counter() - t0
        steps = np.array(rec["step"])
        last = steps >= steps[-1] * 2 / 3
        summ = {k: float(np.mean(np.array(rec[k])[last]))
                for k in ("batch_sharpness", "lambda1", "loss", "ratio_of_means")}
        summ.update({f"{k}_se": _block_se(np.array(rec[k])[last])
                     for k in ("batch_sharpness", "lambda1")})
        out[bsz] = {"record": rec, "last_third": summ, "seconds": secs}
        print(f"\nB = {bsz}, lr = {args.lr} (2/lr = {2 / args.lr:g}), {args.steps} steps, "
              f"{secs:.0f} s")
        for i in range(0, len(steps), max(1, len(steps) // 12)):
            print(f"  step {rec['step'][i]:6.0f}  loss {rec['loss'][i]:.4f}  batch sharpness "
                  f"{rec['batch_sharpness'][i]:7.3f} +- {rec['stderr'][i]:.3f}  "
                  f"lambda1 {rec['lambda1'][i]:7.3f}")
        h = args.lr / 2
        print(f"  last third: batch sharpness {summ['batch_sharpness']:.3f} "
              f"({summ['batch_sharpness'] * h:.3f} +- {summ['batch_sharpness_se'] * h:.3f} "
              f"x 2/lr), lambda1 {summ['lambda1']:.3f} ({summ['lambda1'] * h:.3f} +- "
              f"{summ['lambda1_se'] * h:.3f} x 2/lr), "
              f"ratio of means {summ['ratio_of_means']:.3f}, loss {summ['loss']:.4f}")
    return out


def _block_se(values: np.ndarray, num_blocks: int = 5) -> float:
    """Standard error of the mean of a correlated series: the spread of the means of
    ``num_blocks`` consecutive blocks (batch means), over sqrt(num_blocks)."""
    blocks = np.array_split(values, min(num_blocks, len(values)))
    means = np.array([b.mean() for b in blocks])
    return float(means.std(ddof=1) / np.sqrt(len(means))) if len(means) > 1 else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="?", default="both", choices=["cost", "sgd", "both"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--num-batches", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--sgd-batch-sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", default="digits", choices=["digits", "mnist"])
    ap.add_argument("--data-dir", default=None, help="the MNIST idx files (--dataset mnist)")
    ap.add_argument("--split", default="test", choices=["train", "test"],
                    help="which MNIST files to draw the training subset from")
    ap.add_argument("--num-examples", type=int, default=None)
    ap.add_argument("--widths", type=int, nargs="+", default=[200, 200])
    ap.add_argument("--out", default="batch_sharpness", help="results/<out>.json")
    ap.add_argument("--activation", default="tanh")
    ap.add_argument("--center", default="global", choices=["global", "pixel"],
                    help="MNIST: remove one global mean or each pixel's mean")
    ap.add_argument("--init-scale", type=float, default=1.0,
                    help="multiply the initial weights and biases by this")
    ap.add_argument("--replace", action="store_true", help="SGD batches with replacement")
    args = ap.parse_args(argv)
    problem = _problem(args)
    payload = {"args": vars(args)}
    if args.what in ("cost", "both"):
        payload["cost"] = cost(args, problem)
    if args.what in ("sgd", "both"):
        payload["sgd"] = sgd(args, problem)
    print(f"\nwrote {save(args.out, payload)}")


if __name__ == "__main__":
    main()
