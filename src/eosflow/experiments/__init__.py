"""Experiments: configurations, the runner, run directories, CLI, plots and reports."""

from ._config import Config as Config
from ._config import ConfigError as ConfigError
from ._rundir import Run as Run
from ._rundir import RunDirError as RunDirError
from ._rundir import load_run as load_run
from ._runner import RunRecord as RunRecord
from ._runner import run_experiment as run_experiment
