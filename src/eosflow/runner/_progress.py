"""A progress line on the terminal: steps/s, loss, lambda1 and eta*lambda1; silent otherwise."""

import math
import sys
import time
from typing import TextIO


class Progress:
    """Redraws one line on ``stream`` (default stderr) when it is a terminal and ``enabled``."""

    def __init__(self, total: int, *, start: int = 0, enabled: bool | None = None,
                 stream: TextIO | None = None, label: str = ""):
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self.enabled = isatty if enabled is None else enabled
        self.total, self.start, self.label = total, start, label
        self.t0 = time.perf_counter()
        self.last = start

    def update(self, step: int, *, loss: float, lam: float | None = None,
               eta_lam: float | None = None) -> None:
        if not self.enabled:
            return
        self.last = step
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        rate = (step - self.start) / elapsed
        frac = step / max(self.total, 1)
        bar = "#" * int(20 * frac)
        parts = [f"{self.label} [{bar:<20}] {step}/{self.total}", f"{rate:,.0f} steps/s",
                 f"loss {loss:.4g}"]
        if lam is not None and math.isfinite(lam):
            parts.append(f"λ1 {lam:.4g}")
        if eta_lam is not None and math.isfinite(eta_lam):
            parts.append(f"ηλ1 {eta_lam:.3f}")
        self.stream.write("\r" + "  ".join(parts) + "\033[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
