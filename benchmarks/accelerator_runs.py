"""What the paper's presets cost on an accelerator (issue 14 point 7; issue 17 point 5).

1. ``paper-cifar-vgg-ngd``: CIFAR-10-5k VGG-11, normalized GD, lambda_1 every 50 steps;
   ``--vgg_steps`` steps (200): seconds per step with tracking, compile seconds, peak device
   memory (``status.json``'s ``peak_memory``).
2. ``paper-mnist-ngd-cpu`` on the MNIST digits in ``--mnist`` (the paper's protocol with
   12 000 normalized-GD steps, 12 re-projection steps, lambda_1 at Phi every 3000 steps),
   from which the full preset's cost (9000 + 120 000 steps, 120 re-projection steps, ten
   Phi checks) is extrapolated term by term.

Without ``--cifar`` the CIFAR-10 pixels are drawn at random and written in CIFAR-10's own
python format: the step's cost does not depend on the pixel values, the sharpness does, so
only the timing and memory are meaningful then (the JSON says which). Writes
``OUT/accelerator_runs.json``; each run's directory stays under ``OUT``.

Usage: ``python benchmarks/accelerator_runs.py --mnist DIR --out OUT [--cifar DIR]``
"""

import argparse
import json
import pickle
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def _random_cifar(folder: Path) -> Path:
    """Random uint8 pixels and labels in CIFAR-10's python-pickle batches (timing only)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (10_000, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, 10_000).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return folder


def _mnist_train_copy(src: Path, folder: Path) -> Path:
    """The test digits as the training files of a scratch folder (the shared copy stays
    untouched)."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("images-idx3", "labels-idx1"):
        shutil.copy(src / f"t10k-{kind}-ubyte.gz", folder / f"train-{kind}-ubyte.gz")
    return folder


def _run(name: str, out: Path, **overrides) -> dict:
    from eosflow import load_run, run_experiment
    from eosflow.experiments import preset_config

    config = preset_config(name, overrides)
    t0 = time.perf_counter()
    record = run_experiment(config, out / name, progress=False)
    total = time.perf_counter() - t0
    status = json.loads((out / name / "status.json").read_text())
    run = load_run(out / name)
    row = {"preset": name, "overrides": {k: v for k, v in overrides.items() if k != "data_dir"},
           "state": record.status, "steps": status["step"], "seconds_total": round(total, 1),
           "wall_seconds": status["wall_seconds"], "compile_seconds": status["compile_seconds"],
           "seconds_per_step": status["wall_seconds"] / max(status["step"], 1),
           "matmul_precision": config.matmul_precision,
           "hvps_total": status["hvps_total"], "peak_memory": status.get("peak_memory"),
           "prediction": status.get("prediction")}
    if run.phi is not None:
        row["phi_seconds"] = [float(s) for s in run.phi["seconds"]]
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mnist", type=Path, required=True, help="folder with t10k-*-ubyte.gz")
    ap.add_argument("--cifar", type=Path, help="CIFAR-10 python batches (else random pixels)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--vgg_steps", type=int, default=200)
    ap.add_argument("--skip", nargs="*", default=(), choices=("vgg", "mnist"))
    args = ap.parse_args(argv)
    import jax

    args.out.mkdir(parents=True, exist_ok=True)
    result = {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
              "jax": jax.__version__, "runs": []}

    def save():
        (args.out / "accelerator_runs.json").write_text(json.dumps(result, indent=1))

    if "vgg" not in args.skip:
        cifar = args.cifar or _random_cifar(args.out / "scratch" / "cifar")
        result["cifar_pixels"] = "CIFAR-10" if args.cifar else "random (timing only)"
        result["runs"].append(_run("paper-cifar-vgg-ngd", args.out, data_dir=str(cifar),
                                   steps=args.vgg_steps))
        save()
        print(json.dumps(result["runs"][-1]), flush=True)
    if "mnist" not in args.skip:
        mnist = _mnist_train_copy(args.mnist, args.out / "scratch" / "mnist")
        result["mnist"] = ("the t10k digits copied as the training files (the preset trains on "
                           "the first 1000, holds out 1000 other t10k digits)")
        row = _run("paper-mnist-ngd-cpu", args.out, data_dir=str(mnist))
        warm, ngd = 9000, row["steps"] - 9000
        pred = row["prediction"] or {}
        per_step = row["wall_seconds"] / row["steps"]  # GD and NGD steps with their probes
        phi = row.get("phi_seconds") or []
        row["full_preset_estimate_seconds"] = round(
            per_step * (warm + 120_000)
            + pred.get("seconds", float("nan")) * 120 / 12
            + (np.mean(phi[1:]) if len(phi) > 1 else float("nan")) * 10, 1)
        row["estimate"] = ("wall seconds per step x 129 000 steps + the prediction's seconds "
                           f"x 10 (120 re-projection steps, not 12) + the mean Phi check x 10; "
                           f"{ngd} NGD steps measured")
        result["runs"].append(row)
        save()
        print(json.dumps(row), flush=True)
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
