"""The runner: steps an optimizer in compiled chunks, tracks curvature, and loses nothing.

``run_experiment(config, out_dir)`` builds the problem and optimizer a :class:`Config` names
and steps them inside ``jax.lax.scan`` over chunks of steps (no Python per step). Each step
records the loss, the gradient norm, the effective step $\\eta_t = -\\langle u_t, g_t\\rangle /
\\|g_t\\|^2$ (exactly $\\eta$, $\\eta/\\|g\\|$, $\\eta/(2\\sqrt{L-L^*})$ for the paper's three
methods) and the parameter norm; every ``eig_every`` steps it adds the top eigenvalues with
their residuals and cost (warm-started from the previous solve), $\\eta_t\\lambda_1$ and the
alignment $\\langle \\hat g, v_1\\rangle$, $\\hat g^\\top H \\hat g/\\lambda_1$ (for
normalized GD and GD on $\\sqrt L$ at the step after as well: the pair $S_t, S_{t+1}$ that
Thm 4.7's harmonic sum needs).

After each chunk the rows go to an atomic file and, at checkpoint boundaries, the whole state
(params, optimizer state, eigen-solver warm start, PRNG key, step) is saved atomically, so a
killed run resumes from its last checkpoint and finishes bit for bit as if never stopped.
"""

import contextlib
import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .._errors import RunDirError
from ..optim import BELOW_LOSS_MIN
from ..problems import Problem, build_problem
from . import _store as rd
from ._config import Config, ConfigError
from ._custom import (
    CUSTOM_KEY,
    CustomOptimizer,
    Edge,
    check_resumed,
    custom_optimizer,
    saved_config_dict,
)
from ._devices import peak_memory, to_host
from ._loggers import Logger
from ._progress import DEFAULT_INTERVAL, Progress, last_valid
from ._rows import (
    _at_boundary,
    _columns,
    _concat,
    _divergence_message,
    _hvps,
    _stableness,
    _steps_done,
    _stop_step,
)
from ._step import SWEEPABLE, Program, TrainState


@dataclass(repr=False)
class RunRecord:
    """What :func:`run_experiment` returns (the same facts are in the run directory).

    ``status`` is one of "completed", "goal_reached", "diverged" (the loss blew up;
    ``message`` gives the step), "failed" (an error inside the compiled loop, e.g. a loss
    below L* for GD on sqrt(L); ``message`` says which) or "interrupted" (SIGINT or SIGTERM:
    ``signal`` is its number; the run directory is left resumable). ``notes`` are the
    one-line remarks about the run directory (a lock taken over, a restart from step 0, an
    extension, a repair), also printed on stderr."""

    path: Path
    config: Config
    status: str
    message: str
    steps_done: int
    params: Any
    metrics: dict[str, np.ndarray]
    signal: int | None = None
    notes: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)  # with figures=True
    report: Path | None = None  # with figures=True

    @property
    def ok(self) -> bool:
        return self.status in ("completed", "goal_reached")

    def __repr__(self) -> str:  # no arrays: a record prints on one line
        extra = f", message={self.message!r}" if self.message else ""
        extra += f", report={str(self.report)!r}" if self.report else ""
        return (f"RunRecord(path={str(self.path)!r}, name={self.config.name!r}, "
                f"status={self.status!r}, steps_done={self.steps_done}, "
                f"columns={len(self.metrics)}{extra})")


StepMetricsFn = Callable[[Any, dict[str, jax.Array]], dict[str, jax.Array]]


def _scoped_numerics(fn):
    """Run ``fn(config, ...)`` with 64-bit types when ``config.dtype`` is float64 and with
    ``config.matmul_precision``, both scoped to the call (``jax.enable_x64``,
    ``jax.default_matmul_precision``) rather than switched on for the rest of the process."""

    @functools.wraps(fn)
    def scoped(config, *args, **kwargs):
        wide = getattr(config, "dtype", None) == "float64"
        with (jax.enable_x64(True) if wide else contextlib.nullcontext(),
              jax.default_matmul_precision(getattr(config, "matmul_precision", "highest"))):
            return fn(config, *args, **kwargs)

    return scoped


@_scoped_numerics
def run_experiment(
    config: Config,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    problem: Problem | None = None,
    metrics_fn: StepMetricsFn | None = None,
    sweep: dict[str, Sequence[float]] | None = None,
    progress: bool | None = None,
    progress_interval: float = DEFAULT_INTERVAL,
    loggers: Sequence[Logger] = (),
    figures: bool = False,
    optimizer: Any = None,
    edge: Edge | None = None,
) -> RunRecord:
    """Run (or resume) the experiment ``config`` in the run directory ``out_dir``.

    Args:
        config: the experiment; see :class:`Config`.
        out_dir: the run directory. An existing non-empty one is an error unless ``resume``
            (continue from its checkpoint) or ``overwrite`` (delete it first) is given.
            It is claimed first (``RUN/.lock``): a second process on it is refused.
        resume: continue the run in ``out_dir``. Every field must equal the saved one but
            ``steps``, which may grow: ``config.replace(steps=N)`` extends a finished or
            stopped run to ``N`` steps, exactly as one run of ``N`` steps. A run stopped
            before its first checkpoint starts again from step 0 (``notes`` says so); files
            that disagree with each other are refused naming the file.
        problem: use this :class:`~eosflow.problems.Problem` instead of the configured one.
        metrics_fn: ``metrics_fn(params, row) -> dict`` of extra scalar columns, evaluated
            inside the compiled step (``row`` holds the step's built-in metrics).
        sweep: vmap over these fields at once, e.g. ``{"lr": [0.1, 0.2]}`` (fields from
            ``SWEEPABLE``, equal-length lists: one point per index). Columns then carry a
            trailing axis over the points.
        progress: ``False`` silences the progress report. Otherwise (the default) stderr
            shows a bar on a terminal, and elsewhere (a file, a pipe) one plain line every
            ``progress_interval`` seconds; both say when a chunk compiles and how long it
            took, and give the rate and ETA without compilation, the loss, and lambda_1 and
            the stableness at the last measurement. A network run's chunk runs as up to
            ten compiled pieces, and reports after each (``Program.pieces``).
        progress_interval: seconds between plain progress lines on a non-terminal.
        loggers: objects with ``log_rows(columns, start_step)`` and ``close()``
            (:class:`~eosflow.runner.Logger`; e.g. ``TensorBoardLogger``, ``WandbLogger``),
            given each finished chunk's rows after they are on disk; closed at the end.
        figures: also draw the run's figures (``RUN/figures``) and write ``RUN/report.html``,
            as the command line does (needs matplotlib: ``pip install 'eosflow[plots]'``).
        optimizer: any ``optax.GradientTransformation`` to step instead of the config's named
            ``optimizer`` (which is then ignored; a ``warmup_steps`` warm-up still runs
            first). Needs ``edge``. ``config.json`` records ``"optimizer": "custom"`` with the
            transformation's repr and state types; the command line cannot resume such a run
            (it says so, naming ``optimizer``): resume it from Python with the same arguments.
            Not with ``sweep``, ``phi_every`` or ``reproject_steps``.
        edge: the custom optimizer's EoS threshold: a number in λ1 units (``2/lr`` for a GD
            step ``lr``), a callable ``edge(lr, momentum)`` evaluated at the config's ``lr``
            and ``momentum``, or the name of a record of ``eosflow.optim.METHODS`` whose edge,
            EoS quantity and stableness are taken (at the config's ``lr`` and ``momentum``:
            set them to the transformation's). The threshold is recorded and drawn.

    Returns:
        A :class:`RunRecord`; every finished step's metrics are on disk whatever its
        ``status``. SIGINT and SIGTERM end the run at the next chunk boundary with status
        "interrupted" (a second signal stops at once, still resumable).
    """
    out = Path(out_dir)
    if not isinstance(config, Config):
        raise TypeError(f"config must be an eosflow Config, got {type(config).__name__}.")
    points = _check_sweep(sweep)
    loggers = list(loggers)
    for i, lg in enumerate(loggers):
        if not isinstance(lg, Logger):
            raise TypeError(f"loggers[{i}]: {type(lg).__name__} has no log_rows(columns, "
                            "start_step) and close(); see eosflow.runner.Logger")
    custom = custom_optimizer(optimizer, edge, config, sweep)
    writer = jax.process_index() == 0  # in a multi-process job only process 0 writes
    lock = None
    if writer:
        resuming, lock = rd.prepare(out, resume=resume, overwrite=overwrite)
    else:  # the other processes read the run directory (a shared filesystem) to resume
        resuming = resume and rd.is_run(out)
    try:
        notes = list(lock.notes) if lock else []
        for n in notes:
            rd.note(f"{out}: {n}")
        return _start(config, out, resuming, writer, notes, problem=problem,
                      metrics_fn=metrics_fn, sweep=sweep, points=points, progress=progress,
                      progress_interval=progress_interval, loggers=loggers, figures=figures,
                      custom=custom)
    finally:
        if lock is not None:
            lock.release()


def _start(config: Config, out: Path, resuming: bool, writer: bool, notes: list[str], *,
           problem, metrics_fn, sweep, points, progress, progress_interval=DEFAULT_INTERVAL,
           loggers=(), figures=False, custom: CustomOptimizer | None = None) -> RunRecord:
    problem = build_problem(config) if problem is None else problem
    if config.loss_min is None:  # L* defaults to the problem's own; recorded resolved
        config = config.replace(loss_min=float(problem.loss_min))
    data = rd.data_hash(problem.batches, problem.hessian_batches)
    sweep_json = sweep and {k: list(map(float, v)) for k, v in sweep.items()}
    saved_steps = None
    if resuming:
        raw = _read(out / "config.json")
        check_resumed(raw, custom, config, problem.params, str(out))
        saved = _saved_config(out)
        _check_same(config, saved, "the run being resumed")
        saved_steps = saved.steps
        if not (out / rd.CHECKPOINT).exists():
            if rd.metric_files(out):
                raise RunDirError(f"{out / rd.CHECKPOINT} is missing but {out / rd.METRICS} "
                                  "has rows: the run cannot be continued exactly; start it "
                                  "again with --overwrite.")
            # killed during its start, before the step-0 checkpoint: nothing to keep
            resuming = False
            _say(out, notes, "stopped before its first checkpoint: starting again from step 0")
            if writer:
                rd.clear(out)
    engine = Program(config, problem, sweep, points, metrics_fn, custom=custom)
    state = engine.initial_state()
    status: dict[str, Any] = {"state": "running", "step": 0, "hvps_total": 0,
                              "wall_seconds": 0.0}
    if resuming:
        meta = _read(out / "metadata.json")
        if meta.get("sweep") != sweep_json:
            raise ConfigError("sweep: differs from the run being resumed")
        info = rd.checkpoint_info(out) or {}
        _check_checkpoint(out, info, saved, data)
        reached = int(info.get("step", 0))
        width = engine.saved_block_width(state, rd.checkpoint_leaf_shapes(out))
        like = state if width is None else engine.fit_block(state, width)
        state, _ = rd.load_checkpoint(out, like)
        state = engine.fit_block(state, engine.track_rows)
        if int(np.asarray(state.step)) != reached:
            raise RunDirError(f"{out / rd.CHECKPOINT}: its info says step {reached}, its state "
                              f"step {int(np.asarray(state.step))}; start again with --overwrite.")
        # no gap, no overlap, or refused naming the file
        end = rd.check_metrics(out, config.record_stride)
        stopped = bool(np.all(np.asarray(state.done)))
        # a checkpoint from before eosflow 0.2 has no metrics_end: a stopped run's rows end
        # at its stopping step, a running one's at the checkpoint
        need = int(info.get("metrics_end", min(end, reached) if stopped else reached))
        if end < need:
            raise RunDirError(
                f"{out / rd.CHECKPOINT} is at step {reached} but the metrics in "
                f"{out / rd.METRICS} end at step {end}: the checkpoint does not belong to these "
                "metrics; start the run again with --overwrite.")
        if config.steps < reached:
            raise ConfigError(f"steps: {config.steps} is below the step the run has reached "
                              f"({reached}); give at least {reached}")
        if writer:
            if end > need:
                _say(out, notes, f"dropped the metric rows after step {need - 1} (written "
                     "after the last checkpoint; they are recomputed exactly)")
            rd.truncate_metrics(out, need)
        status = _read(out / "status.json") if (out / "status.json").exists() else status
        status.update(state="running", step=reached)
        # the checkpoint's, not status.json's (which a kill may have written before or after)
        status.pop("start_on_gamma", None)
        if "start_on_gamma" in info:
            status["start_on_gamma"] = info["start_on_gamma"]
        status.setdefault("resumed_at", []).append(reached)
        now = engine.metadata()
        last = (meta.get("sharpness_changes") or [meta])[-1].get("sharpness")
        if writer and last != now["sharpness"]:  # resumed by another version of eosflow
            meta.setdefault("sharpness_changes", []).append(
                {"at_step": reached, "sharpness": now["sharpness"],
                 "eosflow_version": now["eosflow_version"]})
            rd.write_json(out / "metadata.json", meta)
        done = np.atleast_1d(np.asarray(state.done))
        if np.all(done):  # it had stopped (diverged or reached its goal): say so, keep it
            return _already_stopped(engine, out, state, status, writer, notes)
        if writer and config.steps != saved_steps:
            ext = {"from_steps": saved_steps, "to_steps": config.steps, "at_step": reached,
                   "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            meta.setdefault("extensions", []).append(ext)
            status.setdefault("extensions", []).append(ext)
            rd.write_json(out / "metadata.json", meta)
            rd.write_json(out / "config.json", _config_json(engine))
            if not (out / "prediction_error.json").exists() and _has_limiting_flow(engine):
                entry = engine.write_prediction(out)  # its flow time grows with the run
                if entry is not None:
                    status["prediction"] = entry
            verb = "extending" if config.steps > saved_steps else "shortening"
            _say(out, notes, f"{verb} from {saved_steps} to {config.steps} steps "
                 f"(continuing at step {reached})")
    else:
        _check_finite_params(state.params)
        if writer:
            rd.write_json(out / "config.json", _config_json(engine))
            rd.write_json(out / "metadata.json", engine.metadata())
            entry = engine.write_prediction(out)
            if entry is not None:
                status["prediction"] = entry
            rd.save_checkpoint(out, to_host(state), _ckpt_info(engine, data, 0, 0, state))
            rd.write_json(out / "status.json", status)
    record = _loop(engine, out, state, status, progress, data, notes, progress_interval,
                   loggers)
    if figures and writer and record.status not in ("interrupted", "failed"):
        # the one call up the layers (runner -> analysis), made only when asked
        from ..analysis import plot_run, write_report

        record.figures = [p for p in plot_run(out) if p.suffix == ".png"]
        record.report = write_report([out])
    return record


def _config_json(engine: Program) -> dict[str, Any]:
    """What ``config.json`` holds: the configuration, and for a custom optimizer
    ``"optimizer": "custom"`` with its description (nothing claims a named optimizer ran)."""
    out = engine.config.to_dict()
    if engine.custom is not None:
        out["optimizer"] = "custom"
        out[CUSTOM_KEY] = engine.custom.describe(engine.config, engine.problem.params)
    return out


def _has_limiting_flow(engine: Program) -> bool:
    return engine.config.phi_every is not None and engine.config.reproject_steps is None


def _say(out: Path, notes: list[str], message: str) -> None:
    notes.append(message)
    rd.note(f"{out}: {message}")


def _read(path: Path) -> dict:
    if not path.exists():
        raise RunDirError(f"{path} is missing; the run cannot be continued exactly: start it "
                          "again with --overwrite.")
    try:
        return rd.read_json(path)
    except ValueError as err:
        raise RunDirError(f"{path} is not valid JSON ({str(err).splitlines()[0]}); restore it "
                          "or start the run again with --overwrite.") from None


def _saved_config(out: Path) -> Config:
    raw = saved_config_dict(_read(out / "config.json"))
    try:
        return Config.from_dict(raw, strict=False)
    except ConfigError as err:
        raise RunDirError(f"{out / 'config.json'}: {err}") from None


def _check_same(config: Config, saved: Config, what: str) -> None:
    """Every field but ``steps`` must equal the saved one."""
    a, b = config.to_dict(), saved.to_dict()
    diff = [k for k in rd.config_diff(a, b) if k != "steps"]
    if diff:
        k = diff[0]
        raise ConfigError(f"{k}: differs from {what} ({_get(b, k)!r}; only steps may change)")


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _check_checkpoint(out: Path, info: dict, saved: Config, data: str) -> None:
    """The checkpoint must come from this configuration (all fields but ``steps``) and data."""
    if "config" in info:
        then = Config.from_dict(info["config"], strict=False).to_dict()
        now = saved.to_dict()
        diff = [k for k in rd.config_diff(now, then) if k != "steps"]
        if diff:
            k = diff[0]
            raise RunDirError(
                f"{out / 'config.json'}: {k} is {_get(now, k)!r} but {rd.CHECKPOINT} was "
                f"written with {k} = {_get(then, k)!r}; restore config.json or start again "
                "with --overwrite.")
    if "data" in info and info["data"] != data:
        raise RunDirError(
            f"{out / rd.CHECKPOINT} was written with other data (hash {info['data']}, now "
            f"{data}): the data subset or its files changed; restore them or start again "
            "with --overwrite.")


def _ckpt_info(prog: Program, data: str, step: int, metrics_end: int,
               state: TrainState) -> dict[str, Any]:
    return {"step": step, "metrics_end": metrics_end, "data": data,
            "config": {k: v for k, v in prog.config.to_dict().items() if k != "steps"},
            "done": bool(np.all(np.asarray(to_host(state.done))))}


def _already_stopped(prog: Program, out: Path, state: TrainState, status: dict, writer: bool,
                     notes: list[str]) -> RunRecord:
    """A resumed run that had already diverged or reached its goal: nothing to compute."""
    metrics = rd.read_metrics(out)
    final, message = _final(prog, state, metrics)
    msg = f"the run had already stopped ({message}); nothing to resume"
    _say(out, notes, msg)
    steps_done = _steps_done(metrics)
    if writer:
        status["resumed_at"].pop()
        status.update(state=final, message=message, step=int(np.asarray(state.step)),
                      steps_done=steps_done)
        if final == "diverged":
            status["diverged_at"] = _stop_step(metrics)
        rd.write_json(out / "status.json", status)
    return RunRecord(out, prog.config, final, message, steps_done, to_host(state.params),
                     metrics, notes=notes)


def _final(prog: Program, state: TrainState, metrics: dict) -> tuple[str, str]:
    reasons = np.atleast_1d(to_host(state.reason))
    if np.any(reasons == 4):
        step = _stop_step(metrics)
        return "failed", (f"step {step}: " if step is not None else "") + BELOW_LOSS_MIN
    if np.any((reasons == 1) | (reasons == 2)):
        return "diverged", _divergence_message(prog, metrics, to_host(state.loss0))
    if np.all(reasons == 3):
        return "goal_reached", f"loss goal {prog.config.loss_goal} reached"
    return "completed", ""


def _check_sweep(sweep) -> int | None:
    if sweep is None:
        return None
    if not isinstance(sweep, dict) or not sweep:
        raise ConfigError("sweep: give a non-empty {field: [values]} mapping")
    lengths = set()
    for name, values in sweep.items():
        if name not in SWEEPABLE:
            raise ConfigError(
                f"{name}: cannot be swept in one compiled run (vmappable: {', '.join(SWEEPABLE)})"
            )
        values = list(values)
        if not values:
            raise ConfigError(f"{name}: the sweep grid is empty")
        lengths.add(len(values))
    if len(lengths) != 1:
        raise ConfigError("sweep: every field needs the same number of values (one per point)")
    return lengths.pop()


def _check_finite_params(params) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if not np.all(np.isfinite(np.asarray(leaf))):
            where = jax.tree_util.keystr(path) or "params"
            raise ValueError(f"params: the initial parameters contain nan or inf (at {where}).")



class _Signals:
    """SIGINT and SIGTERM set a flag the loop reads at chunk boundaries (the main thread
    only); a second signal raises KeyboardInterrupt at once."""

    def __init__(self):
        self.received: int | None = None
        self.old: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)
        return False


def _error_message(err: BaseException) -> str:
    """The one line that says what went wrong inside the compiled loop (an error raised
    with ``equinox.error_if`` comes wrapped in several lines of callback traceback)."""
    text = str(err)
    for line in text.splitlines():
        if "RuntimeError: " in line and "Traceback" not in line:
            return line.split("RuntimeError: ", 1)[1].strip()
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[0] if lines else type(err).__name__


def _loop(prog: Program, out: Path, state: TrainState, status: dict,
          progress: bool | None, data_id: str, notes: list[str],
          progress_interval: float = DEFAULT_INTERVAL,
          loggers: Sequence[Logger] = ()) -> RunRecord:
    c = prog.config
    hyper, data = prog.hyper(), prog.data()
    state = prog.place(state)
    writer = jax.process_index() == 0  # only process 0 writes the run directory
    start = int(to_host(state.step))
    bar = Progress(c.steps, start=start, enabled=progress if writer else False, label=c.name,
                   interval=progress_interval, stableness=_stableness(prog))
    prog.on_progress = None if progress is False else bar.heartbeat  # the same pieces either way
    hvps = int(status.get("hvps_total", 0))
    wall = float(status.get("wall_seconds", 0.0))
    compile_s = float(status.get("compile_seconds", 0.0))
    session: list[dict[str, np.ndarray]] = []
    written = rd.check_metrics(out, c.record_stride) if writer else 0  # the rows' end
    stopped: tuple[str, str] | None = None  # ("failed" | "interrupted", message)
    sig = _Signals()
    quiet = logging.getLogger("jax._src.callback")  # it logs a traceback of a failed check
    level = quiet.level

    saved_at = [start]
    # a chunk's files are written on a background thread while the next chunk computes
    writes = rd.Writes()

    def checkpoint(st, step):
        saved_at[0] = step
        info = _ckpt_info(prog, data_id, step, written, st)
        if "start_on_gamma" in status:  # whether this state was moved: resumes read it here
            info["start_on_gamma"] = status["start_on_gamma"]
        writes.submit(rd.save_checkpoint, out, to_host(st), info)
        status.update(step=step, hvps_total=hvps, wall_seconds=wall, compile_seconds=compile_s)

    def write_status():  # the dict as it is now (the thread writes it later)
        writes.submit(rd.atomic_write_bytes, out / "status.json", rd.json_bytes(status))

    def save_now(st):  # the state moved onto Γ, kept before the (long) prediction
        checkpoint(st, int(to_host(st.step)))
        write_status()

    try:
        quiet.setLevel(logging.CRITICAL)
        with sig:
            try:
                state = _at_boundary(prog, out, state, start, writer, None, status,
                                     bar.note)
                for end in prog.boundaries():
                    begin = int(to_host(state.step))
                    if end <= begin:
                        continue
                    if sig.received is not None:
                        break
                    if not prog.is_compiled(end - begin):
                        bar.compiling(end - begin)
                    fn, seconds = prog.compiled(end - begin, state, hyper, data)
                    bar.compiled(seconds)
                    compile_s += seconds
                    if sig.received is not None:
                        break
                    t0 = time.perf_counter()
                    try:
                        new_state, rows = fn(state, hyper, data)  # rows on the host
                    except Exception as err:  # raised inside the compiled chunk
                        stopped = ("failed", f"failed in steps {begin}..{end - 1}: "
                                   f"{_error_message(err)}")
                        break
                    state = new_state
                    wall += time.perf_counter() - t0
                    # the last chunk's files, written while this one computed: one chunk's
                    # files in flight at most, and a failed write stops the run here
                    writes.wait()
                    columns = _columns(prog, rows, begin, end)
                    session.append(columns)
                    hvps += _hvps(columns, c.track_alignment, c.trace_samples)
                    done = bool(np.all(to_host(state.done)))
                    if writer and len(columns["step"]):  # before the boundary's (long) work
                        writes.submit(rd.write_metrics_chunk, out, begin, columns)
                        written = int(columns["step"][-1]) + 1
                        for lg in loggers:  # after the rows are on disk
                            writes.submit(lg.log_rows, columns, begin)
                    state = _at_boundary(prog, out, state, end, writer, columns, status,
                                         bar.note, save=save_now if writer else lambda st: None)
                    if writer and (done or end % prog.ckpt_every == 0 or end == c.steps
                                   or sig.received is not None):
                        checkpoint(state, end)
                        write_status()
                    bar.update(end, **last_valid(columns))
                    if done:
                        break
            except KeyboardInterrupt:  # a second signal: the files are resumable as they are
                if writer:
                    status.update(state="interrupted", message="interrupted (second signal)")
                    write_status()
                raise
            if stopped is None and sig.received is not None:
                name = signal.Signals(sig.received).name
                stopped = ("interrupted", f"interrupted by {name} at step "
                           f"{int(to_host(state.step))}; resume with `eosflow resume {out}`")
            if stopped is not None and writer and saved_at[0] != int(to_host(state.step)):
                # the state at the last boundary is exact: keep it, so nothing is lost
                checkpoint(state, int(to_host(state.step)))
            writes.wait()  # a failed write fails the run here
    finally:
        writes.close()
        quiet.setLevel(level)
        bar.close()
        for lg in loggers if writer else ():
            lg.close()
    metrics = rd.read_metrics(out) if writer else _concat(session)
    if stopped is not None:
        final, message = stopped
    else:
        final, message = _final(prog, state, metrics)
    steps_done = _steps_done(metrics)
    step = int(to_host(state.step))
    if writer:
        status.update(state=final, message=message, step=step, steps_done=steps_done,
                      hvps_total=hvps, wall_seconds=wall, compile_seconds=compile_s,
                      peak_memory=peak_memory(),
                      finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        if final == "diverged":
            status["diverged_at"] = _stop_step(metrics)
        rd.write_json(out / "status.json", status)
    return RunRecord(out, c, final, message, steps_done, to_host(state.params), metrics,
                     signal=sig.received if final == "interrupted" else None, notes=notes)

