"""What each ``eosflow`` subcommand does once its command line is parsed (``_cli.py`` parses).

Every function takes the parsed flags (and the validated :class:`Config` where there is one)
and returns the exit status: 0, or 1 for a run that diverged or a failed check.
"""

import itertools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import runner  # lazy: the run store (and JAX) load when a command needs them
from .._errors import EosflowError
from ..runner import (
    FIELD_DOCS,
    SECTIONS,
    Config,
    ConfigError,
    RunDirError,
)
from ..runner import type_name as field_type_name
from ._presets import DEFAULT, PRESETS, preset_values

EXIT_DIVERGED = 1


def list_presets(preset: str | None, fields: bool) -> int:
    """One line per preset; with ``fields``, every field of ``preset`` (default: the default
    experiment) with its type, its value there and its meaning, by section."""
    width = max(len(n) for n in PRESETS)
    for name, p in PRESETS.items():
        cost = f"~{p.cpu_minutes:g} min on 2 CPU cores" if p.cpu_minutes else "GPU-sized"
        mark = " (default)" if name == DEFAULT else ""
        print(f"{name.ljust(width)}  {p.description}{mark} [{cost}]")
    if fields:
        name = preset or DEFAULT
        values = preset_values(name)
        print(f"\nfields of {name} (eosflow run {name} --field value):")
        for section, (meaning, names) in SECTIONS.items():
            print(f"\n{section}: {meaning}")
            for field in names:
                value = format_value(values[field])
                print(f"  --{field:<18} {value:<12} {field_type_name(field)}: {FIELD_DOCS[field]}")
    return 0


def format_value(v: Any) -> str:
    """A field's value as it is typed on the command line (``200,200``, ``0.2``, ``none``)."""
    if v is None:
        return "none"
    if isinstance(v, tuple | list):
        return ",".join(format_value(x) for x in v) if v else "''"
    if isinstance(v, bool):
        return str(v).lower()
    return f"{v:g}" if isinstance(v, float) else str(v)


def _distributed(args) -> bool:
    """Start jax.distributed if asked (flags or environment). Returns whether this is
    process 0 (the one that writes run directories)."""
    from ..runner import initialize_distributed

    return initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                  timeout_s=args.coordinator_timeout)


def run(args, config: Config) -> int:
    writer = _distributed(args)
    return run_one(config, Path(args.out) / config.name, resume=args.resume,
                   overwrite=args.overwrite, quiet=args.quiet,
                   report=not args.no_report and writer)


def run_one(config: Config, out: Path, *, resume: bool, overwrite: bool, quiet: bool,
            report: bool, sweep: dict | None = None) -> int:
    from ..runner import run_experiment

    progress = False if quiet else None
    record = run_experiment(config, out, resume=resume, overwrite=overwrite, progress=progress,
                            sweep=sweep)
    if record.status == "interrupted":  # resumable; no summary of a partial run
        print(f"eosflow: {record.message}", file=sys.stderr)
        return 128 + (record.signal or 2)
    if record.status == "failed":
        print(f"eosflow: {record.message} (all finished steps are saved in {out})",
              file=sys.stderr)
        return EXIT_DIVERGED
    _print_summary(record.path)
    if report:
        _report_one(record.path)
    if record.status == "diverged":
        print(f"eosflow: {record.message} (all finished steps are saved in {out})",
              file=sys.stderr)
        return EXIT_DIVERGED
    return 0
def _print_summary(path: Path) -> None:
    from ..analysis import headline

    run = runner.load_run(path)
    h = headline(run)
    rows = [(run.config["name"], h)]
    if h.get("points"):
        rows = [(p.get("label", str(i)), p) for i, p in enumerate(h["points"])]
        print(f"{run.config['name']}: {h.get('state')}, {len(rows)} sweep points")
    for label, p in rows:
        # steps run (one past the last recorded step), not rows: record_every keeps 1 in k
        run_steps = p["last_step"] + 1 if p.get("last_step") is not None else p.get("steps")
        parts = [f"{label}: {p.get('state', h.get('state'))}", f"{run_steps} steps"]
        # mini-batch runs: the stableness is eta times the batch sharpness (BS)
        of = "BS" if p.get("batch_sharpness_last_third") is not None else "lambda1"
        for key, fmt in (("loss_final", "loss {:.4g}"), ("lambda_final", "lambda1 {:.4g}"),
                         ("test_accuracy_final", "test accuracy {:.4g}"),
                         ("eos_onset_step", "EoS onset step {}"),
                         ("mean_eta_lambda_after_onset", f"mean eta*{of} after onset {{:.3f}}"),
                         ("batch_sharpness_last_third", "BS over the last third {:.4g}"),
                         ("lambda_last_third", "lambda1 over the last third {:.4g}"),
                         ("hvps_per_estimate", "{:.2f} HVPs/estimate")):
            v = p.get(key)
            if v is not None:
                parts.append(fmt.format(v))
        print("; ".join(parts))
    c = h.get("collapse")
    if c:
        print(f"lambda1 against {c['clock']} over [0, {c['s_common']:.3g}]: max relative "
              f"difference {c['max_rel_diff']:.3g} between learning rates (median "
              f"{c['median_rel_diff']:.3g}); lambda1 falls {100 * c['reference_fall']:.1f}% there")
    from ..analysis import prediction_line

    line = prediction_line(h)  # a failed prediction is said, not left out
    if line is not None:
        print(line)
    if not run.sweep:
        from ..analysis import comparison_line, process_comparison

        line = comparison_line(process_comparison(run))
        if line is not None:
            print(f"processes: {line}")
    print(f"run directory: {path}")


def _report_one(path: Path) -> None:
    try:
        from ..analysis import plot_run, write_report
    except ImportError as err:  # pragma: no cover - matplotlib missing
        print(f"eosflow: figures skipped ({err}); pip install 'eosflow[plots]'", file=sys.stderr)
        return
    try:
        figs = plot_run(path)
        rep = write_report([path])
    except ImportError as err:
        print(f"eosflow: figures skipped ({err}); pip install 'eosflow[plots]'", file=sys.stderr)
        return
    for f in figs:
        if str(f).endswith(".png"):
            print(f"figure: {f}")
    print(f"report: {rep}")


def sweep(args, base: Config, grid: dict[str, list[Any]]) -> int:
    """Run ``base`` over the product ``grid`` (every point already validated)."""
    from ..runner import SWEEPABLE

    names = list(grid)
    points = [dict(zip(names, combo, strict=True))
              for combo in itertools.product(*(grid[n] for n in names))]
    writer = _distributed(args)
    root = Path(args.out) / f"{base.name}-sweep"
    if not args.serial and all(n in SWEEPABLE for n in names):  # one vmapped program
        check_sweep_memory(base, len(points))
        vmapped = {n: [float(pt[n]) for pt in points] for n in names}
        return run_one(base.replace(name=f"{base.name}-sweep"), root, resume=args.resume,
                       overwrite=args.overwrite, quiet=args.quiet,
                       report=not args.no_report and writer, sweep=vmapped)
    shard_i, shard_n = args.shard
    status, dirs = 0, []
    for idx, pt in enumerate(points):
        if idx % shard_n != shard_i:
            continue
        label = ",".join(f"{k}={format_value(v).replace(',', 'x')}" for k, v in pt.items())
        out = root / label
        dirs.append(out)
        config = base.replace(name=f"{base.name}-{label}".replace("/", "_"), **pt)
        if runner.is_run(out) and runner.read_json(out / "status.json").get("state") in (
            "completed", "goal_reached", "diverged"  # not "interrupted", "damaged", "failed"
        ) and not args.overwrite:
            print(f"{label}: already finished, skipped")
            continue
        print(f"== sweep point {idx + 1}/{len(points)}: {label}")
        code = run_one(config, out, resume=runner.is_run(out) and not args.overwrite,
                       overwrite=args.overwrite, quiet=args.quiet, report=False)
        status = max(status, code)
    if writer and not args.no_report and dirs and shard_n == 1:
        try:
            from ..analysis import plot_sweep, write_report

            finished = [d for d in dirs if runner.is_run(d)]
            plot_sweep(finished, root)
            print(f"report: {write_report(finished, root / 'report.html')}")
        except ImportError as err:  # pragma: no cover
            print(f"eosflow: figures skipped ({err})", file=sys.stderr)
    return status


def check_sweep_memory(config: Config, points: int) -> None:
    """Refuse a vmapped sweep whose state would not fit in memory, before starting."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ..curvature import tracking_history
    from ..problems import build_problem

    problem = build_problem(config)

    n = sum(int(np.size(x)) for x in jax.tree.leaves(problem.params))
    itemsize = np.dtype(config.dtype).itemsize
    block = (config.eig_block or config.num_eigs + 1) if config.eig_every else 0
    krylov = (20 + 2 * block) if config.eig_every else 0
    # params, grad, opt state; the warm starts (at most period 2); the basis
    history = jax.eval_shape(lambda: tracking_history(jnp.zeros(()), block, period=2)
                             ).shape[0] if block else 0
    per_point = n * itemsize * (4 + history + krylov)
    chunk = config.chunk_steps or 100
    per_point += chunk * 16 * 8  # metric rows of one chunk
    # the data is shared by every point (counted by the network problems' own estimate)
    need = per_point * points + problem.info.get("memory_estimate_bytes", {}).get("data", 0)
    from ..problems import available_memory

    avail = available_memory()
    if avail is not None and need > 0.5 * avail:
        raise ConfigError(
            f"sweep: {points} points need about {need / 2**30:.1f} GiB, more than half the "
            f"{avail / 2**30:.1f} GiB available; use fewer points or --serial"
        )


def verify(args) -> int:
    from ._verify import print_table, run_verify

    checks = run_verify(args.out, quick=args.quick, log=lambda s: print(s, file=sys.stderr))
    print_table(checks)
    print(f"\nwrote {Path(args.out) / 'verify.json'}")
    return 0 if all(c.passed for c in checks) else 1


def resume(args) -> int:
    """Continue ``args.run_dir`` from its last checkpoint; with ``--steps N``, to N steps."""
    path = Path(args.run_dir)
    if not runner.is_run(path):
        raise RunDirError(f"{path} is not an eosflow run (no config.json).")
    config = Config.from_dict(runner.read_json(path / "config.json"), strict=False)
    if args.steps is not None:
        config = config.replace(steps=args.steps)
    sweep = runner.read_json(path / "metadata.json").get("sweep")
    return run_one(config, path, resume=True, overwrite=False, quiet=args.quiet,
                   report=not args.no_report, sweep=sweep)


def _runs(paths: Sequence[str]) -> list[Path]:
    out = []
    for p in paths:
        path = Path(p)
        if not runner.is_run(path):
            raise RunDirError(f"{path} is not an eosflow run (no config.json).")
        out.append(path)
    return out


def plot(args) -> int:
    from ..analysis import plot_run, plot_sweep

    for path in _runs(args.run_dirs):
        figs = plot_run(path, args.out)
        if runner.load_run(path).sweep:
            figs += plot_sweep(path, args.out)
        for f in figs:
            print(f)
    return 0


def compare(args) -> int:
    from ..analysis import compare_runs

    for f in compare_runs(_runs(args.run_dirs), args.out):
        print(f)
    return 0


def export(args) -> int:
    from ..analysis import export_run

    for path in _runs(args.run_dirs):
        try:
            print(export_run(path, args.format, args.out))
        except ImportError as err:
            raise EosflowError(f"format: {err}") from None
    return 0


def report(args) -> int:
    from ..analysis import write_report

    print(write_report(_runs(args.run_dirs), args.out))
    return 0


def compilation_cache() -> None:
    """Keep compiled programs on disk between invocations (``EOSFLOW_CACHE_DIR``, default
    ``~/.cache/eosflow/jax``; ``EOSFLOW_CACHE_DIR=off`` disables it): most of a short run's
    time is compilation, and the same run compiles the same programs."""
    where = os.environ.get("EOSFLOW_CACHE_DIR", os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "eosflow", "jax"))
    if where.lower() in ("", "off", "0", "none"):
        return
    import jax

    try:
        os.makedirs(where, exist_ok=True)
    except OSError:
        return
    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
