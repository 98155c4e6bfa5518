"""Multi-process start-up with JAX's own distributed runtime (``jax.distributed``)."""

import os
import socket
import time

import jax

ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout_s: float = 60) -> bool:
    """Join a multi-process job when asked to; return whether this is process 0.

    The three values come from the arguments or, failing that, from the environment
    variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``.
    With none of them set this is a single-process run and nothing happens. Only process 0
    writes run directories; every process computes.
    """
    coordinator = coordinator or os.environ.get(ENV[0])
    num = num_processes if num_processes is not None else _env_int(ENV[1])
    pid = process_id if process_id is not None else _env_int(ENV[2])
    if coordinator is None and num is None and pid is None:
        return True
    missing = [n for n, v in zip(("--coordinator", "--num-processes", "--process-id"),
                                 (coordinator, num, pid), strict=True) if v is None]
    if missing:
        raise ValueError(f"multi-process runs need {', '.join(missing)} (or {', '.join(ENV)})")
    if not 0 <= pid < num:
        raise ValueError(f"--process-id must lie in [0, {num}), got {pid}")
    if not jax.distributed.is_initialized():
        _check_coordinator(coordinator, pid, timeout_s)
        try:
            jax.distributed.initialize(coordinator_address=coordinator, num_processes=num,
                                       process_id=pid,
                                       initialization_timeout=max(int(timeout_s), 1))
        except Exception as err:  # the runtime's message names gRPC internals
            raise ValueError(
                f"could not join the job at coordinator {coordinator} as process {pid} of "
                f"{num}: {str(err).splitlines()[0]}"
            ) from err
    return jax.process_index() == 0


def _check_coordinator(address: str, pid: int, timeout_s: float) -> None:
    """Fail with a clear error where JAX's runtime would abort the process instead.

    Process 0 hosts the coordination service, so its port must be free; every other process
    must be able to reach it within ``timeout_s`` (it may start a little after them).
    """
    host, _, port_s = address.rpartition(":")
    if not host or not port_s.isdigit():
        raise ValueError(f"--coordinator must be host:port, got {address!r}")
    port = int(port_s)
    if pid == 0:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("", port))
            except OSError as err:
                raise ValueError(
                    f"process 0 cannot host the coordinator on port {port}: {err.strerror}"
                ) from err
        return
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as err:
            last = err
            time.sleep(0.2)
    raise ValueError(
        f"the coordinator {address} is unreachable after {timeout_s:g} s "
        f"({getattr(last, 'strerror', None) or last}); start process 0 there first, or check "
        "the address"
    )


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    return None if v in (None, "") else int(v)
