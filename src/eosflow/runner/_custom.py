"""An optax transformation that eosflow did not build, with the EoS threshold its caller
declares: ``run_experiment(config, out, optimizer=tx, edge=...)``.

The command line takes only the named records of :data:`eosflow.optim.METHODS`; from Python
any :class:`optax.GradientTransformation` can be stepped, provided the caller says where its
edge is. The run's ``config.json`` then says ``"optimizer": "custom"`` and carries a
``custom_optimizer`` entry (the transformation's repr, the types in its state, the edge and
where it came from), so that nothing in the run directory claims a named optimizer ran.
"""

import math
import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import optax

from ..optim import CUSTOM, Method, custom_method
from ._config import Config, ConfigError

Edge = float | str | Callable[[float, float], float]

# the key of config.json (and metadata.json) that describes a custom optimizer
CUSTOM_KEY = "custom_optimizer"


@dataclass(frozen=True)
class CustomOptimizer:
    """A caller's optax transformation with its record.

    Attributes:
        transform: the transformation, stepped as is (``update(grad, state, params,
            value=loss)`` when it takes extra arguments).
        method: its :class:`~eosflow.optim.Method` record (``optim.custom_method``).
        edge: the threshold at the run's ``lr`` and ``momentum`` (λ1 units), or None when the
            record named by ``like`` has no fixed edge (normalized GD, GD on √L).
        edge_from: ``"number"``, ``"callable"`` or ``"record"``.
        like: the record the threshold was taken from (``edge_from == "record"``), or None.
            With ``"rmsprop"`` P is read from the state with the config's ``decay`` and
            ``bias_correction``: they must be the transformation's.
    """

    transform: optax.GradientTransformation
    method: Method
    edge: float | None
    edge_from: str
    like: str | None

    def describe(self, config: Config, params: Any) -> dict[str, Any]:
        """The JSON entry recorded in ``config.json`` and ``metadata.json``."""
        state = jax.eval_shape(self.transform.init, params)
        return {
            "repr": _repr(self.transform),
            "state": _state_types(state),
            "edge": self.edge,
            "edge_from": self.edge_from,
            "like": self.like,
            # the config's own optimizer field (ignored for the step), so it reads back
            "config_optimizer": config.optimizer,
        }


def custom_optimizer(optimizer: Any, edge: Edge | None, config: Config,
                     sweep: dict | None) -> CustomOptimizer | None:
    """Check ``run_experiment``'s ``optimizer`` and ``edge`` arguments (None: the config's
    named optimizer).

    ``edge`` is a number (λ1 units), a callable ``edge(lr, momentum)`` evaluated once at the
    config's ``lr`` and ``momentum``, or the name of a record whose edge, quantity and
    stableness are taken (evaluated at the config's ``lr``/``momentum``: set them to the
    transformation's own).

    Raises:
        TypeError: ``optimizer`` is not an optax transformation (a name belongs in the
            config); ``edge`` of another kind.
        ValueError: ``edge`` missing, not positive and finite, or given without
            ``optimizer``; an unknown record name.
        ConfigError: a sweep, a predicted flow (``phi_every``, ``reproject_steps``) or
            ``start_on_gamma`` with a custom optimizer.
    """
    if optimizer is None:
        if edge is not None:
            raise ValueError("edge: only with optimizer=tx (a named optimizer's edge comes "
                             "from its record)")
        return None
    if isinstance(optimizer, str):
        raise TypeError(f"optimizer: give an optax transformation; a named optimizer goes in "
                        f"the config (config.replace(optimizer={optimizer!r}))")
    if not (callable(getattr(optimizer, "init", None))
            and callable(getattr(optimizer, "update", None))):
        raise TypeError(f"optimizer: expected an optax.GradientTransformation (init, update), "
                        f"got {type(optimizer).__name__}")
    if edge is None:
        raise ValueError("edge: give the custom optimizer's EoS threshold: a number in λ1 "
                         "units (edge=2/lr for a GD step lr), a callable edge(lr, momentum), or "
                         "a record to take it from (edge='gd')")
    if sweep:
        raise ConfigError("sweep: not available with a custom optimizer (one fixed "
                          "transformation cannot be vmapped over hyperparameters); call "
                          "run_experiment once per point")
    for name in ("phi_every", "reproject_steps"):
        if getattr(config, name) is not None:
            raise ConfigError(f"{name}: the predicted flow needs a named optimizer's record; "
                              "set it to None with a custom optimizer")
    if config.start_on_gamma:
        raise ConfigError("start_on_gamma: the two-step cycle's width needs a named "
                          "optimizer's record; set it to False with a custom optimizer")
    if isinstance(edge, str):
        m = custom_method(like=edge)
        value = None if m.edge is None else float(m.edge(config.lr, config.momentum))
        return CustomOptimizer(optimizer, m, value, "record", edge)
    if callable(edge):
        value, source = edge(config.lr, config.momentum), "callable"
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"edge: edge(lr, momentum) must return a number, got "
                            f"{type(value).__name__}") from None
    elif isinstance(edge, bool) or not isinstance(edge, numbers.Real):
        raise TypeError(f"edge: must be a number, a callable edge(lr, momentum) or a record "
                        f"name, got {type(edge).__name__}")
    else:
        value, source = float(edge), "number"
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"edge: must be a positive finite number, got {value!r}")
    return CustomOptimizer(optimizer, custom_method(edge=value), value, source, None)


def check_resumed(saved: dict[str, Any], custom: CustomOptimizer | None, config: Config,
                  params: Any, where: str) -> None:
    """A resumed run must get the optimizer it was started with (``saved`` is the raw
    ``config.json``).

    Raises:
        ConfigError: naming ``optimizer`` (a custom run resumed without its transformation, or
            the reverse, or another transformation) or ``edge`` (another threshold).
    """
    info = saved.get(CUSTOM_KEY) if saved.get("optimizer") == CUSTOM else None
    if info is not None and custom is None:
        raise ConfigError(
            f"optimizer: {where} was run with a custom optax transformation "
            f"({info.get('repr', '?')}) that only Python can pass again: run_experiment("
            f"config, {where!r}, resume=True, optimizer=tx, edge=...)")
    if info is None and custom is not None:
        raise ConfigError(f"optimizer: {where} was run with the named optimizer "
                          f"{saved.get('optimizer')!r}; resume it without optimizer=")
    if info is None:
        return
    now = custom.describe(config, params)
    if now["state"] != info.get("state"):
        raise ConfigError(f"optimizer: its state ({now['state']}) differs from the run being "
                          f"resumed ({info.get('state')})")
    for key in ("edge", "edge_from", "like"):
        if now[key] != info.get(key):
            raise ConfigError(f"edge: {now[key]!r} differs from the run being resumed "
                              f"({key} {info.get(key)!r})")


def saved_config_dict(raw: dict[str, Any]) -> dict[str, Any]:
    """A raw ``config.json`` as :meth:`Config.from_dict` reads it: a custom run's entry
    removed and its ``optimizer`` field restored to what the caller's config said."""
    if CUSTOM_KEY not in raw and raw.get("optimizer") != CUSTOM:
        return raw
    out = {k: v for k, v in raw.items() if k != CUSTOM_KEY}
    info = raw.get(CUSTOM_KEY) or {}
    out["optimizer"] = info.get("config_optimizer", "gd")
    return out


def _repr(tx: Any) -> str:
    """``repr(tx)`` without memory addresses (they change from one process to the next)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(tx))


def _state_types(state: Any) -> str:
    """The optax state types in ``state``, in order (``"ScaleByAdamState, EmptyState"``)."""
    nodes = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, tuple)
                            and hasattr(x, "_fields"))
    return ", ".join(type(n).__name__ for n in nodes if hasattr(n, "_fields")) or "none"
