"""Problems: losses over PyTrees, the data they sum over, models, and toy problems."""

from ._data import Dataset as Dataset
from ._data import load_digits as load_digits
from ._losses import LOSSES as LOSSES
from ._losses import per_example_loss as per_example_loss
from ._models import MLP as MLP
from ._problem import Problem as Problem
from ._problem import chunk as chunk
from ._problem import supervised_problem as supervised_problem
