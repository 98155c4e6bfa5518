"""The experiment configuration: one frozen dataclass, documented field by field, validated
once, JSON round-trippable.

Every field carries a one-line docstring under it (what ``tyro`` and ``eosflow list --fields``
show) and the fields with a fixed set of values are ``Literal`` types built from the tuples
below, so each set of names is spelled once. The fields stay flat: their names are the
command-line flags (``--lr``, ``--eig_every``) and the keys of every ``config.json`` written so
far; :data:`SECTIONS` groups them (problem, optimizer, run, curvature) for help and listings.
"""

import ast
import dataclasses
import difflib
import inspect
import itertools
import json
import math
import operator
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..problems import ProblemSpec

from .._errors import ConfigError
from ..optim import METHODS, method

PROBLEMS = ("mlp", "cnn", "vgg11", "resnet", "toy_a", "toy_b", "toy_c", "quadratic",
            "product", "matrix_factorization")
TOYS = ("toy_a", "toy_b", "toy_c", "quadratic", "product", "matrix_factorization")
DATASETS = ("digits", "cifar10", "mnist", "teacher_student", "gaussian_clusters", "none")
OPTIMIZER_NAMES = tuple(METHODS)
WARMUP_OPTIMIZERS = tuple(name for name, m in METHODS.items() if m.warmup)
# the optimizers with a limiting flow on Γ (normalized GD, GD on sqrt L)
FLOW_OPTIMIZERS = tuple(name for name, m in METHODS.items() if m.flow_constant is not None)
LOSS_NAMES = ("mse", "mse_nohalf", "mse_mean", "cross_entropy")
DTYPES = ("float32", "float64")
MATMUL_PRECISIONS = ("highest", "high", "default")
SUBSETS = ("first", "stratified")
EIG_CRITERIA = ("residual", "gap")
PROCESSES = ("discrete", "midpoint", "stable", "central")
# the keys of eosflow.problems.ACTIVATIONS (spelled here so that the configuration needs no
# JAX import; a test keeps the two equal)
ACTIVATION_NAMES = ("tanh", "relu", "gelu", "elu", "softplus", "identity")

# Literal[tuple] is Literal[*tuple]: the choices above are the only spelling of the names.
ProblemName = Literal[PROBLEMS]  # type: ignore[valid-type]
DatasetName = Literal[DATASETS]  # type: ignore[valid-type]
OptimizerName = Literal[OPTIMIZER_NAMES]  # type: ignore[valid-type]
WarmupOptimizerName = Literal[WARMUP_OPTIMIZERS]  # type: ignore[valid-type]
LossName = Literal[LOSS_NAMES]  # type: ignore[valid-type]
DtypeName = Literal[DTYPES]  # type: ignore[valid-type]
MatmulPrecision = Literal[MATMUL_PRECISIONS]  # type: ignore[valid-type]
SubsetName = Literal[SUBSETS]  # type: ignore[valid-type]
EigCriterion = Literal[EIG_CRITERIA]  # type: ignore[valid-type]
ActivationName = Literal[ACTIVATION_NAMES]  # type: ignore[valid-type]
ProcessName = Literal[PROCESSES]  # type: ignore[valid-type]

MAX_INT = 2**31  # counts and cadences live in int32 arrays and static loop bounds


@dataclass(frozen=True)
class Config:
    """Everything that determines a run. ``None`` in an optional field means "off" or "the
    default" as its line says.

    Sections (:data:`SECTIONS`): the problem (model, data, loss), the optimizer, the run (its
    length, precision and records) and the curvature probe. ``eosflow run PRESET --field
    value`` overrides any field; ``eosflow list --fields PRESET`` shows them all.
    """

    # run: its name -----------------------------------------------------------------------
    name: str = "digits-gd"
    """the run's name: its directory under --out (a plain name, no '/')"""
    # problem -----------------------------------------------------------------------------
    problem: ProblemName = "mlp"
    """the model (mlp, cnn, vgg11, resnet) or a toy loss of the paper (toy_a, toy_b, ...)"""
    dataset: DatasetName = "digits"
    """the training data ('none' for the toy losses)"""
    data_dir: str | None = None
    """folder with the dataset's files (needed for cifar10 and mnist)"""
    num_examples: int | None = None
    """training examples used (None: the dataset's default size; 1000 for a synthetic set)"""
    subset: SubsetName = "first"
    """which examples: the first num_examples, or a class-stratified draw"""
    num_classes: int | None = None
    """outputs of the model (None: the dataset's number of classes; 3 Gaussian clusters)"""
    widths: tuple[int, ...] = (200, 200)
    """hidden widths, e.g. 200,200 (channels for the convolutional nets)"""
    activation: ActivationName = "tanh"
    """the hidden activation"""
    freeze_last_layer: bool = False
    """keep the output layer at its initialization"""
    init_scale: float = 1.0
    """every floating-point parameter of the initialization times this (a flatter start;
    Andreyev & Beneventano's Edge of Stochastic Stability runs use 0.2)"""
    loss: LossName = "mse"
    """the loss convention: mse = 0.5 |f - y|^2 summed over outputs, mean over examples"""
    chunk_size: int | None = None
    """examples per physical batch: loss, gradients and HVPs accumulate over chunks (None: one)"""
    hessian_examples: int | None = None
    """measure curvature on the first this many training examples (None: all)"""
    test_examples: int | None = None
    """held-out examples evaluated every eval_every steps: rows of the same files that are
    not in the training subset (None: none)"""
    x0: tuple[float, ...] | None = None
    """a toy problem's starting point, e.g. 14.7,-3 (None: the toy's own)"""
    # optimizer ---------------------------------------------------------------------------
    optimizer: OptimizerName = "gd"
    """the optimizer (see eosflow.optim.METHODS)"""
    lr: float = 0.1
    """the learning rate eta (an expression such as 2/30 is allowed)"""
    momentum: float = 0.9
    """beta of momentum and nesterov, beta1 of adam (other optimizers ignore it); in [0, 1)"""
    decay: float = 0.9
    """RMSProp's second-moment decay (optax's rho; other optimizers ignore it); in [0, 1)"""
    bias_correction: bool = False
    """RMSProp's bias correction, nu / (1 - decay^t) (optax.rmsprop's; other optimizers ignore
    it: Adam always corrects)"""
    loss_min: float | None = None
    """L*, the minimum loss GD on sqrt(L - L*) aims at, in loss units (None: the problem's)"""
    warmup_steps: int = 0
    """steps of warmup_optimizer before the optimizer takes over (0: none)"""
    warmup_lr: float | None = None
    """the warm-up's learning rate (None: lr)"""
    warmup_optimizer: WarmupOptimizerName = "gd"
    """the optimizer of the warm-up steps"""
    batch_size: int | None = None
    """mini-batch size B: SGD on batches drawn by (seed, step) (None: full batch)"""
    batch_replace: bool = False
    """draw each mini-batch with replacement (else a fresh permutation per epoch)"""
    # run ---------------------------------------------------------------------------------
    steps: int = 1000
    """optimizer steps in all, the warm-up included"""
    seed: int = 0
    """PRNG seed: initialization, data subset and eigen-solver start"""
    dtype: DtypeName = "float32"
    """floating-point precision of parameters and data"""
    matmul_precision: MatmulPrecision = "highest"
    """float32 matrix products and convolutions on GPUs and TPUs: highest (true float32),
    high or default (TF32 or bfloat16 passes: faster, ~1e-3 relative error in each
    product); the same program on CPU"""
    chunk_steps: int | None = None
    """steps per compiled chunk between writes to disk (None: 100, or 100000 for toys)"""
    checkpoint_every: int | None = None
    """steps between checkpoints, a multiple of chunk_steps (None: every chunk)"""
    record_every: int | None = None
    """record one metrics row per this many steps, reduced on the device: the window's last
    values, the last finite sharpness, and loss_min/max/mean_window (None or 1: every step)"""
    loss_goal: float | None = None
    """stop when the loss reaches this value, in loss units (None: never)"""
    divergence_factor: float | None = 1e3
    """stop as diverged when the loss exceeds this multiple of the first loss (None: never)"""
    eval_every: int | None = 10
    """steps between accuracy evaluations (None: never)"""
    devices: int | None = None
    """shard the data over this many devices (None: one device)"""
    # curvature ---------------------------------------------------------------------------
    eig_every: int | None = 1
    """steps between top-eigenvalue solves (None: no curvature probe)"""
    num_eigs: int = 1
    """how many top Hessian eigenvalues to track"""
    eig_tol: float = 1e-3
    """the eigen-solver's relative tolerance, in (0, 1)"""
    eig_block: int | None = None
    """vectors lambda_1's solves carry along the run, at least num_eigs (None: num_eigs + 1:
    the one beyond the reported pairs keeps a crossing of the top two from going unseen;
    see curvature.extrapolated_start); the preconditioned and process solves carry this
    many, or num_eigs"""
    eig_criterion: EigCriterion = "residual"
    """when an eigenpair counts as converged: its residual, or the spectral gap"""
    eig_max_matvecs: int = 200
    """most Hessian-vector products per eigen-solve"""
    track_alignment: bool = True
    """record how the gradient and the update align with the top eigenvector"""
    trace_samples: int | None = None
    """Rademacher probes of Hutchinson's Hessian-trace estimate at every eigen-solve (None:
    no trace; the hessian_trace and hessian_trace_se columns)"""
    batch_sharpness_batches: int = 16
    """i.i.d. mini-batches averaged by each batch-sharpness estimate (mini-batch runs)"""
    minibatch_lambda_batches: int | None = None
    """mini-batch runs: lambda_1 of this many fixed mini-batch losses (drawn once from the
    seed) at every eig_every step, their mean in minibatch_lambda_1 (None: not measured)"""
    density_at: tuple[int, ...] = ()
    """steps at which to estimate the Hessian's spectral density, e.g. 0,500"""
    phi_every: int | None = None
    """steps between computing Phi(x), the end of gradient flow from x (None: never); with
    reproject_steps, lambda_1 at Phi(x_t) at chunk boundaries this many steps apart from
    the prediction's start, and at the end"""
    phi_gtol: float | None = None
    """|grad L| at which a projection onto Γ (the re-projection flow, Phi(x_t) checks) counts
    as converged (None: project_solve's default in prediction_dtype, 2.5e-9 in float64,
    1.6e-4 in float32)"""
    prediction_dtype: DtypeName = "float64"
    """dtype of the theory's predictions beside a run (the re-projection flow, lambda_1 at
    Phi(x_t)), whatever the run's dtype: a float32 chain of projections drifts (on MNIST
    12% against 3% in float64)"""
    reproject_steps: int | None = None
    """steps of the re-projection flow predicting the run after the warm-up (None: none)"""
    start_on_gamma: bool = False
    """move the warm-up's last iterate x_w to Phi(x_w) + (ell/2) v1 before the optimizer's
    first step (eosflow.flows.cycle_start: the two-step cycle across Γ that phase I would
    reach, without its drift along flat directions); the re-projection prediction starts
    there. Needs warmup_steps, normalized_gd or sqrt_loss_gd, the full batch; a sweep's points
    all move or none"""
    processes: tuple[ProcessName, ...] = ("discrete",)
    """processes stepped from one initialization: discrete (the optimizer), midpoint
    ((w_{t-1} + 2w_t + w_{t+1})/4), stable (gradient flow), central (the central flow of GD
    or RMSProp, arXiv 2410.24206); e.g. discrete,midpoint,stable,central"""
    central_substeps: int = 4
    """Euler steps per optimizer step of the stable and central processes"""

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
        before the field existed ran with the default).

        Raises:
            ConfigError: an unknown or missing key, a bad value, or the configuration of a run
                stepped with a custom optax transformation (``"optimizer": "custom"``), which
                only ``run_experiment(..., optimizer=tx)`` can run again.
        """
        if data.get("optimizer") == "custom":
            info = data.get("custom_optimizer") or {}
            raise ConfigError(
                f"optimizer: the run used a custom optax transformation "
                f"({info.get('repr', '?')}) that only Python can pass again: "
                "run_experiment(config, run_dir, resume=True, optimizer=tx, edge=...)")
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
    def chunk_length(self) -> int:
        """Steps per compiled chunk: chunk_steps, else 100 (100000 for toys) or fewer."""
        return self.chunk_steps or (min(self.steps, 100_000) if self.is_toy
                                    else min(self.steps, 100))

    @property
    def record_stride(self) -> int:
        """Steps per recorded metrics row (``record_every``, 1 when None)."""
        return self.record_every or 1

    @property
    def problem_spec(self) -> "ProblemSpec":
        """The problem half of the configuration (what :func:`eosflow.problems.build_problem`
        needs)."""
        from ..problems import ProblemSpec

        return ProblemSpec(**{f.name: getattr(self, f.name)
                              for f in dataclasses.fields(ProblemSpec)})


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Config)}
_HINTS = typing.get_type_hints(Config)


def _field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of ``cls`` (the form tyro reads for ``--help``)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for stmt, nxt in itertools.pairwise(body):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)):
            docs[stmt.target.id] = " ".join(str(nxt.value.value).split())
    return docs


FIELD_DOCS: dict[str, str] = _field_docs(Config)

SECTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "problem": ("which model, which data, which loss", (
        "problem", "dataset", "data_dir", "num_examples", "subset", "num_classes", "widths",
        "activation", "freeze_last_layer", "init_scale", "loss", "chunk_size",
        "hessian_examples", "test_examples", "x0")),
    "optimizer": ("the optimizer, its hyperparameters and an optional warm-up", (
        "optimizer", "lr", "momentum", "decay", "bias_correction", "loss_min", "warmup_steps",
        "warmup_lr", "warmup_optimizer", "batch_size", "batch_replace")),
    "run": ("length, precision, devices and what is recorded when", (
        "name", "steps", "seed", "dtype", "matmul_precision", "chunk_steps", "checkpoint_every",
        "record_every", "loss_goal", "divergence_factor", "eval_every", "devices")),
    "curvature": ("the Hessian probe: eigenvalues, alignment, density, Phi and flows", (
        "eig_every", "num_eigs", "eig_tol", "eig_block", "eig_criterion", "eig_max_matvecs",
        "track_alignment", "trace_samples", "batch_sharpness_batches",
        "minibatch_lambda_batches", "density_at", "phi_every", "phi_gtol", "prediction_dtype",
        "reproject_steps", "start_on_gamma", "processes", "central_substeps")),
}
_listed = [name for _, names in SECTIONS.values() for name in names]
assert sorted(_listed) == sorted(FIELDS) and len(_listed) == len(FIELDS), "SECTIONS vs fields"
assert set(FIELD_DOCS) == set(FIELDS), "every Config field needs a docstring"


_ALIASES = {"learning_rate": "lr", "eta": "lr", "step_size": "lr", "beta": "momentum",
            "iterations": "steps", "num_steps": "steps", "width": "widths",
            "hidden": "widths", "model": "problem", "data": "dataset", "precision": "dtype"}


def unknown_field_message(name: str) -> str:
    close = ([_ALIASES[name]] if name in _ALIASES
             else difflib.get_close_matches(name, list(FIELDS), n=1, cutoff=0.5))
    hint = f"; did you mean '{close[0]}'?" if close else f"; fields are: {', '.join(FIELDS)}"
    return f"{name}: unknown field{hint}"


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


def _base_types(hint) -> tuple[Any, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(t for t in typing.get_args(hint) if t is not type(None))
    return (hint,)


def choices(name: str) -> tuple[str, ...] | None:
    """The allowed values of field ``name`` if it has a fixed set (a ``Literal``), else None."""
    (base,) = _base_types(_HINTS[name])[:1]
    return typing.get_args(base) if typing.get_origin(base) is Literal else None


def type_name(name: str) -> str:
    """Field ``name``'s type as the help shows it: ``float``, ``int or none``,
    ``a list of int``, ``{gd,normalized_gd,...}``."""
    hint = _HINTS[name]
    names = []
    for t in _base_types(hint):
        if typing.get_origin(t) is tuple:
            item = typing.get_args(t)[0]
            names.append("a list of " + ("{" + ",".join(typing.get_args(item)) + "}"
                                         if typing.get_origin(item) is Literal
                                         else item.__name__))
        elif typing.get_origin(t) is Literal:
            names.append("{" + ",".join(typing.get_args(t)) + "}")
        else:
            names.append(t.__name__)
    if type(None) in typing.get_args(hint):
        names.append("none")
    return " or ".join(names)


def coerce(name: str, value: Any) -> Any:
    """Turn ``value`` (a string from the command line, or a JSON value) into field ``name``'s
    type; raise :class:`ConfigError` naming the field when it cannot.

    Strings: ``none`` for an optional field, ``true``/``false`` for a flag, ``200,200`` (or
    ``200x200``) for a list, and numbers as arithmetic (``2/30``, ``1e-3``; only numbers and
    ``+ - * / ( )``).
    """
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
                text = value.replace(",", " ")
                if item in (int, float):  # 200x200
                    text = text.replace("x", " ")
                parts = [p for p in text.split() if p]
            else:
                parts = list(value)
            if typing.get_origin(item) is Literal:
                return tuple(_choice(name, p, typing.get_args(item)) for p in parts)
            return tuple(_scalar(item, p) for p in parts)
        if typing.get_origin(base) is Literal:
            return _choice(name, value, typing.get_args(base))
        return _scalar(base, value)
    except ConfigError:
        raise
    except _Refused as err:
        raise ConfigError(f"{name}: {err} in {value!r}") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name}: expected {type_name(name)}, got {value!r}") from err


class _Refused(Exception):
    """An arithmetic expression that parses but has no finite value."""


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.USub: operator.neg, ast.UAdd: operator.pos}


def arithmetic(text: str) -> float:
    """The value of ``text``: numbers, ``+ - * /`` and parentheses, nothing else.

    >>> arithmetic("2/30") == 2 / 30, arithmetic("-(1 + 1e-3) * 2")
    (True, -2.002)
    """

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise _Refused("division by zero")
            return _OPS[type(node.op)](left, right)
        raise ValueError(text)

    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(text) from None
    result = value(tree.body)
    if not math.isfinite(result):
        raise _Refused("not a finite number")
    return result


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
            f = arithmetic(value)
            if not f.is_integer():
                raise ValueError(value)
            return int(f)
        return int(value)
    if t is float:
        if isinstance(value, bool):
            raise ValueError(value)
        return arithmetic(value) if isinstance(value, str) else float(value)
    if t is str:
        if not isinstance(value, str):
            raise ValueError(value)
        return value
    raise TypeError(t)


def _choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.4)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"{name}: unknown value {value!r}{hint} (choose from {', '.join(options)})"
        )
    return value


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
    """Every check of a configuration, the cross-field ones included: the one place."""
    for name, hint in _HINTS.items():  # types first, so later checks can trust them
        v = getattr(c, name)
        if v is None and type(None) in typing.get_args(hint):
            continue
        coerced = coerce(name, v)
        if coerced != v and not (isinstance(v, list) and tuple(v) == coerced):
            raise ConfigError(f"{name}: expected {type_name(name)}, got {v!r}")
        if isinstance(v, list):
            object.__setattr__(c, name, tuple(v))
        for x in coerced if isinstance(coerced, tuple) else (coerced,):
            if isinstance(x, int) and not isinstance(x, bool) and abs(x) >= MAX_INT:
                raise ConfigError(f"{name}: must be below 2**31, got {v!r}")
            if isinstance(x, float) and not math.isfinite(x):
                raise ConfigError(f"{name}: must be finite, got {v!r}")
    if not c.name or "/" in c.name or c.name.startswith("."):
        raise ConfigError(f"name: must be a plain directory name, got {c.name!r}")
    _positive(c, "lr")
    for name in ("steps", "num_eigs", "eig_max_matvecs"):
        _positive(c, name, integer=True)
    for name in ("num_examples", "chunk_size", "hessian_examples", "chunk_steps",
                 "checkpoint_every", "eval_every", "eig_every", "eig_block", "phi_every",
                 "reproject_steps", "devices", "num_classes", "batch_size",
                 "test_examples", "record_every"):
        _positive(c, name, allow_none=True, integer=True)
    _positive(c, "warmup_lr", allow_none=True)
    _positive(c, "divergence_factor", allow_none=True)
    _positive(c, "phi_gtol", allow_none=True)
    if c.trace_samples is not None and c.trace_samples < 2:
        raise ConfigError(f"trace_samples: must be at least 2 (its standard error needs two "
                          f"probes), got {c.trace_samples}")
    if not 0 < c.eig_tol < 1:
        raise ConfigError(f"eig_tol: must be in (0, 1), got {c.eig_tol!r}")
    if not 0 <= c.momentum < 1:
        raise ConfigError(f"momentum: must be in [0, 1), got {c.momentum!r}")
    if not 0 <= c.decay < 1:
        raise ConfigError(f"decay: must be in [0, 1), got {c.decay!r}")
    if c.seed < 0:
        raise ConfigError(f"seed: must be >= 0, got {c.seed!r}")
    if c.warmup_steps < 0:
        raise ConfigError(f"warmup_steps: must be >= 0, got {c.warmup_steps!r}")
    if c.warmup_steps >= c.steps:
        raise ConfigError(f"warmup_steps: must be below steps = {c.steps}, got {c.warmup_steps}")
    if c.reproject_steps is not None and c.optimizer not in FLOW_OPTIMIZERS:
        raise ConfigError(f"reproject_steps: the re-projection flow predicts "
                          f"{' and '.join(FLOW_OPTIMIZERS)} runs, not {c.optimizer!r}")
    if c.start_on_gamma and not c.warmup_steps:
        raise ConfigError("start_on_gamma: moves the warm-up's last iterate onto Γ; set "
                          "warmup_steps")
    if c.start_on_gamma and c.optimizer not in FLOW_OPTIMIZERS:
        raise ConfigError(f"start_on_gamma: places the two-step cycle of "
                          f"{' and '.join(FLOW_OPTIMIZERS)}, not of {c.optimizer!r}")
    if c.start_on_gamma and c.batch_size is not None:
        raise ConfigError("start_on_gamma: Γ and its two-step cycle are the full-batch loss's; "
                          "drop batch_size")
    _positive(c, "batch_sharpness_batches", integer=True)
    _positive(c, "minibatch_lambda_batches", integer=True, allow_none=True)
    if c.minibatch_lambda_batches is not None and c.batch_size is None:
        raise ConfigError("minibatch_lambda_batches: measures mini-batch losses; set "
                          "batch_size (or drop it)")
    _positive(c, "init_scale")
    if c.init_scale != 1.0 and c.problem in TOYS:
        raise ConfigError(f"init_scale: toy problem '{c.problem}' starts from x0, not from an "
                          "initialization (set x0)")
    if c.batch_size is not None and c.problem in TOYS:
        raise ConfigError(f"batch_size: toy problem '{c.problem}' has no examples to sample")
    if c.batch_size is not None and c.devices is not None:
        raise ConfigError("batch_size: mini-batch runs are single-device (drop devices)")
    if c.eig_block is not None and c.eig_block < c.num_eigs:
        raise ConfigError(f"eig_block: must be >= num_eigs = {c.num_eigs}, got {c.eig_block}")
    if (not c.widths and c.problem != "vgg11") or any(w <= 0 for w in c.widths):
        raise ConfigError(f"widths: must be one or more positive widths, got {list(c.widths)}")
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
    _check_processes(c)
    if c.chunk_steps is not None and c.checkpoint_every is not None and (
        c.checkpoint_every % c.chunk_steps
    ):
        raise ConfigError(
            f"checkpoint_every: must be a multiple of chunk_steps = {c.chunk_steps}, "
            f"got {c.checkpoint_every}"
        )
    _check_record_every(c)


def _check_record_every(c: Config) -> None:
    """``record_every = k > 1`` reduces each window of k steps to one row inside the compiled
    chunk, so every chunk, and so every chunk boundary (the run's end, the density_at steps),
    must fall on a window's edge. The re-projection prediction (started from consecutive
    lambda_1 pairs) and the processes beside the optimizer (compared with it step by step)
    need every row."""
    k = c.record_stride
    if k == 1:
        return
    for name, value in (("steps", c.steps), ("chunk_steps", c.chunk_length),
                        ("checkpoint_every", c.checkpoint_every)):
        if value is not None and value % k:
            default = (" (its default: min(steps, 100), 100000 for toys)"
                       if name == "chunk_steps" and c.chunk_steps is None else "")
            raise ConfigError(f"{name}: must be a multiple of record_every = {k}, got "
                              f"{value}{default}")
    bad = [s for s in c.density_at if s % k]
    if bad:
        raise ConfigError(f"density_at: steps must be multiples of record_every = {k}, got "
                          f"{bad[0]}")
    if c.start_on_gamma and c.warmup_steps % k:
        raise ConfigError(f"warmup_steps: must be a multiple of record_every = {k} with "
                          f"start_on_gamma (the iterate moves at a window's edge), got "
                          f"{c.warmup_steps}")
    if c.reproject_steps is not None:
        raise ConfigError("record_every: reproject_steps starts its prediction from lambda_1 "
                          "at two consecutive steps; record every step (record_every 1)")
    if c.eig_every is not None and method(c.optimizer).adaptive_step:
        raise ConfigError(f"record_every: {c.optimizer}'s stableness pairs lambda_1 at "
                          "consecutive steps t, t + 1 (Thm 4.7), which one row per window "
                          "cannot keep; record every step (record_every 1), or track no "
                          "sharpness (eig_every None)")
    extra = [n for n in c.processes if n != "discrete"]
    if extra:
        raise ConfigError(f"record_every: {extra[0]!r} is compared with the optimizer step by "
                          "step; record every step (record_every 1) with processes")


def _check_processes(c: Config) -> None:
    """The processes stepped beside the optimizer: each once, the optimizer among them; the
    flows (stable, central) follow GD or RMSProp, full batch, from the run's first step, on one
    device."""
    names = c.processes
    if len(set(names)) != len(names) or "discrete" not in names:
        raise ConfigError(f"processes: each at most once and 'discrete' among them, got "
                          f"{','.join(names)}")
    _positive(c, "central_substeps", integer=True)
    extra = [n for n in names if n != "discrete"]
    if not extra:
        return
    flows = [n for n in extra if n in ("stable", "central")]
    central = [n for n, m in METHODS.items() if m.central_flow]
    if flows and c.optimizer not in central:
        raise ConfigError(f"processes: {flows[0]!r} follows "
                          f"{' and '.join(central)}, not optimizer "
                          f"{c.optimizer!r} (keep discrete,midpoint)")
    if c.warmup_steps:
        raise ConfigError(f"processes: {extra[0]!r} starts at the run's first step; drop "
                          "warmup_steps")
    if c.batch_size is not None:
        raise ConfigError(f"processes: {extra[0]!r} needs the full batch; drop batch_size")
    if c.devices is not None:  # their state and rows are not sharded or tested on a mesh
        raise ConfigError(f"processes: {extra[0]!r} runs on one device; drop devices")
