"""The run directory: atomic files, append-only metrics, checkpoints, and :func:`load_run`.

Layout::

    RUN/config.json        the resolved configuration
    RUN/metadata.json      versions, devices, dtype, seed, loss convention, data subset, ...
    RUN/status.json        progress and how the run ended (rewritten atomically)
    RUN/metrics/*.npz      one file per finished chunk of steps, named by its first step
    RUN/checkpoint.npz     params, optimizer state, eigen-solver warm start, key, step
    RUN/figures/, RUN/report.html
    RUN/.lock              the process that holds the run (pid, host); removed when it ends

Every file is written to a temporary name, flushed, fsynced and renamed, so a killed
process leaves either the old file or the new one, never half of one; leftover temporary
files (``.NAME.*.tmp``) are removed when the run is next claimed.

A run is claimed before anything is written (:func:`claim`): a second process on the same
folder is refused, and a lock left by a dead process on this host is taken over. Resuming
checks that the files agree with each other (:func:`check_metrics`, :func:`checkpoint_info`)
and refuses, naming the file and what differs, whatever cannot be continued exactly.
"""

import hashlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .._errors import RunDirError
from ._lock import LOCK, Lock, claim
from ._processes import process_columns

METRICS = "metrics"
_UMASK = os.umask(0)
os.umask(_UMASK)
CHECKPOINT = "checkpoint.npz"
TMP_SUFFIX = ".tmp"

# Test hook: with EOSFLOW_TEST_EXIT_AT_WRITE=N the process exits (status 137, like a kill -9)
# at the N-th write point (counted from 1): before the rename of the N-th atomic write when
# EOSFLOW_TEST_EXIT_PHASE=temp (a temporary file is left behind), after it otherwise.
_writes = 0


def _write_point(phase: str) -> None:
    global _writes
    at = os.environ.get("EOSFLOW_TEST_EXIT_AT_WRITE")
    if not at:
        return
    if phase == os.environ.get("EOSFLOW_TEST_EXIT_PHASE", "renamed"):
        _writes += 1
        if _writes == int(at):
            os._exit(137)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, rename it over
    ``path`` and fsync the directory: a killed process leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _write_point("temp")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    _write_point("renamed")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def json_bytes(obj: Any) -> bytes:
    """``obj`` as the JSON text :func:`write_json` writes."""
    return (json.dumps(obj, indent=2, default=_json_default) + "\n").encode()


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


class Writes:
    """A run's chunk files written in order on one background thread, so that the host
    writes a finished chunk's metrics, checkpoint and status while the device computes the
    next chunk (a toy's million-step chunk computes in ~30 ms; its files took ~5 ms more).

    Each write is atomic as ever; only *when* it happens moves, by at most one chunk. After
    a failed write the later ones are dropped, so no checkpoint claims rows that were not
    written, and :meth:`wait` raises the failure in the caller's thread."""

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(1, thread_name_prefix="eosflow-writes")
        self._pending: list = []
        self._error: BaseException | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` after every write submitted before it (arguments are not
        copied: pass what the caller will not change, e.g. :func:`json_bytes` of a dict)."""
        def run():
            if self._error is None:
                try:
                    fn(*args)
                except BaseException as err:
                    self._error = err
                    raise

        self._pending.append(self._pool.submit(run))

    def wait(self) -> None:
        """Block until every submitted write is done; raise the first that failed."""
        pending, self._pending = self._pending, []
        for f in pending:
            f.exception()  # waits
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Wait for the submitted writes (their failure is :meth:`wait`'s to raise) and end
        the thread."""
        self._pool.shutdown(wait=True)


# --- metrics --------------------------------------------------------------------------


def write_metrics_chunk(run: Path, start: int, columns: dict[str, np.ndarray]) -> None:
    """Write the rows of one finished chunk (first step ``start``) as one atomic file."""
    atomic_write(Path(run) / METRICS / f"{start:012d}.npz", lambda f: np.savez(f, **columns))


def metric_files(run: Path) -> list[tuple[int, Path]]:
    folder = Path(run) / METRICS
    if not folder.is_dir():
        return []
    out = []
    for p in folder.glob("*.npz"):
        if p.stem.isdigit():
            out.append((int(p.stem), p))
    return sorted(out)


def read_metrics(run: Path) -> dict[str, np.ndarray]:
    """All metric rows in step order, one NumPy array per column."""
    parts: list[dict[str, np.ndarray]] = []
    for _, p in metric_files(run):
        try:
            with np.load(p) as z:
                parts.append({k: z[k] for k in z.files})
        except _DAMAGE as err:
            raise RunDirError(_damaged(p, err)) from None
    if not parts:
        return {}
    names = list(parts[0])
    for part in parts[1:]:
        names += [k for k in part if k not in names]
    out = {}
    for k in names:
        cols = []
        for part in parts:
            n = len(next(iter(part.values())))
            if k in part:
                cols.append(part[k])
            else:
                shape = (n, *next(p[k] for p in parts if k in p).shape[1:])
                cols.append(np.full(shape, np.nan))
        out[k] = np.concatenate(cols)
    return out


def truncate_metrics(run: Path, step: int) -> None:
    """Drop every metric row at or after ``step`` (used when resuming from a checkpoint)."""
    for start, p in metric_files(run):
        if start >= step:
            p.unlink()
            continue
        with np.load(p) as z:
            cols = {k: z[k] for k in z.files}
        keep = cols["step"] < step
        if not keep.all():
            write_metrics_chunk(run, start, {k: v[keep] for k, v in cols.items()})


# --- checkpoints -------------------------------------------------------------------------


def save_checkpoint(run: Path, state: Any, info: dict[str, Any]) -> None:
    """Save a PyTree of arrays atomically, with ``info`` (step, ...) beside the leaves."""
    leaves = jax.tree.leaves(jax.device_get(state))
    arrays = {f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
    arrays["info"] = np.frombuffer(json.dumps(info, default=_json_default).encode(), np.uint8)
    atomic_write_bytes(Path(run) / CHECKPOINT, _npz_bytes(arrays))


_DAMAGE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def checkpoint_info(run: Path) -> dict[str, Any] | None:
    """The ``info`` saved beside a checkpoint's arrays (step, configuration, data hash, ...),
    or None when there is no checkpoint. A damaged file is a :class:`RunDirError`."""
    path = Path(run) / CHECKPOINT
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            return json.loads(bytes(z["info"]).decode())
    except _DAMAGE as err:
        raise RunDirError(_damaged(path, err)) from None


def _damaged(path: Path, err: BaseException) -> str:
    why = str(err).splitlines()[0] if str(err) else "empty or truncated"
    return (f"{path} is damaged ({type(err).__name__}: {why}); the run cannot be continued "
            "exactly: start it again with --overwrite.")


def checkpoint_leaf_shapes(run: Path) -> list[tuple[int, ...]]:
    """The shapes of the arrays in ``run``'s checkpoint, in leaf order (read lazily)."""
    with np.load(Path(run) / CHECKPOINT) as z:
        names = sorted(k for k in z.files if k.startswith("leaf_"))
        return [z[k].shape for k in names]


def load_checkpoint(run: Path, like: Any) -> tuple[Any, dict[str, Any]]:
    """Load a checkpoint into the structure of ``like``; check every leaf's shape and dtype."""
    path = Path(run) / CHECKPOINT
    if not path.exists():
        raise RunDirError(f"{run} has no checkpoint to resume from.")
    info = checkpoint_info(run)
    ref, treedef = jax.tree.flatten(like)
    try:
        with np.load(path) as z:
            count = len([k for k in z.files if k.startswith("leaf_")])
            leaves = [z[f"leaf_{i:05d}"] for i in range(count)]
    except _DAMAGE as err:
        raise RunDirError(_damaged(path, err)) from None
    if len(leaves) != len(ref):
        raise RunDirError(
            f"the checkpoint in {run} has {len(leaves)} arrays, the configuration builds "
            f"{len(ref)}: it was written by a different configuration or version."
        )
    for i, (a, r) in enumerate(zip(leaves, ref, strict=True)):
        if a.shape != np.shape(r) or a.dtype != np.asarray(r).dtype:
            raise RunDirError(
                f"checkpoint array {i} has shape {a.shape} {a.dtype}, expected "
                f"{np.shape(r)} {np.asarray(r).dtype}: written by a different configuration."
            )
    return jax.tree.unflatten(treedef, leaves), info


def data_hash(*trees: Any) -> str:
    """A short hash of the data arrays (shapes, dtypes and bytes): which examples a run saw."""
    h = hashlib.blake2b(digest_size=16)
    for tree in trees:
        for leaf in jax.tree.leaves(tree):
            a = np.ascontiguousarray(np.asarray(leaf))
            h.update(f"{a.shape}{a.dtype}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Names (dotted for nested dicts) of the fields where ``a`` and ``b`` differ."""
    out = []
    for k in sorted(set(a) | set(b), key=str):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += config_diff(x, y, f"{prefix}{k}.")
        elif _norm(x) != _norm(y):
            out.append(f"{prefix}{k}")
    return out


def _norm(x):
    return json.loads(json.dumps(x, default=_json_default))


# --- integrity -------------------------------------------------------------------------------


def check_metrics(run: Path, every: int = 1) -> int:
    """Check that the metric files cover steps 0, 1, ... with no gap and no overlap; return
    the end of the covered range (the first step not recorded). A file that cannot be read,
    a gap or an overlap is a :class:`RunDirError` naming the file.

    ``every``: the run's ``record_every``. A file starting at ``start`` then holds the rows
    of steps ``start + every - 1``, ``start + 2 every - 1``, ... (each window's last step),
    the last of which may come earlier (the step where the run stopped)."""
    run = Path(run)
    end = 0
    for start, p in metric_files(run):
        try:
            with np.load(p) as z:
                steps = np.asarray(z["step"])
        except _DAMAGE as err:
            raise RunDirError(_damaged(p, err)) from None
        ends = start + every * np.arange(1, len(steps) + 1) - 1  # the windows' last steps
        if len(steps) and (np.any(steps[:-1] != ends[:-1])
                           or not ends[-1] - every < steps[-1] <= ends[-1]):
            first = ", ".join(str(s) for s in ends[:2])
            raise RunDirError(f"{p}: its steps are not {first}, ... (the file was "
                              "edited or renamed); start the run again with --overwrite.")
        if start > end:
            raise RunDirError(
                f"{run / METRICS}: steps {end}..{start - 1} are missing (the file before "
                f"{p.name} was deleted); the run cannot be continued exactly: start it again "
                "with --overwrite."
            )
        if start < end:
            raise RunDirError(
                f"{p} starts at step {start}, inside the previous file (which ends at step "
                f"{end - 1}): overlapping metrics; start the run again with --overwrite."
            )
        end = int(steps[-1]) + 1 if len(steps) else start
    return end


def remove_temporaries(run: Path) -> list[Path]:
    """Delete the temporary files an interrupted atomic write left (``.NAME.*.tmp``)."""
    run = Path(run)
    gone = []
    for folder in (run, run / METRICS, run / "density", run / PHI_CHECKS):
        if folder.is_dir():
            for p in folder.glob(f".*{TMP_SUFFIX}"):
                p.unlink(missing_ok=True)
                gone.append(p)
    return gone


def is_run(path: Path) -> bool:
    return (Path(path) / "config.json").is_file()


def _entries(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if p.name not in (LOCK, LOCK + ".takeover")]


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


def prepare(path: Path, *, resume: bool, overwrite: bool) -> tuple[bool, Lock]:
    """Claim ``path`` and make it ready for a new run, or check it can be resumed.
    Returns (whether resuming, the lock to release when the run ends).

    A non-empty directory is never overwritten silently and never prompts: without
    ``resume`` or ``overwrite`` it is an error that says which flag to pass. A directory
    holding nothing but a lock and temporary files (a run killed before it wrote its
    configuration) counts as empty.
    """
    path = Path(path)
    if resume and overwrite:
        raise RunDirError("pass either resume or overwrite, not both.")
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path} exists and is not a directory; choose another --out.")
    if resume and not path.exists():
        raise RunDirError(f"{path} does not exist; nothing to resume.")
    lock = claim(path)
    try:
        if remove_temporaries(path):
            lock.notes.append("removed temporary files left by an interrupted write")
        if _entries(path):
            if resume:
                if not is_run(path):
                    raise RunDirError(
                        f"{path} is not an eosflow run (no config.json); cannot resume.")
                return True, lock
            if overwrite:
                if not is_run(path):
                    raise RunDirError(f"{path} is not an eosflow run; refusing to delete it. "
                                      "Choose another --out.")
                clear(path)
            else:
                raise RunDirError(f"{path} already exists; pass --resume to continue it or "
                                  "--overwrite to replace it.")
        elif resume:
            lock.notes.append("nothing had been saved yet: starting from step 0")
        return False, lock
    except BaseException:
        lock.release()
        raise


def clear(path: Path) -> None:
    """Remove everything in a claimed run directory but the lock (a restart from step 0)."""
    for p in _entries(Path(path)):
        _remove(p)


def note(message: str) -> None:
    """One line on stderr about the run directory (a takeover, a restart, a repair)."""
    print(f"eosflow: {message}", file=sys.stderr)


def check_status(path: Path, config: dict[str, Any], status: dict[str, Any]) -> list[str]:
    """What the files say against what ``status.json`` claims, for a run the runner wrote
    (one with a checkpoint): the metrics must run from step 0 without gap or overlap, and a
    finished run's metrics and checkpoint must reach the end it claims."""
    path = Path(path)
    try:
        end = check_metrics(path, int(config.get("record_every") or 1))
        info = checkpoint_info(path)
    except RunDirError as err:
        return [str(err)]
    if info is None:
        return []
    problems = []
    state, ckpt = status.get("state"), int(info.get("step", 0))
    if "metrics_end" in info and end < info["metrics_end"]:
        problems.append(f"{path / METRICS} ends at step {end}, before the checkpoint's "
                        f"{info['metrics_end']}")
    if state == "completed":
        steps = config.get("steps")
        if isinstance(steps, int) and (end < steps or ckpt < steps):
            problems.append(f"{path / 'status.json'} says completed, but the metrics end at "
                            f"step {end} and {CHECKPOINT} is at step {ckpt} of {steps}")
    if state in ("completed", "goal_reached", "diverged") and "step" in status and (
        int(status["step"]) != ckpt
    ):
        problems.append(f"{path / 'status.json'} says step {status['step']}, {CHECKPOINT} is "
                        f"at step {ckpt}")
    return problems


@dataclass
class Run:
    """A saved run: its configuration, metadata, status and metrics as columns."""

    path: Path
    config: dict[str, Any]
    metadata: dict[str, Any]
    status: dict[str, Any]
    metrics: dict[str, np.ndarray] = field(repr=False)

    @property
    def df(self):
        """The metrics as a pandas DataFrame (needs pandas; sweeps give one column per point)."""
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError("Run.df needs pandas: pip install pandas") from err
        flat = {}
        for k, v in self.metrics.items():
            if v.ndim == 1:
                flat[k] = v
            else:
                for j in range(v.shape[1]):
                    flat[f"{k}[{j}]"] = v[:, j]
        return pd.DataFrame(flat)

    @property
    def sweep(self) -> dict[str, list] | None:
        return self.metadata.get("sweep")

    @property
    def prediction(self) -> dict[str, np.ndarray] | None:
        """The predicted trajectory (``RUN/prediction.npz``) as columns of equal length:
        ``tau`` (η²·t counted from the prediction's start, :attr:`prediction_start`),
        ``lambda_1`` (λ1 along the prediction) and, when recorded, ``grad_norm`` (how close
        each predicted point is to Γ). None when the run has no prediction or it failed;
        :attr:`prediction_error` then says why."""
        return read_prediction(self.path)[0]

    @property
    def prediction_error(self) -> str | None:
        """Why the prediction failed or was not computed (``RUN/prediction_error.json``);
        None when it succeeded or the run has none."""
        return read_prediction(self.path)[1]

    @property
    def prediction_start(self) -> int | None:
        """The step from which the prediction runs (its ``tau = 0``), when recorded."""
        return read_prediction(self.path)[2]

    @property
    def phi(self) -> dict[str, np.ndarray] | None:
        """λ1 at Φ(x_t) where the run computed it (``phi_every`` with ``reproject_steps``;
        ``RUN/phi/``), as columns of equal length sorted by ``step``: ``step``,
        ``lambda_phi``, ``phi_dist`` (|x_t - Φ(x_t)|), ``grad_norm`` (at Φ(x_t)),
        ``converged`` (1.0 / 0.0), ``seconds``. None when there is none."""
        return read_phi_checks(self.path)

    @property
    def processes(self) -> dict[str, dict[str, np.ndarray]]:
        """Each process's columns under the metrics' names (``config.processes``):
        ``run.processes["central"]["loss"]``; ``"discrete"`` is the run's own columns."""
        return process_columns(self.metrics)

    def __getitem__(self, column: str) -> np.ndarray:
        return self.metrics[column]

    def columns(self) -> Iterable[str]:
        return self.metrics.keys()


def load_run(path: str | os.PathLike) -> Run:
    """Load a saved run: ``run.config``, ``run.metadata``, ``run.status``, ``run.metrics``
    (a dict of NumPy columns, each of length "number of recorded steps"; sweeps add a
    trailing axis over the grid points) and ``run.df`` (pandas, if installed).

    Columns measured on a cadence (``lambda_*``, ``residual_*``, ``align_*``,
    ``eig_converged``, ...) hold nan on rows without a measurement; ``eig_converged`` is
    1.0 / 0.0 where a solve ran (older runs: a boolean column, False on unmeasured rows).

    A run with ``processes`` (midpoint, stable, central) stores their rows as ``NAME.COLUMN``
    metric columns; ``run.processes[NAME]`` gives them under the metrics' own names.

    Example: ``load_run("runs/digits-gd").metrics["lambda_1"]`` is the sharpness column.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path} is not a directory.")
    if not is_run(path):
        raise RunDirError(f"{path} is not an eosflow run (no config.json).")
    meta_p, status_p = path / "metadata.json", path / "status.json"
    config = _read_json_file(path / "config.json")
    status = _read_json_file(status_p) if status_p.exists() else {}
    problems = check_status(path, config, status)
    if problems:  # never show a state the files contradict
        status = {**status, "state": "damaged", "claimed_state": status.get("state"),
                  "message": "; ".join(problems)}
    return Run(
        path=path,
        config=config,
        metadata=_read_json_file(meta_p) if meta_p.exists() else {},
        status=status,
        metrics=read_metrics(path),
    )


PREDICTION = "prediction.npz"
PREDICTION_ERROR = "prediction_error.json"


def write_prediction(run: Path, flow: Any, *, start_step: int, method: str,
                     extra: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Write a :class:`~eosflow.flows.LimitingFlow` as the run's prediction: its columns to
    ``prediction.npz`` when it succeeded, its reason to ``prediction_error.json`` when it
    failed (removing the other file). Returns the ``prediction`` entry of ``status.json``:
    ``{"status": "ok" | "failed", "reason", "start_step", "method"}``."""
    run = Path(run)
    entry = {"status": flow.status, "reason": flow.reason, "start_step": int(start_step),
             "method": method}
    if flow.status == "ok":
        cols = flow.columns()
        arrays = {**cols, "lambda": cols["lambda_1"], "method": np.asarray(method),
                  "start_step": np.asarray(int(start_step)), **(extra or {})}
        atomic_write_bytes(run / PREDICTION, _npz_bytes(arrays))
        (run / PREDICTION_ERROR).unlink(missing_ok=True)
    else:
        write_prediction_error(run, flow.reason, start_step=start_step, method=method)
    return entry


PHI_CHECKS = "phi"


def write_phi_check(run: Path, row: dict[str, np.ndarray]) -> None:
    """One λ1-at-Φ(x_t) check (:meth:`Run.phi`) as ``RUN/phi/STEP.npz``."""
    path = Path(run) / PHI_CHECKS / f"{int(row['step']):012d}.npz"
    atomic_write_bytes(path, _npz_bytes({k: np.asarray(v) for k, v in row.items()}))


def read_phi_checks(run: Path) -> dict[str, np.ndarray] | None:
    """The checks :func:`write_phi_check` wrote, as columns sorted by step (see
    :attr:`Run.phi`); None when there are none."""
    files = sorted((Path(run) / PHI_CHECKS).glob("*.npz"))
    rows = []
    for p in files:
        try:
            with np.load(p, allow_pickle=False) as z:
                rows.append({k: np.asarray(z[k], np.float64) for k in z.files})
        except _DAMAGE as err:
            raise RunDirError(_damaged(p, err)) from None
    if not rows:
        return None
    cols = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    cols["step"] = cols["step"].astype(np.int64)
    return cols


def write_prediction_error(run: Path, reason: str, *, start_step: int | None = None,
                           method: str | None = None) -> dict[str, Any]:
    """Record a prediction that failed or could not be computed; returns the status entry."""
    run = Path(run)
    write_json(run / PREDICTION_ERROR, {"error": reason, "start_step": start_step,
                                        "method": method})
    (run / PREDICTION).unlink(missing_ok=True)
    return {"status": "failed", "reason": reason, "start_step": start_step, "method": method}


def read_prediction(run: Path) -> tuple[dict[str, np.ndarray] | None, str | None, int | None]:
    """``(columns, error, start_step)`` of the run's prediction (see :attr:`Run.prediction`)."""
    run = Path(run)
    err_p, pred_p = run / PREDICTION_ERROR, run / PREDICTION
    if err_p.is_file():
        info = _read_json_file(err_p)
        start = info.get("start_step") if isinstance(info, dict) else None
        reason = info.get("error") if isinstance(info, dict) else str(info)
        return None, str(reason), start
    if not pred_p.is_file():
        return None, None, None
    try:
        with np.load(pred_p, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except _DAMAGE as err:
        raise RunDirError(_damaged(pred_p, err)) from None
    cols = {k: np.asarray(v) for k, v in raw.items()
            if k not in ("method", "start_step", "lambda", "X") and np.ndim(v) == 1}
    if "lambda_1" not in cols and "lambda" in raw:  # written before eosflow 0.3
        cols["lambda_1"] = np.asarray(raw["lambda"])
    start = int(raw["start_step"]) if "start_step" in raw else None
    return cols, None, start


def _read_json_file(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError) as err:
        raise RunDirError(f"{path} cannot be read ({type(err).__name__}: "
                          f"{str(err).splitlines()[0]}).") from None
