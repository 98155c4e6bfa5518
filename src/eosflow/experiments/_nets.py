"""Neural-network problems from a configuration: model, dataset, loss convention, chunking."""

import jax
import jax.numpy as jnp

from ..problems import MLP, Problem, load_digits, supervised_problem
from ._config import Config, ConfigError


def load_dataset(config: Config):
    """The configured dataset (host arrays), subset and standardised as configured."""
    n, subset, seed = config.num_examples, config.subset, config.seed
    if config.dataset == "digits":
        return load_digits(n, subset=subset, seed=seed)
    raise ConfigError(f"dataset: {config.dataset!r} is not available in this build")


def build_model(config: Config, in_shape: tuple[int, ...], num_outputs: int, key):
    dtype = jnp.dtype(config.dtype)
    if config.problem == "mlp":
        size = 1
        for s in in_shape:
            size *= s
        return MLP(size, num_outputs, config.widths, config.activation, key=key, dtype=dtype)
    raise ConfigError(f"problem: {config.problem!r} is not available in this build")


def build_network_problem(config: Config) -> Problem:
    data = load_dataset(config)
    key = jax.random.key(config.seed)
    model = build_model(config, tuple(data.x.shape[1:]), int(data.y.shape[1]), key)
    info = {"model": config.problem, "init_seed": config.seed, "init": "equinox default (uniform +-1/sqrt(fan_in))"}
    return supervised_problem(
        model, data, loss=config.loss, chunk_size=config.chunk_size,
        dtype=jnp.dtype(config.dtype), info=info,
    )
