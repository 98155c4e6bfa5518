"""The runner: a configuration, the compiled training loop, and the run directory it owns.

Only this subpackage touches run directories, devices and the clock.
"""

from .._errors import ConfigError as ConfigError
from .._errors import RunDirError as RunDirError
from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "build_optimizer": "._build",
    "initial_params": "._build",
    "FIELD_DOCS": "._config",
    "FIELDS": "._config",
    "SECTIONS": "._config",
    "Config": "._config",
    "choices": "._config",
    "coerce": "._config",
    "type_name": "._config",
    "unknown_field_message": "._config",
    "initialize_distributed": "._devices",
    "Logger": "._loggers",
    "TensorBoardLogger": "._loggers",
    "WandbLogger": "._loggers",
    "RunRecord": "._loop",
    "run_experiment": "._loop",
    "Progress": "._progress",
    "SWEEPABLE": "._step",
    "Program": "._step",
    "TrainState": "._step",
    "CHECKPOINT": "._store",
    "Run": "._store",
    "atomic_write_bytes": "._store",
    "is_run": "._store",
    "claim": "._lock",
    "load_checkpoint": "._store",
    "load_run": "._store",
    "metric_files": "._store",
    "read_json": "._store",
    "read_metrics": "._store",
    "write_json": "._store",
    "write_metrics_chunk": "._store",
})
