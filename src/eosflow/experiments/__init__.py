"""Experiments: configurations, the runner, run directories, CLI, plots and reports."""

from ..runner import Config as Config
from ..runner import ConfigError as ConfigError
from ..runner import Run as Run
from ..runner import RunDirError as RunDirError
from ..runner import RunRecord as RunRecord
from ..runner import load_run as load_run
from ..runner import run_experiment as run_experiment
from ._cli import main as main
from ._cli import parse as parse
from ._commands import format_value as format_value
from ._presets import DEFAULT as DEFAULT
from ._presets import PRESETS as PRESETS
from ._presets import Preset as Preset
from ._presets import preset_config as preset_config
from ._presets import preset_values as preset_values
from ._verify import Check as Check
from ._verify import claim_quadratic as claim_quadratic
from ._verify import fit_slope as fit_slope
from ._verify import run_verify as run_verify
from ._verify import tracking as tracking
from ._verify_central import adaptive_eos_rows as adaptive_eos_rows
from ._verify_central import central_flow_rows as central_flow_rows
