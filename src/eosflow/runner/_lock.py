"""Claiming a run directory: ``RUN/.lock`` holds the owner's process id and host, created
exclusively; a stale lock of a dead process on the same host is taken over with a note."""


import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import RunDirError

LOCK = ".lock"  # RUN/.lock: the owner's pid and host



@dataclass
class Lock:
    """A claim on a run directory (``RUN/.lock`` holds the pid and host)."""

    path: Path
    notes: list[str] = field(default_factory=list)

    def release(self) -> None:
        try:
            held = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if held.get("pid") == os.getpid() and held.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _create_lock(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # umask applies
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, f)
        f.flush()
        os.fsync(f.fileno())
    return True


def _read_lock(path: Path) -> dict[str, Any] | None:
    """The lock's contents; None when it is gone, {} when unreadable (half-written)."""
    try:
        held = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return held if isinstance(held, dict) else {}


def claim(run: Path) -> Lock:
    """Claim the run directory ``run`` (created if needed) for this process.

    The lock file is created exclusively; if another live process holds it this is a
    :class:`RunDirError` ("in use by process N on HOST"). A lock left by a process that no
    longer runs on this host is taken over, with a note saying so.
    """
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise RunDirError(f"{run} exists and is not a directory; choose another --out.")
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"{run}: cannot create the run directory ({err.strerror}).") from None
    lock = Lock(run / LOCK)
    here = socket.gethostname()
    for _ in range(5):
        if _create_lock(lock.path):
            return lock
        held = _read_lock(lock.path)
        if held is None:
            continue  # released meanwhile
        pid, host = held.get("pid"), held.get("host")
        if isinstance(pid, int) and host == here and not _pid_alive(pid):
            # stale: take it over under a second exclusive file, so that two processes
            # cannot both do so (each re-reads the lock under the guard)
            guard = run / (LOCK + ".takeover")
            if not _create_lock(guard):
                time.sleep(0.05)
                continue
            try:
                if _read_lock(lock.path) == held:
                    lock.path.unlink(missing_ok=True)
                    if _create_lock(lock.path):
                        lock.notes.append(f"took over the lock of process {pid} on {host}, "
                                          "which no longer runs")
                        return lock
            finally:
                guard.unlink(missing_ok=True)
            continue
        if not held:  # being written by its owner right now
            time.sleep(0.05)
            continue
        raise RunDirError(f"{run} is in use by process {pid} on {host} (lock {lock.path}); wait "
                          "for it to end, or choose another --out.")
    raise RunDirError(f"{run}: could not claim the lock {lock.path}; if no process uses the run, "
                      "delete the lock and try again.")


# --- the run as a whole --------------------------------------------------------------------
