"""optax's momentum methods under eosflow's names, and a registry of optimizers by name."""

from collections.abc import Callable

import optax

from ._gd import gd, normalized_gd, sqrt_loss_gd


def momentum(lr: float, beta: float = 0.9) -> optax.GradientTransformationExtraArgs:
    """Heavy-ball GD, ``optax.sgd(lr, momentum=beta)``."""
    return optax.with_extra_args_support(optax.sgd(lr, momentum=beta))


def nesterov(lr: float, beta: float = 0.9) -> optax.GradientTransformationExtraArgs:
    """Nesterov momentum, ``optax.sgd(lr, momentum=beta, nesterov=True)``."""
    return optax.with_extra_args_support(optax.sgd(lr, momentum=beta, nesterov=True))


def adam(lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
    """Adam, ``optax.adam``."""
    return optax.with_extra_args_support(optax.adam(lr, b1=beta1, b2=beta2, eps=eps))


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformationExtraArgs]] = {
    "gd": gd,
    "normalized_gd": normalized_gd,
    "sqrt_loss_gd": sqrt_loss_gd,
    "momentum": momentum,
    "nesterov": nesterov,
    "adam": adam,
}
