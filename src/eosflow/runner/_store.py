"""The run directory: atomic files, append-only metrics, checkpoints, and :func:`load_run`.

Layout::

    RUN/config.json        the resolved configuration
    RUN/metadata.json      versions, devices, dtype, seed, loss convention, data subset, ...
    RUN/status.json        progress and how the run ended (rewritten atomically)
    RUN/metrics/*.npz      one file per finished chunk of steps, named by its first step
    RUN/checkpoint.npz     params, optimizer state, eigen-solver warm start, key, step
    RUN/figures/, RUN/report.html

Every file is written to a temporary name, flushed, fsynced and renamed, so a killed
process leaves either the old file or the new one, never half of one.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .._errors import RunDirError

METRICS = "metrics"
_UMASK = os.umask(0)
os.umask(_UMASK)
CHECKPOINT = "checkpoint.npz"


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
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


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
        with np.load(p) as z:
            parts.append({k: z[k] for k in z.files})
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
    ref, treedef = jax.tree.flatten(like)
    with np.load(path) as z:
        info = json.loads(bytes(z["info"]).decode())
        count = len([k for k in z.files if k.startswith("leaf_")])
        leaves = [z[f"leaf_{i:05d}"] for i in range(count)]
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


# --- the run as a whole --------------------------------------------------------------------


def is_run(path: Path) -> bool:
    return (Path(path) / "config.json").is_file()


def prepare(path: Path, *, resume: bool, overwrite: bool) -> bool:
    """Create ``path`` for a new run, or check it can be resumed. Returns whether resuming.

    A non-empty directory is never overwritten silently and never prompts: without
    ``resume`` or ``overwrite`` it is an error that says which flag to pass.
    """
    path = Path(path)
    if resume and overwrite:
        raise RunDirError("pass either resume or overwrite, not both.")
    exists = path.exists() and any(path.iterdir()) if path.is_dir() else path.exists()
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path} exists and is not a directory.")
    if exists:
        if resume:
            if not is_run(path):
                raise RunDirError(f"{path} is not an eosflow run (no config.json); cannot resume.")
            return True
        if overwrite:
            if not is_run(path):
                raise RunDirError(
                    f"{path} is not an eosflow run; refusing to delete it. Choose another --out."
                )
            shutil.rmtree(path)
        else:
            raise RunDirError(
                f"{path} already exists; pass --resume to continue it or --overwrite to replace it."
            )
    elif resume:
        raise RunDirError(f"{path} does not exist; nothing to resume.")
    path.mkdir(parents=True, exist_ok=True)
    return False


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

    def __getitem__(self, column: str) -> np.ndarray:
        return self.metrics[column]

    def columns(self) -> Iterable[str]:
        return self.metrics.keys()


def load_run(path: str | os.PathLike) -> Run:
    """Load a saved run: ``run.config``, ``run.metadata``, ``run.status``, ``run.metrics``
    (a dict of NumPy columns, each of length "number of recorded steps"; sweeps add a
    trailing axis over the grid points) and ``run.df`` (pandas, if installed).

    Example: ``load_run("runs/digits-gd").metrics["lambda_1"]`` is the sharpness column.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path} is not a directory.")
    if not is_run(path):
        raise RunDirError(f"{path} is not an eosflow run (no config.json).")
    meta_p, status_p = path / "metadata.json", path / "status.json"
    return Run(
        path=path,
        config=read_json(path / "config.json"),
        metadata=read_json(meta_p) if meta_p.exists() else {},
        status=read_json(status_p) if status_p.exists() else {},
        metrics=read_metrics(path),
    )
