"""Switch from one optimizer to another after a fixed number of steps."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._errors import check_int


class SwitchState(NamedTuple):
    count: jax.Array
    first: optax.OptState
    then: optax.OptState


def switch(
    first: optax.GradientTransformation, then: optax.GradientTransformation, at: int
) -> optax.GradientTransformationExtraArgs:
    """Use ``first`` for the first ``at`` steps and ``then`` afterwards (both keep their state).

    This is the protocol of the paper's MNIST experiment: plain GD first, then normalized GD.

    Example:
        >>> import jax.numpy as jnp
        >>> from eosflow.optim import gd, normalized_gd
        >>> opt = switch(gd(0.1), normalized_gd(0.1), at=1)
        >>> s = opt.init(jnp.zeros(2))
        >>> u, s = opt.update(jnp.array([3.0, 4.0]), s); [round(x, 6) for x in u.tolist()]
        [-0.3, -0.4]
        >>> u, s = opt.update(jnp.array([3.0, 4.0]), s); [round(x, 3) for x in u.tolist()]
        [-0.06, -0.08]
    """
    at = check_int("at", at, 0)
    first = optax.with_extra_args_support(first)
    then = optax.with_extra_args_support(then)

    def init(params):
        return SwitchState(jnp.zeros((), jnp.int32), first.init(params), then.init(params))

    def update(updates, state, params=None, **extra):
        def use_first(s):
            u, new = first.update(updates, s.first, params, **extra)
            return u, s._replace(first=new)

        def use_then(s):
            u, new = then.update(updates, s.then, params, **extra)
            return u, s._replace(then=new)

        u, state = jax.lax.cond(state.count < at, use_first, use_then, state)
        return u, state._replace(count=state.count + 1)

    return optax.GradientTransformationExtraArgs(init, update)
