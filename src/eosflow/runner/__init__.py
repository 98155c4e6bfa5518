"""The runner: a configuration, the compiled training loop, and the run directory it owns.

Only this subpackage touches run directories, devices and the clock.
"""

from .._errors import ConfigError as ConfigError
from .._errors import RunDirError as RunDirError
from ._build import build_optimizer as build_optimizer
from ._build import initial_params as initial_params
from ._config import FIELD_DOCS as FIELD_DOCS
from ._config import FIELDS as FIELDS
from ._config import SECTIONS as SECTIONS
from ._config import Config as Config
from ._config import choices as choices
from ._config import coerce as coerce
from ._config import type_name as type_name
from ._config import unknown_field_message as unknown_field_message
from ._devices import initialize_distributed as initialize_distributed
from ._loggers import Logger as Logger
from ._loggers import TensorBoardLogger as TensorBoardLogger
from ._loggers import WandbLogger as WandbLogger
from ._loop import RunRecord as RunRecord
from ._loop import run_experiment as run_experiment
from ._progress import Progress as Progress
from ._step import SWEEPABLE as SWEEPABLE
from ._step import Program as Program
from ._step import TrainState as TrainState
from ._store import CHECKPOINT as CHECKPOINT
from ._store import Run as Run
from ._store import atomic_write_bytes as atomic_write_bytes
from ._store import is_run as is_run
from ._store import load_checkpoint as load_checkpoint
from ._store import load_run as load_run
from ._store import metric_files as metric_files
from ._store import read_json as read_json
from ._store import read_metrics as read_metrics
from ._store import write_json as write_json
from ._store import write_metrics_chunk as write_metrics_chunk
