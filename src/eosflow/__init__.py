"""eosflow: gradient descent at the Edge of Stability, measured and predicted."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("eosflow")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

from . import curvature as curvature
from . import optim as optim
from . import problems as problems
from .experiments import Config as Config
from .experiments import load_run as load_run
from .experiments import run_experiment as run_experiment
