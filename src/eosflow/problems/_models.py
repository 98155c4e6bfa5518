"""Equinox models for the Edge-of-Stability experiments (no BatchNorm anywhere)."""

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from .._types import Array, PRNGKeyArray

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "softplus": jax.nn.softplus,
    "identity": lambda x: x,
}


def activation(name: str) -> Callable[[Array], Array]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}.") from None


class MLP(eqx.Module):
    """Fully connected network ``in -> widths... -> out``; acts on one example (vmap for many).

    Initialisation is equinox's (PyTorch's) uniform $\\pm 1/\\sqrt{\\text{fan in}}$.
    """

    layers: list[eqx.nn.Linear]
    act: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int,
        widths: Sequence[int],
        act: str = "tanh",
        *,
        key: PRNGKeyArray,
        dtype=jnp.float32,
    ):
        sizes = [in_size, *widths, out_size]
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = [
            eqx.nn.Linear(a, b, key=k, dtype=dtype) for a, b, k in zip(sizes[:-1], sizes[1:], keys)
        ]
        self.act = activation(act)

    def __call__(self, x: Array) -> Array:
        x = jnp.ravel(x)
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return self.layers[-1](x)
