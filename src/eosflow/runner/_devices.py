"""Multi-process start-up with JAX's own distributed runtime (``jax.distributed``)."""

import os
import platform
import socket
import sys
import time

import jax
import numpy as np
from jax.sharding import Mesh

from .._errors import ConfigError

ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
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
        raise ConfigError(f"multi-process runs need {', '.join(missing)} (or {', '.join(ENV)})")
    if not 0 <= pid < num:
        raise ConfigError(f"--process-id must lie in [0, {num}), got {pid}")
    if not jax.distributed.is_initialized():
        _check_coordinator(coordinator, pid, timeout_s)
        try:
            jax.distributed.initialize(coordinator_address=coordinator, num_processes=num,
                                       process_id=pid,
                                       initialization_timeout=max(int(timeout_s), 1))
        except Exception as err:  # the runtime's message names gRPC internals
            raise ConfigError(
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
        raise ConfigError(f"--coordinator must be host:port, got {address!r}")
    port = int(port_s)
    if pid == 0:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("", port))
            except OSError as err:
                raise ConfigError(
                    f"process 0 cannot host the coordinator on port {port}: {err.strerror}"
                ) from err
        return
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0) as sock:
                _check_answers(sock, address, max(deadline - time.monotonic(), 1.0))
                return
        except OSError as err:
            last = err
            time.sleep(0.2)
    raise ConfigError(
        f"the coordinator {address} is unreachable after {timeout_s:g} s "
        f"({getattr(last, 'strerror', None) or last}); start process 0 there first, or check "
        "the address"
    )


# the HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (JAX's coordination
# service) answers with its own SETTINGS frame (frame type 4, the header's fourth byte)
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _check_answers(sock: socket.socket, address: str, timeout_s: float) -> None:
    """Refuse a coordinator port that accepts connections but does not speak gRPC (another
    program, or a hung process): JAX's runtime would wait there and then abort the process
    with a C++ stack trace instead of raising."""
    sock.settimeout(timeout_s)
    try:
        sock.sendall(_HTTP2_HELLO)
        head = sock.recv(9)
    except TimeoutError:
        head = b""
    if len(head) < 4 or head[3] != 4:
        raise ConfigError(
            f"the coordinator {address} accepts connections but does not answer as a JAX "
            f"coordination service within {timeout_s:.3g} s; is process 0 running there?")


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    return None if v in (None, "") else int(v)

def make_mesh(devices: int | None) -> Mesh | None:
    """A one-axis ("data") mesh over the first ``devices`` devices of every process; ``None``
    (no sharding) for a single-process run that did not ask for devices."""
    if devices is None:
        if jax.process_count() == 1:
            return None
        devices = jax.device_count()
    avail = jax.devices()
    if devices > len(avail):
        raise ConfigError(
            f"devices: {devices} requested, {len(avail)} available ({avail[0].platform}); on "
            "CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N devices"
        )
    return Mesh(np.array(avail[:devices]), ("data",))


def _global_array(x, sharding):
    """``x`` (the same host data on every process) as an array laid out by ``sharding``; each
    process only materialises the shards on its own devices."""
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def to_host(tree):
    """NumPy copies of a PyTree of (possibly sharded, possibly multi-process) arrays."""

    def one(x):
        if not isinstance(x, jax.Array):
            return np.asarray(x)
        if x.is_fully_addressable:
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)




def peak_memory() -> dict[str, int | None]:
    """This process's peak memory so far, in bytes: ``device`` (the first device's
    ``peak_bytes_in_use``; None where the backend does not report it, e.g. CPU) and
    ``host_rss`` (the peak resident set size, ``getrusage``; None where unavailable)."""
    stats = jax.devices()[0].memory_stats() or {}
    device = stats.get("peak_bytes_in_use")
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss *= 1 if sys.platform == "darwin" else 1024  # kilobytes on Linux
    except (ImportError, OSError):
        rss = None
    return {"device": None if device is None else int(device),
            "host_rss": None if rss is None else int(rss)}


def host_cpu(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The host CPU for a run's metadata: its model name, architecture and widest x86 vector
    extension (``"Intel(R) Xeon(R) Processor, x86_64, avx512f"``), from ``/proc/cpuinfo`` on
    Linux and :mod:`platform` elsewhere. XLA's CPU kernels round float32 differently on
    different CPUs (their code is chosen by the CPU's features), and the oscillation at the Edge
    of Stability amplifies it: two CPUs give the same run to rounding, not bit for bit.
    ``cpuinfo`` is the file to read (a missing one falls back to :mod:`platform`, whose
    ``processor()`` is often empty on Linux). On ARM, whose ``/proc/cpuinfo`` has neither
    a model name nor x86 flags, it is the architecture alone (``"aarch64"``)."""
    model, flags = "", set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    parts = [model or platform.processor(), platform.machine()]
    parts.append(next((f for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags), ""))
    return ", ".join(p for p in parts if p) or "unknown"
