"""Neural-network problems from a configuration: model, dataset, loss convention, chunking.

:class:`ProblemSpec` names a problem (which model on which data, with which loss convention);
:func:`build_problem` turns it into a :class:`~eosflow.problems.Problem` (toys included), and
``build_network_problem(spec)`` does the networks:

* ``dataset`` (``digits``, ``cifar10``, ``mnist``, ``teacher_student``,
  ``gaussian_clusters``) with ``num_examples``, ``subset``, ``seed``, ``data_dir`` and
  ``num_classes``;
* ``problem`` (``mlp``, ``cnn``, ``vgg11``, ``resnet``) with ``widths`` (MLP: hidden widths;
  CNN: channels of each conv layer, Cohen et al.'s ``cnn-*`` is ``(32, 32)``; VGG-11: hidden
  widths of the classifier, Cohen et al.'s is ``(512, 512)``; ResNet: channels of each stage,
  ResNet-20 is ``(16, 32, 64)``), ``activation``, ``freeze_last_layer`` and ``dtype``,
  initialised from ``seed`` and scaled by ``init_scale``;
* ``loss``, ``chunk_size`` (the physical batch: loss, gradient and HVPs accumulate over
  chunks of this many examples) and ``hessian_examples`` (curvature measured on the first
  that many training examples, each weighted ``1/hessian_examples``).

Combinations that make no sense raise :class:`~eosflow.ConfigError` with a one-line message naming
the field. Everything that determines the numbers is written into ``Problem.info``.
"""

import dataclasses
import itertools
import math
import os
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._errors import ConfigError
from ._data import Dataset, gaussian_clusters, load_digits, teacher_student
from ._models import CNN, MLP, VGG11, ResNet, describe_init, trainable_filter
from ._problem import Problem, chunk, supervised_problem
from ._readers import load_cifar10, load_mnist
from ._toys import TOYS

NETWORKS = ("mlp", "cnn", "vgg11", "resnet")
IMAGE_MODELS = ("cnn", "vgg11", "resnet")
IMAGE_DATASETS = ("digits", "cifar10", "mnist")
REGRESSION_DATASETS = ("teacher_student",)
NUM_CLASSES = {"digits": 10, "cifar10": 10, "mnist": 10}
SYNTHETIC_SIZE = 1000  # examples drawn for a synthetic set when num_examples is unset
DEFAULT_CLUSTERS = 3


@dataclass(frozen=True)
class ProblemSpec:
    """Which problem: a model on a dataset with a loss convention, or a toy from ``x0``.

    Every field's meaning is in :class:`eosflow.runner.Config`, which nests the same names;
    this record is what :func:`build_problem` needs and nothing else.
    """

    problem: str = "mlp"
    dataset: str = "digits"
    data_dir: str | None = None
    num_examples: int | None = None
    subset: str = "first"
    num_classes: int | None = None
    widths: tuple[int, ...] = (200, 200)
    activation: str = "tanh"
    freeze_last_layer: bool = False
    init_scale: float = 1.0
    loss: str = "mse"
    chunk_size: int | None = None
    hessian_examples: int | None = None
    test_examples: int | None = None
    x0: tuple[float, ...] | None = None
    seed: int = 0
    dtype: str = "float32"


def build_problem(spec: ProblemSpec) -> Problem:
    """The :class:`~eosflow.problems.Problem` a spec names (params drawn from ``spec.seed``).

    Args:
        spec: a :class:`ProblemSpec`, or any object with a ``problem_spec`` attribute (an
            :class:`eosflow.runner.Config`).

    Raises:
        ConfigError: a combination that makes no sense, or ``x0`` of the wrong length.
    """
    if not isinstance(spec, ProblemSpec):
        spec = spec.problem_spec
    dtype = jnp.dtype(spec.dtype)
    if spec.problem in TOYS:
        toy = TOYS[spec.problem](dtype=dtype)
        x0 = None
        if spec.x0 is not None:
            if len(spec.x0) != toy.x0.size:
                raise ConfigError(
                    f"x0: {spec.problem} needs {toy.x0.size} coordinates, got {len(spec.x0)}"
                )
            x0 = jnp.asarray(spec.x0, dtype)
        return toy.problem(x0)
    return build_network_problem(spec)


def check_network_config(config: ProblemSpec) -> None:
    """Raise :class:`ConfigError` for a model/dataset/loss combination that makes no sense."""
    problem, dataset = config.problem, config.dataset
    if problem not in NETWORKS:
        raise ConfigError(f"problem: {problem!r} is not a network (choose from {NETWORKS})")
    if dataset == "none":
        raise ConfigError(f"dataset: problem {problem!r} needs a dataset, got 'none'")
    if problem in IMAGE_MODELS and dataset not in IMAGE_DATASETS:
        raise ConfigError(
            f"problem: {problem!r} needs image data; dataset {dataset!r} is flat "
            f"(use one of {', '.join(IMAGE_DATASETS)}, or problem 'mlp')"
        )
    if problem == "vgg11" and dataset != "cifar10":
        raise ConfigError(
            f"problem: 'vgg11' needs images of at least 32x32 (five 2x2 poolings); dataset "
            f"{dataset!r} is smaller (use cifar10, or problem 'cnn'/'resnet')"
        )
    if dataset in REGRESSION_DATASETS and config.loss == "cross_entropy":
        raise ConfigError(
            f"loss: 'cross_entropy' needs class labels; dataset {dataset!r} is regression "
            "(use mse, mse_nohalf or mse_mean)"
        )
    if config.num_classes is not None:
        if dataset in NUM_CLASSES and config.num_classes != NUM_CLASSES[dataset]:
            raise ConfigError(
                f"num_classes: dataset {dataset!r} has {NUM_CLASSES[dataset]} classes, "
                f"got {config.num_classes} (leave it unset)"
            )
        if dataset in REGRESSION_DATASETS:
            raise ConfigError(
                f"num_classes: dataset {dataset!r} is regression and has no classes "
                "(leave it unset)"
            )
        if dataset == "gaussian_clusters" and config.num_classes < 2:
            raise ConfigError(f"num_classes: needs at least 2 clusters, got {config.num_classes}")
    if problem in ("cnn", "resnet") and not config.widths:
        raise ConfigError(f"widths: problem {problem!r} needs at least one width, got []")
    if problem == "resnet" and any(b < a for a, b in itertools.pairwise(config.widths)):
        raise ConfigError(
            f"widths: ResNet stage widths must not decrease, got {list(config.widths)}"
        )
    if config.hessian_examples is not None and config.num_examples is not None and (
        config.hessian_examples > config.num_examples
    ):
        raise ConfigError(
            f"hessian_examples: {config.hessian_examples} exceeds num_examples = "
            f"{config.num_examples}"
        )


def load_dataset(config: ProblemSpec, *, exclude: np.ndarray | None = None) -> Dataset:
    """The configured dataset (host arrays), subset and standardised as configured; with
    ``exclude`` (the training rows) the held-out set of ``test_examples`` other rows of the
    same files, standardised with the training statistics."""
    n, subset, seed, name = config.num_examples, config.subset, config.seed, config.dataset
    if exclude is not None:
        n = config.test_examples
        if name not in IMAGE_DATASETS:
            raise ConfigError(f"test_examples: a held-out set is drawn from {IMAGE_DATASETS}, "
                              f"not {name!r}")
    try:
        if name == "digits":
            return load_digits(n, subset=subset, seed=seed, exclude=exclude)
        if name == "cifar10":
            return load_cifar10(_data_dir(config), n, subset=subset, seed=seed, exclude=exclude)
        if name == "mnist":
            return load_mnist(_data_dir(config), n, subset=subset, seed=seed, exclude=exclude)
        if name == "teacher_student":
            return teacher_student(SYNTHETIC_SIZE if n is None else n, seed=seed)
        if name == "gaussian_clusters":
            k = DEFAULT_CLUSTERS if config.num_classes is None else config.num_classes
            return gaussian_clusters(SYNTHETIC_SIZE if n is None else n, num_classes=k, seed=seed)
    except FileNotFoundError as err:
        raise ConfigError(f"data_dir: {err}") from err
    except ValueError as err:
        field = "data_dir"
        if "exceeds" in str(err):
            field = "test_examples" if exclude is not None else "num_examples"
        raise ConfigError(f"{field}: {err}") from err
    raise ConfigError(f"dataset: {name!r} is not a dataset for network problems")


def _data_dir(config: ProblemSpec) -> str:
    if not config.data_dir:  # Config checks this too; kept for configs built by replace()
        raise ConfigError(f"data_dir: required for dataset {config.dataset!r}")
    return config.data_dir


def _image_shape(data: Dataset) -> tuple[int, ...] | None:
    shape = data.info.get("image_shape")
    return None if shape is None else tuple(int(s) for s in shape)


def build_model(config: ProblemSpec, in_shape: tuple[int, ...], num_outputs: int, key):
    """The configured model for inputs of shape ``in_shape`` (``(C, H, W)`` for image models)
    with ``num_outputs`` outputs, initialised from ``key``, every floating-point parameter
    times ``config.init_scale`` (Andreyev & Beneventano, arXiv 2412.20553, start their MLPs
    at 0.2)."""
    model = _new_model(config, in_shape, num_outputs, key)
    if config.init_scale == 1.0:
        return model
    scale = config.init_scale
    return jax.tree.map(lambda a: a * scale if eqx.is_inexact_array(a) else a, model)


def _new_model(config: ProblemSpec, in_shape: tuple[int, ...], num_outputs: int, key):
    dtype = jnp.dtype(config.dtype)
    problem, act, widths = config.problem, config.activation, tuple(config.widths)
    if problem == "mlp":
        return MLP(math.prod(in_shape), num_outputs, widths, act, key=key, dtype=dtype)
    if problem not in IMAGE_MODELS:
        raise ConfigError(f"problem: {problem!r} is not a network (choose from {NETWORKS})")
    if len(in_shape) != 3 or in_shape[1] != in_shape[2]:
        raise ConfigError(
            f"problem: {problem!r} needs square images (C, H, W), got inputs of shape {in_shape}"
        )
    channels, size = in_shape[0], in_shape[1]
    if problem == "cnn":
        if size < 2 ** len(widths):
            raise ConfigError(
                f"widths: {len(widths)} conv layers pool {size}x{size} images below 1x1 "
                f"(at most {int(math.log2(size))} layers)"
            )
        return CNN(channels, num_outputs, image_size=size, act=act, width=widths, key=key,
                   dtype=dtype)
    if problem == "vgg11":
        if size < 32:
            raise ConfigError(
                f"problem: 'vgg11' needs images of at least 32x32; got {size}x{size}"
            )
        return VGG11(channels, num_outputs, image_size=size, act=act, pool="avg",
                     classifier_widths=widths, key=key, dtype=dtype)
    return ResNet(channels, num_outputs, widths=widths, act=act, key=key, dtype=dtype)


# bytes of training state per parameter byte: params, gradient, optimizer state (up to two
# moments), the eigen-solver's block (k + 1 vectors) and a Krylov basis of a few dozen
STATE_FACTOR = 32


def _check_model_fits(config: ProblemSpec, in_shape, num_outputs: int, key,
                      rows: int) -> dict[str, int]:
    """Refuse, before anything is allocated, a model whose training state and data would not
    fit in memory: its parameter count comes from ``jax.eval_shape`` of the constructor
    (shapes only); the data is ``rows`` examples (training, the Hessian's subset when it is
    a copy, held-out) of ``in_shape`` inputs, ``num_outputs`` targets and a weight, in the
    run's dtype; the memory is the first device's limit or the host's available RAM.
    Returns the estimate in bytes (``{"training_state": ..., "data": ...}``)."""
    shapes = jax.eval_shape(lambda k: build_model(config, in_shape, num_outputs, k), key)
    leaves = [x for x in jax.tree.leaves(shapes) if hasattr(x, "dtype")]
    count = sum(math.prod(x.shape) for x in leaves)
    state = STATE_FACTOR * sum(math.prod(x.shape) * x.dtype.itemsize for x in leaves)
    data = rows * (math.prod(in_shape) + num_outputs + 1) * jnp.dtype(config.dtype).itemsize
    avail = available_memory()
    if avail is not None and state + data > avail:
        field = "widths" if state >= data else "num_examples"
        raise ConfigError(
            f"{field}: the model has {count:,} parameters, about {state / 2**30:.1f} GiB of "
            f"training state, and the data {data / 2**30:.1f} GiB, more than the "
            f"{avail / 2**30:.1f} GiB available; use smaller widths or fewer examples")
    return {"training_state": int(state), "data": int(data)}


def available_memory() -> int | None:
    """Bytes the first device may still allocate (its limit on an accelerator), or the
    host's available memory on CPU; None when neither can be read."""
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        stats = dev.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def _batches(x: np.ndarray, y: np.ndarray, chunk_size: int | None, dtype):
    size = x.shape[0] if chunk_size is None else min(chunk_size, x.shape[0])
    batches, num = chunk({"x": x, "y": y}, size)
    return {k: jnp.asarray(v, dtype) for k, v in batches.items()}, num, size


def build_network_problem(config: ProblemSpec) -> Problem:
    """The :class:`~eosflow.problems.Problem` of a network spec (see the module doc)."""
    if not isinstance(config, ProblemSpec):
        config = config.problem_spec
    check_network_config(config)
    data = load_dataset(config)
    n = len(data)
    hessian = config.hessian_examples
    if hessian is not None and hessian > n:
        raise ConfigError(f"hessian_examples: {hessian} exceeds the {n} training examples")
    image_shape = _image_shape(data)
    test = None if config.test_examples is None else load_dataset(config, exclude=data.indices)
    if config.problem in IMAGE_MODELS:
        assert image_shape is not None  # check_network_config admits image datasets only
        data = dataclasses.replace(data, x=data.x.reshape(n, *image_shape))
        if test is not None:
            test = dataclasses.replace(test, x=test.x.reshape(len(test), *image_shape))
    in_shape = tuple(data.x.shape[1:])
    key = jax.random.key(config.seed)
    copies = 0 if hessian is None or hessian == n else hessian
    memory = _check_model_fits(config, in_shape, int(data.y.shape[1]), key,
                               n + copies + (0 if test is None else len(test)))
    model = build_model(config, in_shape, int(data.y.shape[1]), key)
    spec = trainable_filter(model, config.freeze_last_layer)
    num_frozen = sum(
        int(a.size)
        for a, s in zip(jax.tree.leaves(model), jax.tree.leaves(spec), strict=True)
        if not s and hasattr(a, "size")
    )
    dtype = jnp.dtype(config.dtype)
    chunk_size = None if config.chunk_size is None else min(config.chunk_size, n)
    info = {
        "model": config.problem,
        "model_class": type(model).__name__,
        "input_shape": list(in_shape),
        "widths": list(config.widths),
        "activation": config.activation,
        "init_seed": config.seed,
        "init": describe_init(model),
        "init_scale": config.init_scale,
        "freeze_last_layer": config.freeze_last_layer,
        "num_frozen_params": num_frozen,
        "memory_estimate_bytes": memory,
        "dtype": config.dtype,
        "standardize": data.info.get("standardize", "none"),
        "subset_rule": data.info.get("subset", config.subset),
        "chunking": (
            "one pass over all examples" if chunk_size is None else
            f"loss, gradient and HVPs summed over chunks of {chunk_size} examples (the last "
            "padded with zero-weight rows)"
        ),
    }
    changes = {}
    if hessian is None or hessian == n:
        info.update(hessian_examples=n, hessian_subset="all training examples")
    else:
        hb, num, size = _batches(data.x[:hessian], data.y[:hessian], chunk_size, dtype)
        changes["hessian_batches"] = hb
        info.update(
            hessian_examples=hessian,
            hessian_subset=f"the first {hessian} training examples, each weighted 1/{hessian}",
            hessian_indices=data.indices[:hessian].tolist(),
            hessian_num_chunks=num,
            hessian_chunk_size=size,
        )
    if test is not None:
        tb, num, size = _batches(test.x, test.y, chunk_size, dtype)
        changes["test_batches"] = tb
        info.update(test_examples=len(test), test_subset=test.info.get("subset"),
                    test_indices=test.indices.tolist(), test_num_chunks=num,
                    test_chunk_size=size)
    problem = supervised_problem(
        model, data, loss=config.loss, chunk_size=chunk_size, dtype=dtype, trainable=spec,
        info=info,
    )
    if config.dataset in REGRESSION_DATASETS:
        changes["eval_fn"] = None  # argmax accuracy means nothing for regression
    return dataclasses.replace(problem, **changes) if changes else problem
