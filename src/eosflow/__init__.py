"""eosflow: gradient descent at the Edge of Stability, measured and predicted."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("eosflow")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

from . import curvature as curvature
from . import flows as flows
from . import optim as optim
from . import problems as problems
from . import runner as runner
from ._errors import ConfigError as ConfigError
from ._errors import EosflowError as EosflowError
from ._errors import RunDirError as RunDirError
from .runner import Config as Config
from .runner import load_run as load_run
from .runner import run_experiment as run_experiment
