"""What a compiled chunk's rows become on the host: columns, HVP counts, the divergence
message, the chunk-boundary work (spectral density, prediction), the progress quantities."""


from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from ..curvature import spectral_density
from . import _store as rd
from ._step import DIVERGENCE_FLOOR, Program, TrainState


def _row_step(m: dict[str, np.ndarray], i: tuple) -> int:
    """The step of row ``i[0]`` (of point ``i[1]`` in a sweep: its own ``point_step`` with
    record_every > 1, where a point may stop before its window's last step)."""
    if len(i) > 1 and "point_step" in m:
        return int(m["point_step"][i[0], i[1]])
    return int(m["step"][i[0]])


def _stop_step(m: dict[str, np.ndarray]) -> int | None:
    idx = np.argwhere(m.get("stop_reason", np.zeros(0)) > 0)
    return _row_step(m, tuple(idx[0])) if len(idx) else None


def _columns(prog: Program, rows: dict[str, np.ndarray], begin: int,
             end: int) -> dict[str, np.ndarray]:
    """One chunk's rows as columns; a stopped single run keeps rows up to its stopping step."""
    cols = {k: np.asarray(v) for k, v in rows.items()}
    # every step's row: the chunk's steps; record_every > 1: the windows' own "step"
    # (not an arange over the whole chunk: 8 MB for a million-step toy chunk)
    cols["step"] = (cols["step"].astype(np.int64) if "step" in cols
                    else np.arange(begin, end, dtype=np.int64))
    if prog.sweep is None:
        cols = {k: v[cols["valid"]] for k, v in cols.items()}
    return cols

def _at_boundary(prog: Program, out: Path, state: TrainState, step: int, write: bool,
                 columns: dict[str, np.ndarray] | None, status: dict,
                 note: Callable[[str], None] = lambda text: None,
                 save: Callable[[TrainState], None] = lambda state: None) -> TrainState:
    """What a chunk boundary computes on every process (arrays may be sharded across
    them) and process 0 writes: the spectral density at the ``density_at`` steps; with
    ``start_on_gamma``, the warm-up's last iterate moved onto Γ (:meth:`Program.start_on_gamma`,
    ``status["start_on_gamma"]``, which the checkpoints carry) when a chunk (``columns``, the
    chunk just run) arrives at the warm-up's end — never at a resumed run's first boundary,
    whose checkpoint holds the moved state; the re-projection prediction there, or else at
    the first boundary from the warm-up's end where the run is within the phase-I distance
    of Γ (:meth:`Program.prediction_distance`), recorded as ``status["prediction"]`` (ok or
    failed, the reason, the start step); then, with ``phi_every``, λ1 at Φ(x_t) at the
    boundaries ``phi_every`` apart from the prediction's start and at the end
    (``status["phi_checked"]``: the last). ``note`` is told when each of these starts and
    how it ended (the progress report); ``save`` checkpoints the moved state at once, before
    the prediction. Returns the state, moved or not."""
    c = prog.config
    if step in c.density_at:
        _density(prog, out, state, write)
    warm_end = c.start_on_gamma and step == c.warmup_steps
    if warm_end and columns is not None:  # once per trajectory: resumed from before w, again
        note(f"step {step}: moving the iterate onto Γ (Phi(x) + half the two-step cycle)...")
        state, entry = prog.start_on_gamma(state, step)
        status["start_on_gamma"] = entry
        note(f"start on Γ {entry['status']} in {entry['seconds']:.0f} s"
             + (f": {entry['reason']}" if entry.get("reason") else ""))
        save(state)
    if c.reproject_steps is not None and "prediction" not in status:
        ready, distance = prog.prediction_distance(state.params, columns, step)
        if warm_end and status.get("start_on_gamma", {}).get("status") == "ok":
            ready = True  # the run starts on Γ: phase I is done
        if ready and step < c.steps:
            note(f"step {step}: computing the re-projection prediction "
                 f"({c.reproject_steps} steps)...")
            pred = prog.write_reprojection(out, state.params, write=write, start_step=step)
            status["prediction"] = pred
            note(f"prediction {pred['status']} in {pred['seconds']:.0f} s"
                 + (f": {pred['reason']}" if pred.get("reason") else ""))
        elif step >= c.steps:
            status["prediction"] = prog.prediction_not_started(out, distance, write=write)
    pred = status.get("prediction")
    if (c.reproject_steps is not None and c.phi_every is not None and pred
            and pred.get("status") == "ok" and step > pred["start_step"]):
        last = int(status.get("phi_checked", pred["start_step"]))
        if step - last >= c.phi_every or (step >= c.steps and step > last):
            note(f"step {step}: lambda_1 at Phi(x_t)...")
            row = prog.write_phi_check(out, state.params, step, write=write)
            status["phi_checked"] = step
            note(f"step {step}: lambda_1 at Phi(x_t) = {float(row['lambda_phi']):.4g} "
                 f"({float(row['seconds']):.0f} s)")
    return state

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

def _steps_done(m: dict[str, np.ndarray]) -> int:
    """The steps run (the most of any point of a sweep): one past the last valid row's step,
    which counts the valid rows when every step is recorded (a run's valid rows are steps 0
    to its stopping step) and stays right with ``record_every`` > 1."""
    valid = np.asarray(m.get("valid", np.zeros(0, bool)), bool)
    if not valid.any():
        return 0
    steps = m["point_step"] if "point_step" in m else np.asarray(m["step"]).reshape(
        (-1,) + (1,) * (valid.ndim - 1))
    return int(np.max(np.where(valid, steps + 1, 0)))


def _divergence_message(prog: Program, m: dict[str, np.ndarray],
                        loss0: np.ndarray | None = None) -> str:
    """The message of a diverged run; ``loss0``: the state's loss at step 0 (per point),
    the first row's loss when None (step 0's when every step is recorded)."""
    reason = m["stop_reason"]
    idx = np.argwhere(reason > 0)
    if not len(idx):
        return "diverged"
    i = tuple(idx[0])
    step = _row_step(m, i)
    loss = float(m["loss"][i])
    point = f" (sweep point {i[1]})" if len(i) > 1 else ""
    if reason[i] == 1:
        return f"diverged at step {step}{point}: loss = {loss} is not finite"
    if loss0 is None:
        first = float(m["loss"][0] if m["loss"].ndim == 1 else m["loss"][0, i[1]])
    else:
        first = float(np.ravel(loss0)[i[1] if len(i) > 1 else 0])
    base = (f"the initial loss {first:.4g}" if first >= DIVERGENCE_FLOOR else
            f"the floor {DIVERGENCE_FLOOR:g} (the initial loss is {first:.4g})")
    return (f"diverged at step {step}{point}: loss {loss:.4g} exceeds divergence_factor "
            f"{prog.config.divergence_factor:g} x {base}")



def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _hvps(columns: dict[str, np.ndarray], alignment: bool, trace_samples: int | None) -> int:
    if "eig_matvecs" not in columns:
        return 0
    mv = columns["eig_matvecs"]
    for extra_mv in ("batch_sharpness_matvecs", "minibatch_lambda_matvecs"):
        if extra_mv in columns:
            mv = mv + columns[extra_mv]
    # with record_every > 1 a row's matvecs are its window's, over eig_solves solves
    solves = (np.sum(columns["eig_solves"]) if "eig_solves" in columns
              else np.sum(np.isfinite(columns["lambda_1"])))
    extra = solves if alignment else 0
    if "hessian_trace" in columns:  # trace_samples HVPs per solve
        extra += solves * trace_samples
    return int(np.sum(mv) + extra)


def _stableness(prog: Program):
    """``(lam, eff_lr) -> S`` for the progress line, with its short label."""
    m, c = prog.method, prog.config
    label = "ηλ1" if m.step_stableness else "S"
    return (lambda lam, eff_lr: m.stableness(lam, eff_lr, c.lr, c.momentum)), label
