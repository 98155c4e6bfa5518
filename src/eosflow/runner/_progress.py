"""Progress of a run: a tqdm bar on a terminal, plain log lines elsewhere.

On a terminal the bar redraws in place; piped to a file (nohup, SLURM) one plain line is
written every ``interval`` seconds, so a log shows a run's progress while it runs. Both say
when a chunk is compiled and how long that took, the rate and ETA *excluding* compilation,
and the loss, λ1 and the stableness at the last measurement. Besides the per-chunk
:meth:`Progress.update`, a network run's chunk calls :meth:`Progress.heartbeat` between
its compiled pieces (``Program.pieces``, ``Program.on_progress``), so a long chunk is not
silent.
"""

import datetime
import math
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np

DEFAULT_INTERVAL = 30.0  # seconds between log lines on a non-terminal


class Progress:
    """Reports a run's progress on ``stream`` (default stderr).

    Args:
        total: the step the run ends at.
        start: the step it starts (or resumes) from.
        enabled: ``False`` silences everything; ``True`` or ``None`` (default) report: a bar
            on a terminal, one plain line every ``interval`` seconds otherwise.
        stream: where to write (default ``sys.stderr``).
        label: the run's name, leading every line.
        interval: seconds between plain lines on a non-terminal.
        stableness: ``(lam, eff_lr) -> S`` and its short label, e.g. ``"ηλ1"``.
    """

    def __init__(self, total: int, *, start: int = 0, enabled: bool | None = None,
                 stream: TextIO | None = None, label: str = "",
                 interval: float = DEFAULT_INTERVAL,
                 stableness: tuple[Callable[[float, float], float], str] | None = None):
        if not (isinstance(interval, int | float) and interval > 0):
            raise ValueError(f"progress interval must be a positive number of seconds, "
                             f"got {interval!r}")
        self.stream = stream or sys.stderr
        isatty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.mode = "off" if enabled is False else ("bar" if isatty else "log")
        self.total, self.start, self.label = total, start, label
        self.interval = float(interval)
        self.stableness = stableness
        self.step = start
        self.loss = math.nan
        self.lam: float | None = None
        self.s: float | None = None
        self.compile_s = 0.0  # excluded from the rate
        self.t0 = time.perf_counter()
        self.last_print = self.t0
        self.printed_step = start
        self._lock = threading.Lock()
        self._bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, file=self.stream, desc=label,
                             dynamic_ncols=True, leave=True, mininterval=0.2,
                             bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}"
                                        " {postfix}")

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    # -- compilation -------------------------------------------------------------------------
    def compiling(self, steps: int) -> None:
        """Say that a chunk of ``steps`` steps is being compiled (before it is)."""
        self._write(f"{self.label}: compiling the {steps}-step chunk...")

    def compiled(self, seconds: float) -> None:
        """Say how long compilation took; that time is left out of the rate and ETA."""
        if seconds <= 0:
            return
        with self._lock:
            self.compile_s += seconds
        self._write(f"{self.label}: compiled in {seconds:.1f} s")

    # -- steps ---------------------------------------------------------------------------------
    def update(self, step: int, *, loss: float, lam: float | None = None,
               eff_lr: float | None = None, s_lam: float | None = None) -> None:
        """The run has reached ``step`` (a chunk boundary); ``lam`` and ``eff_lr`` are those
        of the last measurement (``None``: none in this chunk); ``s_lam``, where given, is the
        eigenvalue S is formed from (the preconditioned sharpness of Adam and RMSProp)."""
        self._record(step, loss, lam, eff_lr, force=False, s_lam=s_lam)

    def heartbeat(self, step, loss, lam, eff_lr, s_lam=None) -> None:
        """Called between the compiled pieces of a chunk (``Program.pieces``)."""
        self._record(int(step), float(loss), float(lam), float(eff_lr), force=False,
                     s_lam=s_lam)

    def _record(self, step, loss, lam, eff_lr, *, force, s_lam=None) -> None:
        if self.mode == "off":
            return
        with self._lock:
            if step < self.step:  # never report going back
                return
            self.step = step
            if loss is not None and math.isfinite(loss):
                self.loss = loss
            if lam is not None and math.isfinite(lam):
                self.lam = lam
                s_lam = lam if s_lam is None else s_lam
                if (self.stableness is not None and eff_lr is not None and math.isfinite(eff_lr)
                        and math.isfinite(s_lam)):
                    self.s = float(self.stableness[0](s_lam, eff_lr))
            now = time.perf_counter()
            if self.mode == "bar":
                self._bar.n = step
                self._bar.set_postfix_str(self._status(now), refresh=False)
                self._bar.refresh()
            elif force or now - self.last_print >= self.interval:
                self._print_line(now)

    def _print_line(self, now: float) -> None:
        pct = 100.0 * self.step / max(self.total, 1)
        self.stream.write(f"{self.label}: step {self.step}/{self.total} ({pct:.0f}%), "
                          f"{self._status(now)}\n")
        self.stream.flush()
        self.last_print, self.printed_step = now, self.step

    def rate(self, now: float | None = None) -> float:
        """Steps per second since the start, compilation excluded."""
        now = time.perf_counter() if now is None else now
        seconds = now - self.t0 - self.compile_s
        return (self.step - self.start) / seconds if seconds > 0 else math.nan

    def _status(self, now: float) -> str:
        rate = self.rate(now)
        parts = []
        if math.isfinite(rate) and rate > 0:
            eta = (self.total - self.step) / rate
            parts += [f"{rate:,.1f} steps/s" if rate < 100 else f"{rate:,.0f} steps/s",
                      f"ETA {datetime.timedelta(seconds=round(eta))}"]
        parts.append(f"loss {self.loss:.4g}")
        if self.lam is not None:
            parts.append(f"λ1 {self.lam:.4g}")
        if self.s is not None:
            parts.append(f"{self.stableness[1]} {self.s:.3f}")
        return ", ".join(parts)

    def note(self, text: str) -> None:
        """One line about work between chunks (e.g. the prediction), prefixed by the label."""
        self._write(f"{self.label}: {text}")

    def _write(self, line: str) -> None:
        if self.mode == "off":
            return
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.mode == "bar":
            self._bar.close()
        elif self.mode == "log" and self.printed_step != self.step:
            self._print_line(time.perf_counter())


def last_valid(rows: dict[str, Any]) -> dict[str, float | None]:
    """What a progress line shows of some rows (NumPy columns, point 0 of a sweep): the last
    finite loss, and the last lambda_1 with the effective step of its row (None if none), and
    ``s_lam`` the last preconditioned sharpness where the rows have one (else None)."""
    def col(name):
        v = rows.get(name)
        return None if v is None else (v if v.ndim == 1 else v[:, 0])

    loss = col("loss")
    loss = loss[np.isfinite(loss)] if loss is not None else np.zeros(0)
    out = {"loss": float(loss[-1]) if len(loss) else math.nan, "lam": None, "eff_lr": None,
           "s_lam": None}
    pre = col("precond_lambda_1")
    if pre is not None and np.isfinite(pre).any():
        out["s_lam"] = float(pre[np.flatnonzero(np.isfinite(pre))[-1]])
    lam = col("lambda_1")
    if lam is not None and np.isfinite(lam).any():
        i = np.flatnonzero(np.isfinite(lam))[-1]
        out["lam"], out["eff_lr"] = float(lam[i]), float(col("eff_lr")[i])
    return out
