"""A run's metrics as one table file (CSV, Parquet or HDF5) for tools outside eosflow.

One row per recorded step; a compiled sweep (columns with a trailing axis over its points)
gives one row per step *and* point, with a ``point`` column and the swept fields' values
(``lr``, ``seed``, ...) beside the metrics. Columns measured on a cadence hold nan on rows
without a measurement (``eig_converged`` included: 1.0 / 0.0 where a solve ran).
"""

import csv
import json
import os
from pathlib import Path

import numpy as np

from .._errors import EosflowError
from ..runner import Run, load_run

FORMATS = {"csv": ".csv", "parquet": ".parquet", "hdf5": ".h5"}


def run_table(run: str | os.PathLike | Run) -> dict[str, np.ndarray]:
    """The metrics of ``run`` as flat, equal-length columns (the exported table).

    Example:
        >>> import numpy as np
        >>> from eosflow.runner import Run
        >>> run = Run("r", {}, {"sweep": {"lr": [0.1, 0.2]}}, {},
        ...           {"step": np.arange(2), "loss": np.array([[1.0, 2.0], [3.0, 4.0]])})
        >>> t = run_table(run)
        >>> t["step"].tolist(), t["point"].tolist(), t["lr"].tolist(), t["loss"].tolist()
        ([0, 0, 1, 1], [0, 1, 0, 1], [0.1, 0.2, 0.1, 0.2], [1.0, 2.0, 3.0, 4.0])
    """
    run = run if isinstance(run, Run) else load_run(run)
    m = run.metrics
    if not m:
        return {}
    steps = np.asarray(m["step"])
    n = len(steps)
    widths = {np.asarray(v).shape[1] for v in m.values() if np.ndim(v) > 1}
    sweep = run.metadata.get("sweep") or {}
    points = widths.pop() if widths else None
    if widths:
        raise ValueError(f"run {run.path}: columns disagree on the number of sweep points")
    if points is None:
        return {k: np.asarray(v) for k, v in m.items()}
    out: dict[str, np.ndarray] = {"step": np.repeat(steps, points),
                                  "point": np.tile(np.arange(points), n)}
    for field, values in sweep.items():
        name = field if field not in m else f"sweep_{field}"
        out[name] = np.tile(np.asarray(values), n)
    for k, v in m.items():
        if k == "step":
            continue
        v = np.asarray(v)
        out[k] = v.reshape(n * points, *v.shape[2:]) if v.ndim > 1 else np.repeat(v, points)
    return out


def export_run(run: str | os.PathLike | Run, format: str = "csv",
               out: str | os.PathLike | None = None) -> Path:
    """Write the metrics of ``run`` as a CSV, Parquet or HDF5 table; return its path.

    Args:
        run: a run directory (or a loaded :class:`~eosflow.runner.Run`).
        format: ``"csv"`` (no extra package), ``"parquet"`` (needs ``pyarrow``) or
            ``"hdf5"`` (needs ``h5py``; one dataset per column, the configuration and
            metadata as JSON attributes). ``pip install 'eosflow[export]'`` adds both.
        out: the file to write; default ``RUN/metrics.csv`` (``.parquet``, ``.h5``).

    Raises:
        ValueError: an unknown ``format``, or a run with no recorded rows.
        ImportError: the format's package is missing (the message names it).
    """
    if format not in FORMATS:
        raise EosflowError(
            f"format: unknown value {format!r} (choose from {', '.join(FORMATS)})")
    run = run if isinstance(run, Run) else load_run(run)
    table = run_table(run)
    if not table:
        raise EosflowError(f"{run.path}: no recorded rows to export yet")
    path = Path(out) if out is not None else Path(run.path) / f"metrics{FORMATS[format]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    {"csv": _csv, "parquet": _parquet, "hdf5": _hdf5}[format](table, run, path)
    return path


def _flat(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Columns with more than one value per row split into ``name[i]``."""
    out = {}
    for k, v in table.items():
        if v.ndim == 1:
            out[k] = v
        else:
            for i in range(int(np.prod(v.shape[1:]))):
                out[f"{k}[{i}]"] = v.reshape(len(v), -1)[:, i]
    return out


def _csv(table, run: Run, path: Path) -> None:
    cols = _flat(table)
    names = list(cols)
    as_lists = [np.asarray(cols[k]).tolist() for k in names]  # repr round-trips floats
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        w.writerows(zip(*as_lists, strict=True))


def _needs(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"this export format needs the {module} package: pip install "
                          f"{module} (or pip install 'eosflow[export]')") from err


def _parquet(table, run: Run, path: Path) -> None:
    pa = _needs("pyarrow")
    pq = _needs("pyarrow.parquet")
    t = pa.table({k: pa.array(v) for k, v in _flat(table).items()})
    t = t.replace_schema_metadata({"eosflow.config": json.dumps(run.config),
                                   "eosflow.metadata": json.dumps(run.metadata)})
    pq.write_table(t, path)


def _hdf5(table, run: Run, path: Path) -> None:
    h5py = _needs("h5py")
    with h5py.File(path, "w") as f:
        for k, v in table.items():
            f.create_dataset(k, data=v)
        f.attrs["eosflow.config"] = json.dumps(run.config)
        f.attrs["eosflow.metadata"] = json.dumps(run.metadata)
