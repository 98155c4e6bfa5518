"""optax's momentum and adaptive methods under eosflow's names (extra args accepted)."""

import optax

RMSPROP_EPS = 1e-8  # rmsprop's eps (inside the square root), also the runner's flows'


def momentum(lr: float, beta: float = 0.9) -> optax.GradientTransformationExtraArgs:
    """Heavy-ball GD, ``optax.sgd(lr, momentum=beta)``."""
    return optax.with_extra_args_support(optax.sgd(lr, momentum=beta))


def nesterov(lr: float, beta: float = 0.9) -> optax.GradientTransformationExtraArgs:
    """Nesterov momentum, ``optax.sgd(lr, momentum=beta, nesterov=True)``."""
    return optax.with_extra_args_support(optax.sgd(lr, momentum=beta, nesterov=True))


def adam(lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
    """Adam, ``optax.adam``."""
    return optax.with_extra_args_support(optax.adam(lr, b1=beta1, b2=beta2, eps=eps))


def rmsprop(lr: float, decay: float = 0.9, eps: float = RMSPROP_EPS,
            bias_correction: bool = False):
    """RMSProp, ``optax.rmsprop`` (ε inside the square root's sum; by default no bias
    correction, optax's default)."""
    return optax.with_extra_args_support(
        optax.rmsprop(lr, decay=decay, eps=eps, bias_correction=bias_correction))
