"""Multi-process start-up with JAX's own distributed runtime (``jax.distributed``)."""

import os

import jax

ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout_s: int = 60) -> bool:
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
        try:
            jax.distributed.initialize(coordinator_address=coordinator, num_processes=num,
                                       process_id=pid, initialization_timeout=timeout_s)
        except Exception as err:  # the runtime's message names gRPC internals
            raise ValueError(
                f"could not join the job at coordinator {coordinator} as process {pid} of "
                f"{num}: {str(err).splitlines()[0]}"
            ) from err
    return jax.process_index() == 0


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    return None if v in (None, "") else int(v)
