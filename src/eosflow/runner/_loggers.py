"""Loggers: hand each finished chunk's rows to TensorBoard, Weights & Biases or your own sink.

A logger is any object with ``log_rows(columns, start_step)`` and ``close()``
(:class:`Logger`). :func:`~eosflow.run_experiment` calls ``log_rows`` once per finished
chunk, after the rows are safely on disk (on the runner's writing thread, which writes a
chunk's files while the next chunk computes; chunks in order), with the same columns the
run directory stores (``step`` and one NumPy array per metric; a sweep's columns carry a
trailing axis over its points), and ``close`` once when the run ends. None is used unless
passed (``loggers=``), and the adapters import their package only when constructed.

Example:
    >>> class Collect:
    ...     def __init__(self):
    ...         self.steps = []
    ...     def log_rows(self, columns, start_step):
    ...         self.steps += list(columns["step"])
    ...     def close(self):
    ...         pass
    >>> isinstance(Collect(), Logger)
    True
"""

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np

# bookkeeping columns a curve logger skips
SKIP = frozenset({"step", "valid", "stop_reason"})


@runtime_checkable
class Logger(Protocol):
    """Receives each finished chunk of rows; see the module docstring."""

    def log_rows(self, columns: dict[str, np.ndarray], start_step: int) -> None: ...

    def close(self) -> None: ...


def scalars(columns: dict[str, np.ndarray]) -> Iterator[tuple[int, dict[str, float]]]:
    """``(step, {name: value})`` for each row, finite numeric values only; a sweep's
    columns become ``name/point_j``. The shared reading of the adapters below."""
    steps = np.asarray(columns["step"])
    names = [k for k, v in columns.items()
             if k not in SKIP and np.asarray(v).dtype.kind in "fiub"]
    valid = columns.get("valid")
    for i, step in enumerate(steps):
        row: dict[str, float] = {}
        for k in names:
            v = np.asarray(columns[k][i], np.float64)
            if v.ndim == 0:
                if np.isfinite(v):
                    row[k] = float(v)
                continue
            ok = np.ones(v.shape, bool) if valid is None else np.asarray(valid[i], bool)
            for j, x in enumerate(v.ravel()):
                if ok.ravel()[j] and np.isfinite(x):
                    row[f"{k}/point_{j}"] = float(x)
        if row:
            yield int(step), row


def _require(module: str, package: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"this logger needs the {package} package: pip install {package} "
            f"(or pip install 'eosflow[{extra}]')"
        ) from err


class TensorBoardLogger:
    """Writes every finite metric as a TensorBoard scalar (through ``tensorboardX``).

    Args:
        logdir: the event-file folder (``tensorboard --logdir`` it).
        **kwargs: passed to ``tensorboardX.SummaryWriter``.
    """

    def __init__(self, logdir: str, **kwargs: Any):
        tbx = _require("tensorboardX", "tensorboardX", "loggers")
        self.writer = tbx.SummaryWriter(logdir=str(logdir), **kwargs)

    def log_rows(self, columns: dict[str, np.ndarray], start_step: int) -> None:
        for step, row in scalars(columns):
            for name, value in row.items():
                self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """Logs every row's finite metrics to a Weights & Biases run (``wandb.log(row, step=)``).

    Args:
        run: an existing ``wandb`` run; else one is started with ``wandb.init(**kwargs)``
            and finished by :meth:`close`.
        **kwargs: passed to ``wandb.init`` (``project=``, ``config=``, ...).
    """

    def __init__(self, run: Any = None, **kwargs: Any):
        wandb = _require("wandb", "wandb", "loggers")
        self._owned = run is None
        self.run = wandb.init(**kwargs) if run is None else run

    def log_rows(self, columns: dict[str, np.ndarray], start_step: int) -> None:
        for step, row in scalars(columns):
            self.run.log(row, step=step)

    def close(self) -> None:
        if self._owned:
            self.run.finish()
