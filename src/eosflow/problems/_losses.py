"""Per-example losses under named conventions.

The sharpness scales with the loss convention, so every convention has a name and the name
is written into each run's metadata. The full-batch loss is always the *mean over examples*
of the per-example loss below.

==================  =====================================  ==============================
name                per-example loss                       used by
==================  =====================================  ==============================
``mse``             ``0.5 * sum_k (f_k - y_k)^2``           Cohen et al. 2021 (the default)
``mse_nohalf``      ``sum_k (f_k - y_k)^2``                 Arora et al. 2022, MNIST code
``mse_mean``        ``mean_k (f_k - y_k)^2``                PyTorch ``nn.MSELoss()``
``cross_entropy``   ``-log softmax(f)_y``                   classification
==================  =====================================  ==============================
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from .._types import Array

LOSSES: dict[str, str] = {
    "mse": "0.5 * sum over outputs of (f - y)^2, mean over examples",
    "mse_nohalf": "sum over outputs of (f - y)^2, mean over examples",
    "mse_mean": "mean over outputs of (f - y)^2, mean over examples",
    "cross_entropy": "-log softmax(f)[label], mean over examples",
}


def _mse(pred: Array, target: Array) -> Array:
    return 0.5 * jnp.sum((pred - target) ** 2, axis=-1)


def _mse_nohalf(pred: Array, target: Array) -> Array:
    return jnp.sum((pred - target) ** 2, axis=-1)


def _mse_mean(pred: Array, target: Array) -> Array:
    return jnp.mean((pred - target) ** 2, axis=-1)


def _cross_entropy(logits: Array, target: Array) -> Array:
    """``target`` one-hot (or soft labels) along the last axis."""
    return -jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1)


_FNS: dict[str, Callable[[Array, Array], Array]] = {
    "mse": _mse,
    "mse_nohalf": _mse_nohalf,
    "mse_mean": _mse_mean,
    "cross_entropy": _cross_entropy,
}


_SQUARED: dict[str, Callable[[int], float]] = {
    # per-example loss = c * sum_k (f_k - y_k)^2, c as a function of the number of outputs
    "mse": lambda k: 0.5,
    "mse_nohalf": lambda k: 1.0,
    "mse_mean": lambda k: 1.0 / k,
}


def squared_error_weight(name: str, num_outputs: int) -> float | None:
    """``c`` with per-example loss ``c * sum_k (f_k - y_k)^2`` for the MSE conventions, so
    that a mean over n examples is ``0.5 * |r|^2`` with ``r = sqrt(2 c / n) (f - y)``;
    ``None`` for losses without that structure (cross-entropy)."""
    per_example_loss(name)
    fn = _SQUARED.get(name)
    return None if fn is None else fn(num_outputs)


def per_example_loss(name: str) -> Callable[[Array, Array], Array]:
    """The per-example loss ``(pred, target) -> (N,)`` of convention ``name`` (see module doc)."""
    try:
        return _FNS[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(_FNS)}.") from None
