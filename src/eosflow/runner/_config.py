"""The experiment configuration: one frozen dataclass, validated once, JSON round-trippable."""

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from .._errors import ConfigError
from ..optim import METHODS, method
from ..problems import ACTIVATIONS, ProblemSpec

PROBLEMS = ("mlp", "cnn", "vgg11", "resnet", "toy_a", "toy_b", "toy_c", "quadratic",
            "product", "matrix_factorization")
DATASETS = ("digits", "cifar10", "mnist", "teacher_student", "gaussian_clusters", "none")
OPTIMIZER_NAMES = tuple(METHODS)
WARMUP_OPTIMIZERS = tuple(name for name, m in METHODS.items() if m.warmup)
LOSS_NAMES = ("mse", "mse_nohalf", "mse_mean", "cross_entropy")
DTYPES = ("float32", "float64")
TOYS = ("toy_a", "toy_b", "toy_c", "quadratic", "product", "matrix_factorization")


@dataclass(frozen=True)
class Config:
    """Everything that determines a run. Unset optional fields mean "off" or "the default".

    Fields are grouped: the problem (model and data), the optimizer, the run's length and
    records, and the curvature probe. ``eosflow run PRESET --field value`` overrides any of
    them; ``eosflow list`` shows the presets.
    """

    name: str = "digits-gd"
    # problem ---------------------------------------------------------------------------
    problem: str = "mlp"
    dataset: str = "digits"
    data_dir: str | None = None
    num_examples: int | None = None
    subset: str = "first"
    num_classes: int | None = None
    widths: tuple[int, ...] = (200, 200)
    activation: str = "tanh"
    freeze_last_layer: bool = False
    loss: str = "mse"
    chunk_size: int | None = None
    hessian_examples: int | None = None
    test_examples: int | None = None
    x0: tuple[float, ...] | None = None
    # optimizer -------------------------------------------------------------------------
    optimizer: str = "gd"
    lr: float = 0.1
    momentum: float = 0.9
    loss_min: float | None = None
    warmup_steps: int = 0
    warmup_lr: float | None = None
    warmup_optimizer: str = "gd"
    batch_size: int | None = None
    batch_replace: bool = False
    # run ---------------------------------------------------------------------------------
    steps: int = 1000
    seed: int = 0
    dtype: str = "float32"
    chunk_steps: int | None = None
    checkpoint_every: int | None = None
    loss_goal: float | None = None
    divergence_factor: float | None = 1e3
    eval_every: int | None = 10
    devices: int | None = None
    # curvature ---------------------------------------------------------------------------
    eig_every: int | None = 1
    num_eigs: int = 1
    eig_tol: float = 1e-3
    eig_block: int | None = None
    eig_criterion: str = "residual"
    eig_max_matvecs: int = 200
    track_alignment: bool = True
    batch_sharpness_batches: int = 16
    density_at: tuple[int, ...] = ()
    phi_every: int | None = None
    reproject_steps: int | None = None

    def __post_init__(self):
        _check(self)

    # ---------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> "Config":
        """A copy with ``changes`` applied (and validated)."""
        unknown = [k for k in changes if k not in FIELDS]
        if unknown:
            raise ConfigError(unknown_field_message(unknown[0]))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, strict: bool = True) -> "Config":
        """Build from a dict (a saved ``config.json``); unknown keys are errors, and so are
        missing ones unless ``strict=False``, which gives them their defaults (a run written
        before the field existed ran with the default)."""
        unknown = [k for k in data if k not in FIELDS]
        if unknown:
            raise ConfigError(unknown_field_message(unknown[0]))
        if strict:
            missing = [k for k in FIELDS if k not in data]
            if missing:
                raise ConfigError(f"{missing[0]}: missing from the configuration")
        return cls(**{k: coerce(k, v) for k, v in data.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @property
    def is_toy(self) -> bool:
        return self.problem in TOYS

    @property
    def problem_spec(self) -> ProblemSpec:
        """The problem half of the configuration (what :func:`eosflow.problems.build_problem`
        needs)."""
        return ProblemSpec(**{f.name: getattr(self, f.name)
                              for f in dataclasses.fields(ProblemSpec)})


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Config)}
_HINTS = typing.get_type_hints(Config)


def unknown_field_message(name: str) -> str:
    close = difflib.get_close_matches(name, list(FIELDS), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else f"; fields are: {', '.join(FIELDS)}"
    return f"{name}: unknown field{hint}"


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


def _base_types(hint) -> tuple[type, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(t for t in typing.get_args(hint) if t is not type(None))
    return (hint,)


def coerce(name: str, value: Any) -> Any:
    """Turn ``value`` (a string from the command line, or a JSON value) into field ``name``'s
    type; raise :class:`ConfigError` naming the field when it cannot."""
    if name not in FIELDS:
        raise ConfigError(unknown_field_message(name))
    hint = _HINTS[name]
    optional = type(None) in typing.get_args(hint)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{name}: cannot be None")
    (base,) = _base_types(hint)[:1]
    try:
        if typing.get_origin(base) is tuple:
            (item,) = [a for a in typing.get_args(base) if a is not Ellipsis]
            if isinstance(value, str):
                parts = [p for p in value.replace(",", " ").replace("x", " ").split() if p]
            else:
                parts = list(value)
            return tuple(_scalar(item, p) for p in parts)
        return _scalar(base, value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name}: expected {_type_name(hint)}, got {value!r}") from err


def _scalar(t: type, value: Any):
    if t is bool:
        if isinstance(value, bool):
            return value
        s = str(value).lower()
        if s in ("true", "1", "yes", "on"):
            return True
        if s in ("false", "0", "no", "off"):
            return False
        raise ValueError(value)
    if t is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        if isinstance(value, str):
            f = float(value)
            if not f.is_integer():
                raise ValueError(value)
            return int(f)
        return int(value)
    if t is float:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, str) and "/" in value:  # "2/30" is a natural way to write lr
            a, b = value.split("/")
            return float(a) / float(b)
        return float(value)
    if t is str:
        if not isinstance(value, str):
            raise ValueError(value)
        return value
    raise TypeError(t)


def _type_name(hint) -> str:
    names = []
    for t in _base_types(hint):
        if typing.get_origin(t) is tuple:
            names.append(f"a list of {typing.get_args(t)[0].__name__}")
        else:
            names.append(t.__name__)
    if type(None) in typing.get_args(hint):
        names.append("none")
    return " or ".join(names)


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1, cutoff=0.4)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"{name}: unknown value {value!r}{hint} (choose from {', '.join(choices)})"
        )


def _positive(c: Config, name: str, *, allow_none: bool = False, integer: bool = False) -> None:
    v = getattr(c, name)
    if v is None:
        if allow_none:
            return
        raise ConfigError(f"{name}: required")
    if integer and (isinstance(v, bool) or not isinstance(v, int)):
        raise ConfigError(f"{name}: expected an int, got {v!r}")
    number = isinstance(v, int | float) and not isinstance(v, bool)
    if not number or not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{name}: must be positive, got {v!r}")


def _check(c: Config) -> None:
    for name, hint in _HINTS.items():  # types first, so later checks can trust them
        v = getattr(c, name)
        if v is None and type(None) in typing.get_args(hint):
            continue
        coerced = coerce(name, v)
        if coerced != v and not (isinstance(v, list) and tuple(v) == coerced):
            raise ConfigError(f"{name}: expected {_type_name(hint)}, got {v!r}")
        if isinstance(v, list):
            object.__setattr__(c, name, tuple(v))
    if not c.name or "/" in c.name or c.name.startswith("."):
        raise ConfigError(f"name: must be a plain directory name, got {c.name!r}")
    _choice("problem", c.problem, PROBLEMS)
    _choice("dataset", c.dataset, DATASETS)
    _choice("optimizer", c.optimizer, OPTIMIZER_NAMES)
    _choice("warmup_optimizer", c.warmup_optimizer, WARMUP_OPTIMIZERS)
    _choice("loss", c.loss, LOSS_NAMES)
    _choice("dtype", c.dtype, DTYPES)
    _choice("subset", c.subset, ("first", "stratified"))
    _choice("eig_criterion", c.eig_criterion, ("residual", "gap"))
    _choice("activation", c.activation, tuple(ACTIVATIONS))
    _positive(c, "lr")
    for name in ("steps", "num_eigs", "eig_max_matvecs"):
        _positive(c, name, integer=True)
    for name in ("num_examples", "chunk_size", "hessian_examples", "chunk_steps",
                 "checkpoint_every", "eval_every", "eig_every", "eig_block", "phi_every",
                 "reproject_steps", "devices", "num_classes", "batch_size",
                 "test_examples"):
        _positive(c, name, allow_none=True, integer=True)
    _positive(c, "warmup_lr", allow_none=True)
    _positive(c, "divergence_factor", allow_none=True)
    if not 0 < c.eig_tol < 1:
        raise ConfigError(f"eig_tol: must be in (0, 1), got {c.eig_tol!r}")
    if not 0 <= c.momentum < 1:
        raise ConfigError(f"momentum: must be in [0, 1), got {c.momentum!r}")
    if c.warmup_steps < 0:
        raise ConfigError(f"warmup_steps: must be >= 0, got {c.warmup_steps!r}")
    if c.warmup_steps >= c.steps:
        raise ConfigError(f"warmup_steps: must be below steps = {c.steps}, got {c.warmup_steps}")
    if c.reproject_steps is not None and method(c.optimizer).flow_constant is None:
        flows = [n for n, m in METHODS.items() if m.flow_constant is not None]
        raise ConfigError(f"reproject_steps: the re-projection flow predicts {' and '.join(flows)}"
                          f" runs, not {c.optimizer!r}")
    if c.reproject_steps is not None and c.phi_every is not None:
        raise ConfigError("reproject_steps: give it or phi_every (the limiting flow from "
                          "Phi(x_0)), not both")
    _positive(c, "batch_sharpness_batches", integer=True)
    if c.batch_size is not None and c.problem in TOYS:
        raise ConfigError(f"batch_size: toy problem '{c.problem}' has no examples to sample")
    if c.batch_size is not None and c.devices is not None:
        raise ConfigError("batch_size: mini-batch runs are single-device (drop devices)")
    if c.eig_block is not None and c.eig_block < c.num_eigs:
        raise ConfigError(f"eig_block: must be >= num_eigs = {c.num_eigs}, got {c.eig_block}")
    if any(w <= 0 for w in c.widths):
        raise ConfigError(f"widths: must be positive, got {list(c.widths)}")
    if any(s < 0 or s >= c.steps for s in c.density_at):
        raise ConfigError(f"density_at: steps must lie in [0, {c.steps}), got {list(c.density_at)}")
    if c.dataset in ("cifar10", "mnist") and c.problem not in TOYS and not c.data_dir:
        raise ConfigError(
            f"data_dir: required for dataset '{c.dataset}' (the folder with its files)"
        )
    if c.problem in TOYS and c.dataset not in ("none", "digits"):
        raise ConfigError(f"dataset: toy problem '{c.problem}' takes no dataset, got {c.dataset!r}")
    if "loss_min" in method(c.optimizer).hyper and c.loss_goal is not None and (
            c.loss_min is not None and c.loss_goal < c.loss_min):
        raise ConfigError(f"loss_goal: below loss_min = {c.loss_min}, got {c.loss_goal}")
    if c.chunk_steps is not None and c.checkpoint_every is not None and (
        c.checkpoint_every % c.chunk_steps
    ):
        raise ConfigError(
            f"checkpoint_every: must be a multiple of chunk_steps = {c.chunk_steps}, "
            f"got {c.checkpoint_every}"
        )
