"""From a :class:`Config` to the objects the runner steps: the problem and the optimizer."""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from .. import optim
from ..problems import TOYS, Problem
from ._config import Config, ConfigError


def build_problem(config: Config) -> Problem:
    """The :class:`~eosflow.problems.Problem` a configuration names (params from its seed)."""
    dtype = jnp.dtype(config.dtype)
    if config.is_toy:
        toy = TOYS[config.problem](dtype=dtype)
        x0 = None
        if config.x0 is not None:
            if len(config.x0) != toy.x0.size:
                raise ConfigError(
                    f"x0: {config.problem} needs {toy.x0.size} coordinates, got {len(config.x0)}"
                )
            x0 = jnp.asarray(config.x0, dtype)
        return toy.problem(x0)
    from ._nets import build_network_problem

    return build_network_problem(config)


def build_optimizer(config: Config, lr: Any, *, momentum: Any = None,
                    loss_min: Any = None) -> optax.GradientTransformationExtraArgs:
    """The configured optimizer with learning rate ``lr`` (a float, or a traced array in
    sweeps; ``momentum`` and ``loss_min`` likewise override the config's), preceded by
    ``warmup_steps`` of plain GD (the paper's MNIST protocol) or Adam (``warmup_optimizer``,
    a faster way close to the minimizers) at ``warmup_lr`` when asked."""
    name = config.optimizer
    beta = config.momentum if momentum is None else momentum
    lmin = config.loss_min if loss_min is None else loss_min
    if name == "gd":
        main = optim.gd(lr)
    elif name == "normalized_gd":
        main = optim.normalized_gd(lr, seed=config.seed)
    elif name == "sqrt_loss_gd":
        main = optim.sqrt_loss_gd(lr, lmin, seed=config.seed)
    elif name in ("momentum", "nesterov"):
        main = optim.OPTIMIZERS[name](lr, beta)
    elif name == "adam":
        main = optim.adam(lr)
    else:  # pragma: no cover - Config validates the name
        raise ConfigError(f"optimizer: unknown value {name!r}")
    if config.warmup_steps:
        lr0 = config.warmup_lr if config.warmup_lr is not None else lr
        first = optim.adam(lr0) if config.warmup_optimizer == "adam" else optim.gd(lr0)
        return optim.switch(first, main, config.warmup_steps)
    return main


def initial_params(config: Config, problem: Problem, seeds: list[int] | None = None):
    """``problem.params``, or one copy per seed (stacked) for a seed sweep."""
    if seeds is None:
        return problem.params
    per_seed = [build_problem(config.replace(seed=s)).params for s in seeds]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *per_seed)
