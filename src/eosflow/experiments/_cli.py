"""The ``eosflow`` command line, on tyro: parse, call, print.

``eosflow run PRESET --field value`` parses the configuration fields as flat flags whose
defaults are the preset's values (``--help`` shows them, grouped by section); numbers may be
written as arithmetic (``--lr 2/30``), lists with commas (``--widths 200,200``), flags as
``--track_alignment false``. A bad command line or an :class:`~eosflow.EosflowError` is one
line on stderr and exit status 2; any other exception is a bug and keeps its traceback. A run
that diverges exits with status 1 after saving everything it computed.
"""

import dataclasses
import difflib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from .._errors import ConfigError, EosflowError
from ..runner import FIELD_DOCS, FIELDS, SECTIONS, Config, coerce, unknown_field_message
from ..runner import type_name as field_type_name
from . import _commands as cmd
from ._presets import DEFAULT, PRESETS, get_preset, preset_values

EXIT_USAGE = 2


class UsageError(Exception):
    """Something the user typed; printed as one line, exit status 2. (Not a ValueError, so
    that tyro, which reports a ValueError inside a box, lets it through.)"""


def _read(name: str, text: str) -> Any:
    try:
        return coerce(name, text)
    except ConfigError as err:
        raise UsageError(str(err)) from None


# --- the subcommands' own flags (tyro reads the docstrings under the fields) ----------------
@dataclass(frozen=True)
class _Output:
    out: str = "runs"
    """output root: the run goes to OUT/NAME"""
    quiet: bool = False
    """no progress line"""
    no_report: bool = False
    """skip the figures and the report"""
    resume: bool = False
    """continue an existing run directory"""
    overwrite: bool = False
    """replace an existing run directory"""
    coordinator: str | None = None
    """multi-host: coordinator address host:port (or JAX_COORDINATOR_ADDRESS)"""
    num_processes: int | None = None
    """multi-host: number of processes (or JAX_NUM_PROCESSES)"""
    process_id: int | None = None
    """multi-host: this process's id (or JAX_PROCESS_ID)"""
    coordinator_timeout: float = 60.0
    """multi-host: seconds to wait for the coordinator"""


@dataclass(frozen=True)
class _Sweep(_Output):
    grid: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """FIELD=V1,V2,...: values of one field; repeat for a product grid"""
    serial: bool = False
    """one run per point even if the fields are vmappable (lr, seed, momentum, loss_min)"""
    shard: str | None = None
    """I/N: run only the points with index = I mod N (split across processes)"""


@dataclass(frozen=True)
class _Resume:
    run_dir: tyro.conf.Suppress[str] = ""
    steps: int | None = None
    """extend the run to this many steps"""
    quiet: bool = False
    """no progress line"""
    no_report: bool = False
    """skip the figures and the report"""


@dataclass(frozen=True)
class _Verify:
    out: str = "runs/verify"
    """where verify.json and the figures go"""
    quick: bool = False
    """toy A only, fewer learning rates"""


@dataclass(frozen=True)
class _Runs:
    run_dirs: tyro.conf.Suppress[tuple[str, ...]] = ()
    out: str | None = None
    """where the output goes (plot: RUN/figures; report: RUN/report.html for one run)"""


@dataclass(frozen=True)
class _Export:
    run_dirs: tyro.conf.Suppress[tuple[str, ...]] = ()
    format: Literal["csv", "parquet", "hdf5"] = "csv"
    """the table format (parquet needs pyarrow, hdf5 needs h5py: pip install 'eosflow[export]')"""
    out: str | None = None
    """the file to write (one run only; default RUN/metrics.csv, .parquet or .h5)"""


@dataclass(frozen=True)
class _List:
    preset: tyro.conf.Suppress[str | None] = None
    fields: bool = False
    """also list every field with its type, the preset's value and its meaning"""


COMMANDS: dict[str, tuple[type, str]] = {
    "run": (_Output, f"run PRESET (default {DEFAULT}) with --field value overrides"),
    "list": (_List, "list the presets; --fields PRESET: every field with the preset's value"),
    "sweep": (_Sweep, "run PRESET over a grid: --grid FIELD=V1,V2,... (repeat for a product)"),
    "verify": (_Verify, "reproduce the paper's claims as a pass/fail table"),
    "resume": (_Resume, "continue a run from its last checkpoint (--steps N: extend it)"),
    "plot": (_Runs, "draw the figures of saved runs"),
    "compare": (_Runs, "overlay several runs in one figure"),
    "report": (_Runs, "write a self-contained HTML report"),
    "export": (_Export, "write a run's metrics as a CSV, Parquet or HDF5 table"),
}
_POSITIONAL = {"run_dir", "run_dirs", "preset"}


@dataclass(frozen=True)
class Invocation:
    """A parsed command line: what :func:`main` calls, with everything validated."""

    command: str
    args: Any
    config: Config | None = None
    grid: dict[str, list[Any]] | None = None


def _field_spec(name: str):
    """How tyro reads configuration field ``name``: one token, parsed and checked by
    :func:`eosflow.runner.coerce` (whose errors name the field)."""
    from tyro.constructors import PrimitiveConstructorSpec

    words = {"a list of int": "INT,...", "a list of float": "FLOAT,...", "int": "INT",
             "float": "FLOAT", "str": "STR", "bool": "{true,false}"}
    kind = "|".join(words.get(w, w) for w in field_type_name(name).split(" or "))
    return PrimitiveConstructorSpec(
        nargs=1, metavar=kind,
        instance_from_str=lambda args: _read(name, args[0]), is_instance=lambda v: True,
        str_from_instance=lambda v: [cmd.format_value(v) if v != () else ""])


def _flat_sections(values: dict[str, Any]) -> list[tuple]:
    """One dataclass per section of :data:`SECTIONS`, nested without a prefix: the flags stay
    ``--lr``, ``--eig_every``, and ``--help`` groups them."""
    out = []
    for section, (meaning, names) in SECTIONS.items():
        cls = dataclasses.make_dataclass(section, [
            (n, Annotated[Any, _field_spec(n), tyro.conf.arg(help=FIELD_DOCS[n])],
             dataclasses.field(default=values[n])) for n in names], frozen=True)
        cls.__doc__ = meaning
        out.append((f"{section}_fields", Annotated[cls, tyro.conf.OmitArgPrefixes,
                                                   tyro.conf.arg(name=section)], cls()))
    return out


def _scan(command: str, tokens: Sequence[str], fields: set[str]) -> tuple[list[str], list[str]]:
    """Split ``tokens`` into positionals and flags (``--name=value`` joined, so a value such as
    ``-1`` is never read as a flag); unknown flags and missing values are one-line errors."""
    takes_value = {f.name for f in dataclasses.fields(COMMANDS[command][0])
                   if f.type is not bool and f.name not in _POSITIONAL} | fields
    positional, flags, i = [], [], 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in ("-h", "--help") or not tok.startswith("-") or tok == "-":
            (flags if tok.startswith("-") else positional).append(tok)
        else:
            name, eq, value = tok.lstrip("-").partition("=")
            name = name.replace("-", "_")
            known = fields | {f.name for f in dataclasses.fields(COMMANDS[command][0])}
            if name not in known - _POSITIONAL:
                if fields:
                    raise ConfigError(unknown_field_message(name))
                close = difflib.get_close_matches(name, sorted(known), n=1)
                raise UsageError(f"--{name}: unknown flag of eosflow {command}"
                                 + (f"; did you mean --{close[0]}?" if close else ""))
            if eq and name not in takes_value:
                raise UsageError(f"--{name}: takes no value, got {tok!r}")
            if name in takes_value and not eq:
                if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                    raise ConfigError(f"{name}: needs a value (--{name} VALUE)")
                value, i = tokens[i + 1], i + 1
                eq = "="
            flags.append(f"--{name}{eq}{value}" if eq else f"--{name}")
        i += 1
    return positional, flags


def _tyro(cls: type, flags: list[str], command: str, description: str,
          extra: Sequence[tuple] = (), **defaults: Any):
    """Parse ``flags`` with tyro: the command's own flags (``cls``, defaults overridden by
    ``defaults``) and ``extra`` fields, all without a prefix."""
    flat = dataclasses.make_dataclass(command, [
        ("flags", Annotated[cls, tyro.conf.OmitArgPrefixes, tyro.conf.arg(name=command)],
         cls(**defaults)), *extra], frozen=True)
    flat.__doc__ = description
    out = tyro.cli(flat, args=flags, prog=f"eosflow {command}", description=description,
                   use_underscores=True, config=(tyro.conf.FlagCreatePairsOff,),
                   console_outputs="-h" in flags or "--help" in flags)
    return out.flags, out


def parse(argv: Sequence[str]) -> Invocation:
    """Parse a command line (without ``eosflow``) and validate it, running nothing."""
    if not argv or argv[0] in ("-h", "--help"):
        raise UsageError("give a command: " + ", ".join(COMMANDS) + " (eosflow COMMAND --help)")
    command, rest = argv[0], list(argv[1:])
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, list(COMMANDS), n=1)
        raise UsageError(f"unknown command {command!r}"
                         + (f"; did you mean '{close[0]}'?" if close else ""))
    cls, description = COMMANDS[command]
    configured = command in ("run", "sweep")
    positional, flags = _scan(command, rest, set(FIELDS) if configured else set())
    if configured:
        if len(positional) > 1:
            raise UsageError(f"eosflow {command} takes one preset, got {' '.join(positional)}")
        preset = get_preset(positional[0] if positional else DEFAULT).name
        values = preset_values(preset)
        args, out = _tyro(cls, flags, command,
                          f"{description}. Defaults are {preset}'s values.",
                          _flat_sections(values))
        config = Config(**{n: getattr(getattr(out, f"{s}_fields"), n)
                           for s, (_, names) in SECTIONS.items() for n in names})
        return Invocation(command, args, config,
                          _grid(args.grid, config) if command == "sweep" else None)
    names = {f.name for f in dataclasses.fields(cls)} & _POSITIONAL
    if names == {"preset"} and len(positional) <= 1:
        defaults = {"preset": positional[0] if positional else None}
    elif names == {"run_dir"} and len(positional) == 1:
        defaults = {"run_dir": positional[0]}
    elif names == {"run_dirs"} and positional:
        defaults = {"run_dirs": tuple(positional)}
    elif not positional and (not names or "-h" in flags or "--help" in flags):
        defaults = {}
    else:
        raise UsageError(f"eosflow {command}: unexpected arguments {' '.join(positional)!r}"
                         if positional or not names else f"eosflow {command} needs "
                         + {"run_dir": "RUN_DIR", "run_dirs": "RUN_DIR ..."}[names.pop()])
    args, _ = _tyro(cls, flags, command, description, **defaults)
    if command == "list" and args.preset is not None:
        get_preset(args.preset)
    if command == "resume" and args.steps is not None and not 0 < args.steps < 2**31:
        raise ConfigError(f"steps: must be positive and below 2**31, got {args.steps}")
    if command == "export" and len(args.run_dirs) > 1 and args.out is not None:
        raise UsageError("export --out names one file: give one run")
    if command == "report" and len(args.run_dirs) > 1 and args.out is None:
        raise UsageError("report of several runs needs --out FILE.html")
    return Invocation(command, args)


def _grid(items: Sequence[str], base: Config) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, eq, values = item.partition("=")
        name = name.strip().replace("-", "_")
        if not eq:
            raise UsageError(f"--grid takes FIELD=V1,V2,..., got {item!r}")
        if name not in FIELDS or name == "name":
            raise ConfigError(unknown_field_message(name) if name != "name"
                              else "name: cannot be swept")
        parts = [v.strip() for v in values.split(",") if v.strip()]
        if not parts:
            raise ConfigError(f"{name}: the sweep grid is empty")
        grid[name] = [coerce(name, v) for v in parts]
    if not grid:
        raise UsageError("sweep needs at least one --grid FIELD=V1,V2,...")
    for combo in _product(grid):  # every point is valid before any starts
        base.replace(**combo)
    return grid


def _product(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    import itertools

    return [dict(zip(grid, c, strict=True)) for c in itertools.product(*grid.values())]


def _shard(spec: str | None) -> tuple[int, int]:
    import os

    if spec is None:
        n, i = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
        return (int(i), int(n)) if n and i else (0, 1)
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise UsageError(f"--shard takes I/N (e.g. 0/4), got {spec!r}") from None
    if not 0 <= i < n:
        raise UsageError(f"--shard: need 0 <= I < N, got {spec!r}")
    return i, n


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: eosflow COMMAND [ARGS] (eosflow COMMAND --help)\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<8} {text}")
        return 0 if argv else EXIT_USAGE
    inv = None
    try:
        inv = parse(argv)
        if inv.command == "list":
            return cmd.list_presets(inv.args.preset, inv.args.fields)
        if inv.command in ("run", "sweep", "verify", "resume"):
            cmd.compilation_cache()
        if inv.command == "run":
            return cmd.run(inv.args, inv.config)
        if inv.command == "sweep":
            args = dataclasses.replace(inv.args, shard=_shard(inv.args.shard))
            return cmd.sweep(args, inv.config, inv.grid)
        return getattr(cmd, inv.command)(inv.args)
    except SystemExit as exit_:  # tyro: --help (0) or a command line it refused (2)
        if exit_.code in (0, None):
            return 0
        print(f"eosflow: error: bad arguments for eosflow {argv[0]} (see eosflow {argv[0]} "
              "--help)", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, EosflowError) as err:
        print(f"eosflow: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # a second Ctrl-C: the runner stopped at once, still resumable
        where = _run_dir(inv)
        print(f"\neosflow: interrupted; resume with `eosflow resume {where}`" if where else
              "\neosflow: interrupted", file=sys.stderr)
        return 130


def _run_dir(inv) -> str | None:
    """The run directory an invocation writes (for the interrupt message), if one."""
    if inv is None:
        return None
    if inv.command == "run":
        return str(Path(inv.args.out) / inv.config.name)
    if inv.command == "resume":
        return str(inv.args.run_dir)
    return None


__all__ = ["PRESETS", "Invocation", "main", "parse"]
