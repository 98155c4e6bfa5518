"""The numbers README.md quotes for the default run (`eosflow run`, preset digits-gd), from
one run directory, through the public API only (``eosflow.load_run``,
``eosflow.analysis.headline``).

    python benchmarks/readme_numbers.py                 # a fresh default run in a temp folder
    python benchmarks/readme_numbers.py runs/digits-gd  # an existing run
    python benchmarks/readme_numbers.py --check README.md [RUN]   # compare with the README
    python benchmarks/readme_numbers.py --spread 5      # each number's range over 5 runs
                                                        # from 1-ulp perturbed weights

Each quantity has the pattern that finds it in the README and a tolerance: the deterministic
ones (losses, λ1, η·λ1, HVPs per estimate, the steps) must agree within it; the times are
printed, labelled with the machine they were measured on, and never checked (they depend on
the machine and its load). The test ``tests/experiments/test_readme_numbers.py`` checks the
README against a fresh default run with :func:`check`.
"""

import argparse
import platform
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Quantity:
    """One number the README quotes.

    Attributes:
        key: the name in :func:`readme_numbers`'s result.
        patterns: regexes with one group each, the number as the README writes it (matched
            against the README with its whitespace collapsed to single spaces); every
            occurrence is checked.
        fmt: how the number is written (``"{:.2f}"``).
        rtol: relative tolerance of the check; ``atol`` absolute (steps); None: not checked
            (a time).
    """

    key: str
    patterns: tuple[str, ...]
    fmt: str
    rtol: float | None = 0.0
    atol: float = 0.0


# Tolerances: the run is deterministic (a fixed seed, full batch), so on one machine and one
# jax/XLA version every number repeats exactly. Another CPU or XLA version rounds float32
# differently (the README's numbers come from AVX-512 CPUs; an AVX2 AMD EPYC gives a final
# loss 7% lower), and the oscillation at the edge amplifies the difference. `--spread 6`
# (2026-12-02, an AVX-512 EPYC) measured how far: over six runs, five from initial weights
# each moved by one float32 ulp, the final loss spans 0.0601-0.0649 and the final λ1
# 10.50-10.63, HVPs per estimate 11.54-11.76, the means over many steps (η·λ1 after the
# onset and over the last third, the loss over the last third) 0.4% or less; the start and
# the steps do not move.
# So: 10% on the final loss, 2% on the final λ1, 5% on HVPs per estimate, 1% on the means,
# 0.5% on the start, one measurement period (eig_every = 4 steps) on the steps. The rounding
# of the quoted digits is added.
QUANTITIES = (
    Quantity("loss_final", (r"loss ([\d.]+); lambda1", r"non-monotonically, from [\d.]+ to "
                            r"([\d.]+)"), "{:.4g}", rtol=0.1),
    Quantity("loss_mean_last_third", (r"the loss averages ([\d.]+) over the last third",),
             "{:.4f}", rtol=0.01),
    Quantity("lambda_final", (r"; lambda1 ([\d.]+); EoS onset",), "{:.4g}", rtol=0.02),
    Quantity("onset_step", (r"EoS onset step (\d+);", r"reaches 1\.9\) is step (\d+)"),
             "{:d}", atol=4),
    Quantity("mean_eta_lambda_after_onset", (r"mean eta\*lambda1 after onset ([\d.]+);",
                                             r"after which η·λ1 averages ([\d.]+)"),
             "{:.3f}", rtol=0.01),
    Quantity("hvps_per_estimate", (r"; ([\d.]+) HVPs/estimate",
                                   r"spends ([\d.]+) HVPs per λ1 estimate"), "{:.2f}",
             rtol=0.05),
    Quantity("lambda_start", (r"λ1 starts at ([\d.]+)",), "{:.2f}", rtol=0.005),
    Quantity("eta_lambda_start", (r"starts at [\d.]+ \(η·λ1 = ([\d.]+)\)",), "{:.2f}",
             rtol=0.005),
    Quantity("first_step_at_edge", (r"first reaches 2/η = 10 at step (\d+)",), "{:d}", atol=4),
    Quantity("mean_eta_lambda_last_third", (r"η·λ1 averages ([\d.]+) over the last third",),
             "{:.2f}", rtol=0.01),
    Quantity("loss_start", (r"non-monotonically, from ([\d.]+)",), "{:.2f}", rtol=0.005),
    Quantity("compile_seconds", (r"says (?:[\d.]+–)?([\d.]+) s compiling",), "{:.1f}", rtol=None),
    Quantity("step_seconds", (r"s compiling and (?:[\d.]+–)?([\d.]+) s in all",), "{:.0f}",
             rtol=None),
)


def readme_numbers(run_dir) -> dict[str, float]:
    """The quoted quantities of the run in ``run_dir`` (a finished default run).

    Returns:
        ``{key: value}`` for every :data:`QUANTITIES` key: losses (the loss's units), λ1 (1/η
        units), η·λ1 (dimensionless), steps (ints), HVPs per λ1 estimate, seconds.

    Raises:
        eosflow.RunDirError: ``run_dir`` is not a run.
        ValueError: the run has no sharpness or never reaches 2/η.
    """
    from eosflow import load_run
    from eosflow.analysis import headline

    run = load_run(run_dir)
    h = headline(run)
    m = run.metrics
    lr, steps = float(run.config["lr"]), int(run.config["steps"])
    lam = np.asarray(m.get("lambda_1", []), np.float64)
    measured = np.isfinite(lam)
    if not measured.any():
        raise ValueError(f"{run_dir}: no lambda_1 was measured")
    t, lam = np.asarray(m["step"])[measured], lam[measured]
    at_edge = np.flatnonzero(lam >= 2.0 / lr)
    if not len(at_edge):
        raise ValueError(f"{run_dir}: lambda_1 never reaches 2/lr = {2.0 / lr:g}")
    loss = np.asarray(m["loss"], np.float64)
    return {
        "loss_final": float(h["loss_final"]),
        "lambda_final": float(h["lambda_final"]),
        "onset_step": int(h["eos_onset_step"]),
        "mean_eta_lambda_after_onset": float(h["mean_eta_lambda_after_onset"]),
        "hvps_per_estimate": float(h["hvps_per_estimate"]),
        "lambda_start": float(lam[0]),
        "eta_lambda_start": float(lr * lam[0]),
        "first_step_at_edge": int(t[at_edge[0]]),
        "mean_eta_lambda_last_third": float(np.mean(lr * lam[t >= 2 * steps // 3])),
        "loss_mean_last_third": float(np.mean(loss[np.asarray(m["step"]) >= 2 * steps // 3])),
        "loss_start": float(loss[0]),
        "compile_seconds": float(run.status.get("compile_seconds", np.nan)),
        "step_seconds": float(run.status.get("wall_seconds", np.nan)),
    }


def _digits(text: str) -> float:
    """Half a unit in the last quoted digit (the rounding of the README's number)."""
    return 0.5 * 10.0 ** -len(text.split(".")[1]) if "." in text else 0.5


def check(readme: str, values: dict[str, float]) -> list[str]:
    """The disagreements between the README's text and ``values`` (empty: none).

    A quantity the README no longer quotes is a disagreement too (its pattern finds
    nothing), so the check cannot silently stop checking.
    """
    problems = []
    readme = " ".join(readme.split())
    for q in QUANTITIES:
        if q.rtol is None:
            continue
        for pattern in q.patterns:
            found = re.findall(pattern, readme)
            if not found:
                problems.append(f"{q.key}: the README no longer quotes it ({pattern!r})")
            problems += _compare(q, found, values[q.key])
    return problems


def _compare(q: Quantity, found: list[str], fresh: float) -> list[str]:
    problems = []
    for text in found:
        quoted = float(text)
        tol = q.rtol * abs(fresh) + q.atol + _digits(text)
        if abs(quoted - fresh) > tol:
            problems.append(f"{q.key}: the README says {text}, the run gives "
                            f"{q.fmt.format(fresh)} (tolerance {tol:.3g})")
    return problems


def fresh_default_run(root, perturb: int = 0) -> Path:
    """Run the default experiment (``eosflow run``'s) into ``root/digits-gd``; with
    ``perturb`` > 0, from initial weights each moved by one ulp to the next float up or
    down (the directions drawn from ``perturb``) into ``root/digits-gd-<perturb>``: how far
    rounding alone moves each number."""
    from eosflow.experiments import DEFAULT, preset_config, run_experiment
    from eosflow.problems import build_problem

    config = preset_config(DEFAULT, {})
    problem = None
    if perturb:
        import dataclasses

        import jax
        import jax.numpy as jnp

        problem = build_problem(config)
        leaves, treedef = jax.tree.flatten(problem.params)
        keys = jax.random.split(jax.random.key(perturb), len(leaves))
        # nextafter, not x (1 ± 2^-24): in float32 1 + 2^-24 rounds to 1
        leaves = [jnp.nextafter(x, jnp.inf * jax.random.rademacher(k, x.shape, x.dtype))
                  for k, x in zip(keys, leaves, strict=True)]
        problem = dataclasses.replace(problem, params=jax.tree.unflatten(treedef, leaves))
    out = Path(root) / (f"{DEFAULT}-{perturb}" if perturb else DEFAULT)
    run_experiment(config, out, problem=problem, progress=False)
    return out


def spread(runs: int) -> dict[str, tuple[float, float]]:
    """Each checked number's (min, max) over the fresh default run and ``runs - 1`` runs from
    perturbed initial weights (:func:`fresh_default_run`)."""
    with tempfile.TemporaryDirectory() as tmp:
        seen = [readme_numbers(fresh_default_run(tmp, i)) for i in range(runs)]
    return {q.key: (min(v[q.key] for v in seen), max(v[q.key] for v in seen))
            for q in QUANTITIES if q.rtol is not None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", nargs="?", help="a finished default run (default: a fresh one)")
    ap.add_argument("--check", metavar="README", help="compare with this README")
    ap.add_argument("--spread", type=int, metavar="N",
                    help="print each number's range over N fresh runs, all but the first from "
                         "initial weights perturbed by one float32 ulp")
    args = ap.parse_args(argv)
    if args.spread is not None:
        if args.spread < 2:
            ap.error(f"--spread must be >= 2, got {args.spread}")
        for key, (lo, hi) in spread(args.spread).items():
            fmt = next(q.fmt for q in QUANTITIES if q.key == key)
            print(f"{key:30s} {fmt.format(lo)} .. {fmt.format(hi)}  "
                  f"({(hi - lo) / max(abs(lo), abs(hi), 1e-300):.2%})")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run_dir) if args.run_dir else fresh_default_run(tmp)
        values = readme_numbers(run)
        for q in QUANTITIES:
            label = "" if q.rtol is not None else (
                f"   (measured, not checked: {platform.machine()}, "
                f"{platform.processor() or platform.system()})")
            print(f"{q.key:30s} {q.fmt.format(values[q.key])}{label}")
        if args.check:
            problems = check(Path(args.check).read_text(), values)
            for p in problems:
                print(f"MISMATCH {p}", file=sys.stderr)
            return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
