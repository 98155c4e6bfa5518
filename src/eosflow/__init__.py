"""eosflow: gradient descent at the Edge of Stability, measured and predicted."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("eosflow")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

from ._errors import ConfigError as ConfigError
from ._errors import EosflowError as EosflowError
from ._errors import RunDirError as RunDirError
from ._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "curvature": ".",
    "flows": ".",
    "optim": ".",
    "problems": ".",
    "runner": ".",
    "Config": ".runner",
    "load_run": ".runner",
    "run_experiment": ".runner",
})
