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

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ..curvature import spectral_density
from ..problems import Problem, build_problem
from . import _store as rd
from ._config import Config, ConfigError
from ._devices import to_host
from ._progress import Progress
from ._step import SWEEPABLE, Program, TrainState


@dataclass
class RunRecord:
    """What :func:`run_experiment` returns (the same facts are in the run directory)."""

    path: Path
    config: Config
    status: str  # "completed", "goal_reached" or "diverged"
    message: str
    steps_done: int
    params: Any
    metrics: dict[str, np.ndarray]

    @property
    def ok(self) -> bool:
        return self.status != "diverged"


StepMetricsFn = Callable[[Any, dict[str, jax.Array]], dict[str, jax.Array]]


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
) -> RunRecord:
    """Run (or resume) the experiment ``config`` in the run directory ``out_dir``.

    Args:
        config: the experiment; see :class:`Config`.
        out_dir: the run directory. An existing non-empty one is an error unless ``resume``
            (continue from its checkpoint) or ``overwrite`` (delete it first) is given.
        problem: use this :class:`~eosflow.problems.Problem` instead of the configured one.
        metrics_fn: ``metrics_fn(params, row) -> dict`` of extra scalar columns, evaluated
            inside the compiled step (``row`` holds the step's built-in metrics).
        sweep: vmap over these fields at once, e.g. ``{"lr": [0.1, 0.2]}`` (fields from
            ``SWEEPABLE``, equal-length lists: one point per index). Columns then carry a
            trailing axis over the points.
        progress: show a progress line (default: when stderr is a terminal).

    Returns:
        A :class:`RunRecord`; ``status`` is "diverged" when the loss blew up (the CLI then
        exits non-zero), and every finished step's metrics are on disk either way.
    """
    out = Path(out_dir)
    if not isinstance(config, Config):
        raise TypeError(f"config must be an eosflow Config, got {type(config).__name__}.")
    points = _check_sweep(sweep)
    if config.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    writer = jax.process_index() == 0  # in a multi-process job only process 0 writes
    if writer:
        resuming = rd.prepare(out, resume=resume, overwrite=overwrite)
    else:  # the other processes read the run directory (a shared filesystem) to resume
        resuming = resume and rd.is_run(out)
    problem = build_problem(config) if problem is None else problem
    if config.loss_min is None:  # L* defaults to the problem's own; recorded resolved
        config = config.replace(loss_min=float(problem.loss_min))
    if resuming:
        saved = Config.from_dict(rd.read_json(out / "config.json"), strict=False)
        if saved != config:
            diff = [k for k in config.to_dict() if saved.to_dict()[k] != config.to_dict()[k]]
            raise ConfigError(
                f"{diff[0]}: differs from the run being resumed ({saved.to_dict()[diff[0]]!r})"
            )
        saved_sweep = rd.read_json(out / "metadata.json").get("sweep")
        if saved_sweep != (sweep and {k: list(map(float, v)) for k, v in sweep.items()}):
            raise ConfigError("sweep: differs from the run being resumed")
    engine = Program(config, problem, sweep, points, metrics_fn)
    state = engine.initial_state()
    status: dict[str, Any] = {"state": "running", "step": 0, "hvps_total": 0,
                              "wall_seconds": 0.0}
    if resuming:
        if (out / rd.CHECKPOINT).exists():
            width = engine.saved_block_width(state, rd.checkpoint_leaf_shapes(out))
            like = state if width is None else engine.fit_block(state, width)
            state, _ = rd.load_checkpoint(out, like)
            state = engine.fit_block(state, engine.block)
        # else: killed before its first checkpoint; the initial state is step 0
        if writer:
            rd.truncate_metrics(out, int(state.step))
        status = rd.read_json(out / "status.json")
        status.setdefault("resumed_at", []).append(int(state.step))
    else:
        _check_finite_params(state.params)
        if writer:
            rd.write_json(out / "config.json", config.to_dict())
            rd.write_json(out / "metadata.json", engine.metadata())
            engine.write_prediction(out)
            rd.save_checkpoint(out, to_host(state), {"step": 0})
            rd.write_json(out / "status.json", status)
    return _loop(engine, out, state, status, progress)


def _check_sweep(sweep) -> int | None:
    if sweep is None:
        return None
    if not isinstance(sweep, dict) or not sweep:
        raise ConfigError("sweep: give a non-empty {field: [values]} mapping")
    lengths = set()
    for field, values in sweep.items():
        if field not in SWEEPABLE:
            raise ConfigError(
                f"{field}: cannot be swept in one compiled run (vmappable: {', '.join(SWEEPABLE)})"
            )
        values = list(values)
        if not values:
            raise ConfigError(f"{field}: the sweep grid is empty")
        lengths.add(len(values))
    if len(lengths) != 1:
        raise ConfigError("sweep: every field needs the same number of values (one per point)")
    return lengths.pop()


def _check_finite_params(params) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if not np.all(np.isfinite(np.asarray(leaf))):
            where = jax.tree_util.keystr(path) or "params"
            raise ValueError(f"params: the initial parameters contain nan or inf (at {where}).")



def _loop(prog: Program, out: Path, state: TrainState, status: dict,
          progress: bool | None) -> RunRecord:
    c = prog.config
    hyper, data = prog.hyper(), prog.data()
    state = prog.place(state)
    writer = jax.process_index() == 0  # only process 0 writes the run directory
    start = int(to_host(state.step))
    bar = Progress(c.steps, start=start, enabled=progress if writer else False, label=c.name)
    hvps = int(status.get("hvps_total", 0))
    wall = float(status.get("wall_seconds", 0.0))
    compile_s = float(status.get("compile_seconds", 0.0))
    session: list[dict[str, np.ndarray]] = []
    try:
        _at_boundary(prog, out, state, start, writer)
        for end in prog.boundaries():
            begin = int(to_host(state.step))
            if end <= begin:
                continue
            fn, seconds = prog.compiled(end - begin, state, hyper, data)
            compile_s += seconds
            t0 = time.perf_counter()
            state, rows = fn(state, hyper, data)
            rows = to_host(rows)
            wall += time.perf_counter() - t0
            columns = _columns(prog, rows, begin, end)
            session.append(columns)
            hvps += _hvps(columns, c.track_alignment)
            done = bool(np.all(to_host(state.done)))
            _at_boundary(prog, out, state, end, writer)
            if writer:
                if len(columns["step"]):
                    rd.write_metrics_chunk(out, begin, columns)
                if done or end % prog.ckpt_every == 0 or end == c.steps:
                    rd.save_checkpoint(out, to_host(state), {"step": end})
                    status.update(step=end, hvps_total=hvps, wall_seconds=wall,
                                  compile_seconds=compile_s)
                    rd.write_json(out / "status.json", status)
            bar.update(end, **_last_valid(columns))
            if done:
                break
    finally:
        bar.close()
    metrics = rd.read_metrics(out) if writer else _concat(session)
    reasons = np.atleast_1d(to_host(state.reason))
    message = ""
    if np.any((reasons == 1) | (reasons == 2)):
        final, message = "diverged", _divergence_message(prog, metrics)
    elif np.all(reasons == 3):
        final, message = "goal_reached", f"loss goal {c.loss_goal} reached"
    else:
        final = "completed"
    valid = metrics.get("valid", np.zeros(0, bool))
    steps_done = int(valid.sum(axis=0).max()) if valid.size else 0
    step = int(to_host(state.step))
    if writer:
        status.update(state=final, message=message, step=step, steps_done=steps_done,
                      hvps_total=hvps, wall_seconds=wall, compile_seconds=compile_s,
                      finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        rd.write_json(out / "status.json", status)
    return RunRecord(out, c, final, message, steps_done, to_host(state.params), metrics)

def _columns(prog: Program, rows: dict[str, np.ndarray], begin: int,
             end: int) -> dict[str, np.ndarray]:
    """One chunk's rows as columns; a stopped single run keeps rows up to its stopping step."""
    cols = {"step": np.arange(begin, end, dtype=np.int64)}
    cols.update({k: np.asarray(v) for k, v in rows.items()})
    if prog.sweep is None:
        cols = {k: v[cols["valid"]] for k, v in cols.items()}
    return cols

def _at_boundary(prog: Program, out: Path, state: TrainState, step: int, write: bool) -> None:
    """What a chunk boundary computes on every process (arrays may be sharded across
    them) and process 0 writes: the spectral density at the ``density_at`` steps, the
    re-projection prediction where the warm-up ends (step 0 without one)."""
    c = prog.config
    if step in c.density_at:
        _density(prog, out, state, write)
    if c.reproject_steps is not None and step == c.warmup_steps:
        prog.write_reprojection(out, state.params, write=write)

def _density(prog: Program, out: Path, state: TrainState, write: bool) -> None:
    """The Hessian's spectral density at the current step (a chunk boundary)."""
    p, step = prog.problem, int(state.step)
    params = state.params if prog.sweep is None else jax.tree.map(lambda x: x[0], state.params)
    dim = sum(int(np.size(x)) for x in jax.tree.leaves(params))
    sd = spectral_density(p.loss_fn, params, batches=p.curvature_batches,
                          num_iters=min(60, dim - 1), num_probes=4,
                          key=jax.random.PRNGKey(step))
    arrays = {"nodes": np.asarray(sd.nodes), "weights": np.asarray(sd.weights),
              "step": np.asarray(step), "dim": np.asarray(dim)}
    if write:
        path = out / "density" / f"{step:012d}.npz"
        rd.atomic_write_bytes(path, rd._npz_bytes(arrays))

def _divergence_message(prog: Program, m: dict[str, np.ndarray]) -> str:
    reason = m["stop_reason"]
    idx = np.argwhere(reason > 0)
    if not len(idx):
        return "diverged"
    i = tuple(idx[0])
    step = int(m["step"][i[0]])
    loss = float(m["loss"][i])
    point = f" (sweep point {i[1]})" if len(i) > 1 else ""
    if reason[i] == 1:
        return f"diverged at step {step}{point}: loss = {loss} is not finite"
    first = m["loss"][0] if m["loss"].ndim == 1 else m["loss"][0, i[1]]
    return (f"diverged at step {step}{point}: loss {loss:.4g} exceeds divergence_factor "
            f"{prog.config.divergence_factor:g} x the initial loss {float(first):.4g}")



def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _hvps(columns: dict[str, np.ndarray], alignment: bool) -> int:
    if "eig_matvecs" not in columns:
        return 0
    mv = columns["eig_matvecs"]
    if "batch_sharpness_matvecs" in columns:
        mv = mv + columns["batch_sharpness_matvecs"]
    extra = np.sum(np.isfinite(columns["lambda_1"])) if alignment else 0
    return int(np.sum(mv) + extra)


def _last_valid(columns: dict[str, np.ndarray]) -> dict[str, float]:
    def last(name):
        if name not in columns:
            return None
        v = columns[name]
        v = v if v.ndim == 1 else v[:, 0]
        v = v[np.isfinite(v)]
        return float(v[-1]) if len(v) else None

    loss = last("loss")
    return {"loss": math.nan if loss is None else loss, "lam": last("lambda_1"),
            "eta_lam": last("eta_lambda")}
