"""Optimizers for the Edge of Stability, as optax transformations."""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "adam": "._aliases",
    "momentum": "._aliases",
    "nesterov": "._aliases",
    "rmsprop": "._aliases",
    "RMSPROP_EPS": "._aliases",
    "BELOW_LOSS_MIN": "._gd",
    "KickState": "._gd",
    "gd": "._gd",
    "normalized_gd": "._gd",
    "sqrt_loss_gd": "._gd",
    "CUSTOM": "._methods",
    "METHODS": "._methods",
    "Method": "._methods",
    "custom_method": "._methods",
    "method": "._methods",
    "PRECONDITIONED": "._precond",
    "check_preconditioner": "._precond",
    "eos_threshold": "._precond",
    "preconditioner_from_state": "._precond",
    "SwitchState": "._switch",
    "switch": "._switch",
})
