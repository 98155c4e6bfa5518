"""Optimizers for the Edge of Stability, as optax transformations."""

from ._aliases import adam as adam
from ._aliases import momentum as momentum
from ._aliases import nesterov as nesterov
from ._aliases import rmsprop as rmsprop
from ._gd import KickState as KickState
from ._gd import gd as gd
from ._gd import normalized_gd as normalized_gd
from ._gd import sqrt_loss_gd as sqrt_loss_gd
from ._methods import CUSTOM as CUSTOM
from ._methods import METHODS as METHODS
from ._methods import Method as Method
from ._methods import custom_method as custom_method
from ._methods import method as method
from ._precond import PRECONDITIONED as PRECONDITIONED
from ._precond import check_preconditioner as check_preconditioner
from ._precond import eos_threshold as eos_threshold
from ._precond import preconditioner_from_state as preconditioner_from_state
from ._switch import SwitchState as SwitchState
from ._switch import switch as switch
