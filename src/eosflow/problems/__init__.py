"""Problems: losses over PyTrees, the data they sum over, models, and toy problems."""

from ._data import Dataset as Dataset
from ._data import load_digits as load_digits
from ._losses import LOSSES as LOSSES
from ._losses import per_example_loss as per_example_loss
from ._models import MLP as MLP
from ._problem import Problem as Problem
from ._problem import chunk as chunk
from ._problem import supervised_problem as supervised_problem
from ._toys import TOYS as TOYS
from ._toys import Toy as Toy
from ._toys import matrix_factorization as matrix_factorization
from ._toys import product as product
from ._toys import quadratic as quadratic
from ._toys import toy_a as toy_a
from ._toys import toy_b as toy_b
from ._toys import toy_c as toy_c
