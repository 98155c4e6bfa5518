"""The ``eosflow`` command line.

Subcommands: ``run``, ``list``, ``sweep``, ``verify``, ``resume``, ``plot``, ``compare`` and
``report``. Configuration fields are overridden with ``--field value`` (or
``--field=value``); errors in what was typed are one line and exit with status 2; a run
that diverges exits with status 1 after saving everything it computed.
"""

import argparse
import itertools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..runner import (
    FIELDS,
    Config,
    ConfigError,
    RunDirError,
    coerce,
    is_run,
    load_run,
    read_json,
    unknown_field_message,
)
from ._presets import DEFAULT, PRESETS, preset_config

EXIT_DIVERGED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Something the user typed; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump, exit 2
        raise UsageError(message)


def _overrides(tokens: Sequence[str]) -> dict[str, Any]:
    """Parse ``--field value`` / ``--field=value`` pairs into typed config values."""
    out: dict[str, Any] = {}
    i = 0
    tokens = list(tokens)
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            raise UsageError(f"unexpected argument {tok!r}; overrides look like --lr 0.1")
        name, eq, value = tok[2:].partition("=")
        name = name.replace("-", "_")
        if name not in FIELDS:
            raise ConfigError(unknown_field_message(name))
        if not eq:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise ConfigError(f"{name}: needs a value (--{name} VALUE)")
            value = tokens[i + 1]
            i += 1
        out[name] = coerce(name, value)
        i += 1
    return out


def _common_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs", help="output root (default ./runs)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--no-report", action="store_true", help="skip the figures and report")
    g = p.add_argument_group("multi-host (jax.distributed)")
    g.add_argument("--coordinator", default=None,
                   help="coordinator address host:port (or JAX_COORDINATOR_ADDRESS)")
    g.add_argument("--num-processes", type=int, default=None,
                   help="number of processes (or JAX_NUM_PROCESSES)")
    g.add_argument("--process-id", type=int, default=None,
                   help="this process's id (or JAX_PROCESS_ID)")
    g.add_argument("--coordinator-timeout", type=float, default=60.0,
                   help="seconds to wait for the coordinator (default 60)")


def build_parser() -> argparse.ArgumentParser:
    field_help = "any configuration field as --field VALUE (see `eosflow list --fields`)"
    ap = _Parser(prog="eosflow", description="Gradient descent at the Edge of Stability.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("run", help="run an experiment (default: the digits GD demo)",
                       description=f"Run PRESET (default: {DEFAULT}) with overrides; "
                       f"{field_help}.")
    p.add_argument("preset", nargs="?", default=None, help="a preset name (eosflow list)")
    _common_run_flags(p)
    p.add_argument("--resume", action="store_true", help="continue an existing run directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")

    p = sub.add_parser("list", help="list the presets, one line each")
    p.add_argument("--fields", action="store_true", help="list the configuration fields too")

    p = sub.add_parser("sweep", help="run a grid over one or more fields",
                       description="Run PRESET over the product of --grid FIELD=V1,V2,...; "
                       "lr, seed, momentum and loss_min are vmapped in one compiled run, "
                       "other fields run one point at a time (resumable). " + field_help)
    p.add_argument("preset", nargs="?", default=None)
    p.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                   help="values of one field; repeat for a product grid")
    p.add_argument("--serial", action="store_true", help="one run per point even if vmappable")
    _common_run_flags(p)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="run only the points with index = I mod N (split across processes)")

    p = sub.add_parser("verify", help="reproduce the paper's claims as a pass/fail table")
    p.add_argument("--out", default="runs/verify", help="where verify.json and figures go")
    p.add_argument("--quick", action="store_true", help="toy A only, fewer learning rates")

    p = sub.add_parser("resume", help="continue a run from its last checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--no-report", action="store_true")

    p = sub.add_parser("plot", help="draw the figures of saved runs")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", default=None, help="folder for the figures (default RUN/figures)")

    p = sub.add_parser("compare", help="overlay several runs in one figure")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", default="runs/compare")

    p = sub.add_parser("report", help="write a self-contained HTML report")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", default=None, help="HTML file (default RUN/report.html for one run)")
    return ap


def _split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Take ``--field value`` pairs naming configuration fields out of ``argv`` before argparse
    sees them (argparse would read a value such as ``-1`` as an option)."""
    if not argv or argv[0] not in ("run", "sweep"):
        return argv, []
    rest, fields = [argv[0]], []
    i = 1
    while i < len(argv):
        tok = argv[i]
        name = tok[2:].partition("=")[0].replace("-", "_") if tok.startswith("--") else ""
        if name in FIELDS:
            fields.append(tok)
            if "=" not in tok and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                fields.append(argv[i + 1])
                i += 1
        else:
            rest.append(tok)
        i += 1
    return rest, fields


def _compilation_cache() -> None:
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    _compilation_cache()
    try:
        argv, fields = _split_overrides(argv)
        args, extra = parser.parse_known_args(argv)
        extra = fields + extra
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        if extra and args.command not in ("run", "sweep"):
            raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
        handler = globals()[f"_cmd_{args.command}"]
        return handler(args, extra)
    except (UsageError, ConfigError, RunDirError) as err:
        print(f"eosflow: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, ValueError) as err:
        print(f"eosflow: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\neosflow: interrupted; resume with `eosflow resume RUN_DIR`", file=sys.stderr)
        return 130


# --- subcommands ----------------------------------------------------------------------------------


def _distributed(args) -> bool:
    """Start jax.distributed if asked (flags or environment). Returns whether this is
    process 0 (the one that writes run directories)."""
    from ..runner import initialize_distributed

    return initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                      timeout_s=args.coordinator_timeout)


def _cmd_run(args, extra) -> int:
    config = preset_config(args.preset, _overrides(extra))
    writer = _distributed(args)
    out = Path(args.out) / config.name
    return _run_one(config, out, resume=args.resume, overwrite=args.overwrite,
                    quiet=args.quiet, report=not args.no_report and writer)


def _run_one(config: Config, out: Path, *, resume: bool, overwrite: bool, quiet: bool,
             report: bool, sweep: dict | None = None) -> int:
    from ..runner import run_experiment

    progress = False if quiet else None
    record = run_experiment(config, out, resume=resume, overwrite=overwrite, progress=progress,
                            sweep=sweep)
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

    run = load_run(path)
    h = headline(run)
    rows = [(run.config["name"], h)]
    if h.get("points"):
        rows = [(p.get("label", str(i)), p) for i, p in enumerate(h["points"])]
        print(f"{run.config['name']}: {h.get('state')}, {len(rows)} sweep points")
    for label, p in rows:
        parts = [f"{label}: {p.get('state', h.get('state'))}", f"{p.get('steps')} steps"]
        for key, fmt in (("loss_final", "loss {:.4g}"), ("lambda_final", "lambda1 {:.4g}"),
                         ("eos_onset_step", "EoS onset step {}"),
                         ("mean_eta_lambda_after_onset", "mean eta*lambda1 after onset {:.3f}"),
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


def _cmd_list(args, extra) -> int:
    width = max(len(n) for n in PRESETS)
    for name, p in PRESETS.items():
        cost = f"~{p.cpu_minutes:g} min on 2 CPU cores" if p.cpu_minutes else "GPU-sized"
        mark = " (default)" if name == DEFAULT else ""
        print(f"{name.ljust(width)}  {p.description}{mark} [{cost}]")
    if args.fields:
        print("\nfields (eosflow run PRESET --field value):")
        defaults = Config()
        for name in FIELDS:
            print(f"  --{name} {getattr(defaults, name)!r}")
    return 0


def _parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, eq, values = item.partition("=")
        name = name.strip().replace("-", "_")
        if not eq:
            raise UsageError(f"--grid takes FIELD=V1,V2,..., got {item!r}")
        if name not in FIELDS:
            raise ConfigError(unknown_field_message(name))
        if name in ("name",):
            raise ConfigError("name: cannot be swept")
        parts = [v for v in values.split(",") if v.strip()]
        if not parts:
            raise ConfigError(f"{name}: the sweep grid is empty")
        grid[name] = [coerce(name, v.strip()) for v in parts]
    if not grid:
        raise UsageError("sweep needs at least one --grid FIELD=V1,V2,...")
    return grid


def _cmd_sweep(args, extra) -> int:
    from ..runner import SWEEPABLE

    base = preset_config(args.preset, _overrides(extra))
    grid = _parse_grid(args.grid)
    names = list(grid)
    points = [dict(zip(names, combo, strict=True))
              for combo in itertools.product(*(grid[n] for n in names))]
    for pt in points:  # validate every point before starting any
        base.replace(**pt)
    writer = _distributed(args)
    root = Path(args.out) / f"{base.name}-sweep"
    vmapped = not args.serial and all(n in SWEEPABLE for n in names)
    if vmapped:
        _check_sweep_memory(base, len(points))
        sweep = {n: [float(pt[n]) for pt in points] for n in names}
        config = base.replace(name=f"{base.name}-sweep")
        return _run_one(config, root, resume=args.resume, overwrite=args.overwrite,
                        quiet=args.quiet, report=not args.no_report and writer, sweep=sweep)
    shard_i, shard_n = _shard(args.shard)
    status = 0
    dirs = []
    for idx, pt in enumerate(points):
        if idx % shard_n != shard_i:
            continue
        label = ",".join(f"{k}={_fmt_value(v)}" for k, v in pt.items())
        out = root / label
        dirs.append(out)
        config = base.replace(name=f"{base.name}-{label}".replace("/", "_"), **pt)
        if is_run(out) and read_json(out / "status.json").get("state") in (
            "completed", "goal_reached", "diverged"
        ) and not args.overwrite:
            print(f"{label}: already finished, skipped")
            continue
        resume = is_run(out) and not args.overwrite
        print(f"== sweep point {idx + 1}/{len(points)}: {label}")
        code = _run_one(config, out, resume=resume, overwrite=args.overwrite, quiet=args.quiet,
                        report=False)
        status = max(status, code)
    if writer and not args.no_report and dirs and shard_n == 1:
        try:
            from ..analysis import plot_sweep, write_report

            finished = [d for d in dirs if is_run(d)]
            plot_sweep(finished, root)
            print(f"report: {write_report(finished, root / 'report.html')}")
        except ImportError as err:  # pragma: no cover
            print(f"eosflow: figures skipped ({err})", file=sys.stderr)
    return status


def _fmt_value(v: Any) -> str:
    if isinstance(v, tuple):
        return "x".join(_fmt_value(x) for x in v)
    return f"{v:g}" if isinstance(v, float) else str(v).replace(" ", "")


def _shard(spec: str | None) -> tuple[int, int]:
    if spec is None:
        env_n = os.environ.get("JAX_NUM_PROCESSES")
        env_i = os.environ.get("JAX_PROCESS_ID")
        if env_n and env_i:
            return int(env_i), int(env_n)
        return 0, 1
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise UsageError(f"--shard takes I/N (e.g. 0/4), got {spec!r}") from None
    if not 0 <= i < n:
        raise UsageError(f"--shard: need 0 <= I < N, got {spec!r}")
    return i, n


def _check_sweep_memory(config: Config, points: int) -> None:
    """Refuse a vmapped sweep whose state would not fit in memory, before starting."""
    from ..problems import build_problem

    problem = build_problem(config)
    import jax
    import numpy as np

    n = sum(int(np.size(x)) for x in jax.tree.leaves(problem.params))
    itemsize = np.dtype(config.dtype).itemsize
    block = (config.eig_block or config.num_eigs + 1) if config.eig_every else 0
    krylov = (20 + 2 * block) if config.eig_every else 0
    per_point = n * itemsize * (4 + block + krylov)  # params, grad, opt state, eig, basis
    chunk = config.chunk_steps or 100
    per_point += chunk * 16 * 8  # metric rows of one chunk
    need = per_point * points
    avail = _available_memory()
    if avail is not None and need > 0.5 * avail:
        raise ConfigError(
            f"sweep: {points} points need about {need / 2**30:.1f} GiB, more than half the "
            f"{avail / 2**30:.1f} GiB available; use fewer points or --serial"
        )


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def _cmd_verify(args, extra) -> int:
    from ._verify import print_table, run_verify

    checks = run_verify(args.out, quick=args.quick, log=lambda s: print(s, file=sys.stderr))
    print_table(checks)
    print(f"\nwrote {Path(args.out) / 'verify.json'}")
    return 0 if all(c.passed for c in checks) else 1


def _cmd_resume(args, extra) -> int:
    path = Path(args.run_dir)
    if not is_run(path):
        raise RunDirError(f"{path} is not an eosflow run (no config.json).")
    config = Config.from_dict(read_json(path / "config.json"), strict=False)
    sweep = read_json(path / "metadata.json").get("sweep")
    return _run_one(config, path, resume=True, overwrite=False, quiet=args.quiet,
                    report=not args.no_report, sweep=sweep)


def _runs(paths: Sequence[str]) -> list[Path]:
    out = []
    for p in paths:
        path = Path(p)
        if not is_run(path):
            raise RunDirError(f"{path} is not an eosflow run (no config.json).")
        out.append(path)
    return out


def _cmd_plot(args, extra) -> int:
    from ..analysis import plot_run, plot_sweep

    for path in _runs(args.run_dirs):
        figs = plot_run(path, args.out)
        if load_run(path).sweep:
            figs += plot_sweep(path, args.out)
        for f in figs:
            print(f)
    return 0


def _cmd_compare(args, extra) -> int:
    from ..analysis import compare_runs

    for f in compare_runs(_runs(args.run_dirs), args.out):
        print(f)
    return 0


def _cmd_report(args, extra) -> int:
    from ..analysis import write_report

    paths = _runs(args.run_dirs)
    if len(paths) > 1 and args.out is None:
        raise UsageError("report of several runs needs --out FILE.html")
    print(write_report(paths, args.out))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
