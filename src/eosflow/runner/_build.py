"""From a :class:`Config` to the objects the runner steps: the problem and the optimizer."""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from .. import optim
from ..problems import Problem, build_problem
from ._config import Config


def build_optimizer(config: Config, lr: Any, *, momentum: Any = None,
                    loss_min: Any = None,
                    main: optax.GradientTransformation | None = None,
                    ) -> optax.GradientTransformationExtraArgs:
    """The configured optimizer with learning rate ``lr`` (a float, or a traced array in
    sweeps; ``momentum`` and ``loss_min`` likewise override the config's), preceded by
    ``warmup_steps`` of plain GD (the paper's MNIST protocol) or Adam (``warmup_optimizer``,
    a faster way close to the minimizers) at ``warmup_lr`` when asked. ``main``, a caller's
    transformation, replaces the configured one (the warm-up still comes first)."""
    beta = config.momentum if momentum is None else momentum
    lmin = config.loss_min if loss_min is None else loss_min
    lmin = 0.0 if lmin is None else lmin
    if main is None:
        # no run-time check inside the step (a host callback keeps the program out of the
        # persistent cache): the step stops a run whose loss falls below L* (reason 4)
        main = optim.method(config.optimizer).build(lr, momentum=beta, loss_min=lmin,
                                                    decay=config.decay,
                                                    bias_correction=config.bias_correction,
                                                    seed=config.seed, check=False)
    else:
        main = optax.with_extra_args_support(main)
    if config.warmup_steps:
        lr0 = config.warmup_lr if config.warmup_lr is not None else lr
        first = optim.method(config.warmup_optimizer).build(lr0, seed=config.seed)
        return optim.switch(first, main, config.warmup_steps)
    return main


def rmsprop_options(config: Config) -> dict[str, Any]:
    """RMSProp's second-moment options as the run configures them (``decay``,
    ``bias_correction``, and ``eps``, :data:`eosflow.optim.RMSPROP_EPS`): what reading P from
    its state (:func:`eosflow.optim.preconditioner_from_state`) and its flows
    (:func:`eosflow.flows.central_flow`) need to agree with the optimizer."""
    return {"decay": float(config.decay), "eps": optim.RMSPROP_EPS,
            "bias_correction": bool(config.bias_correction)}


def initial_params(config: Config, problem: Problem, seeds: list[int] | None = None):
    """``problem.params``, or one copy per seed (stacked) for a seed sweep."""
    if seeds is None:
        return problem.params
    per_seed = [build_problem(config.replace(seed=s)).params for s in seeds]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *per_seed)
