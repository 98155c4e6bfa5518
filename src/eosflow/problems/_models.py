"""Equinox models for the Edge-of-Stability experiments (no BatchNorm anywhere).

Every model maps **one** example to its outputs (the problem code ``vmap``s it): the
:class:`MLP` flattens whatever it is given, the image models take ``(C, H, W)``. Each model
names its output layer in ``last_layer``, so :func:`trainable_filter` can freeze it (the
paper's CIFAR-10 VGG-11 trains with a fixed last layer).

=============  ===========================================================================
model          reference
=============  ===========================================================================
``MLP``        Cohen et al. 2021 ``fc-*`` (widths ``(200, 200)``); Arora et al. 2022 MNIST
``CNN``        Cohen et al. 2021 ``cnn-relu`` / ``cnn-tanh`` (two 3x3 convs of 32, max-pool)
``VGG11``      VGG-11 (config A), average pooling, no BatchNorm (Arora et al. 2022, CIFAR-10)
``ResNet``     CIFAR ResNet (He et al. 2016, ``6n+2`` layers), no BatchNorm; SkipInit scalar
=============  ===========================================================================

References:
    Cohen, Kaur, Li, Kolter, Talwalkar. *Gradient Descent on Neural Networks Typically Occurs
    at the Edge of Stability*, ICLR 2021, arXiv 2103.00065.
    Arora, Li, Panigrahi. *Understanding Gradient Descent on Edge of Stability in Deep
    Learning*, ICML 2022, arXiv 2205.09745.
    Simonyan, Zisserman. *Very Deep Convolutional Networks*, arXiv 1409.1556.
    He, Zhang, Ren, Sun. *Deep Residual Learning for Image Recognition*, arXiv 1512.03385.
    De, Smith. *Batch Normalization Biases Residual Blocks Towards the Identity Function in
    Deep Networks* (SkipInit), arXiv 2002.10444.
"""

import functools
import itertools
import math
from collections.abc import Callable, Iterable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._errors import check_int
from .._types import Array, PRNGKeyArray, PyTree

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "softplus": jax.nn.softplus,
    "identity": lambda x: x,
}

POOLINGS = ("max", "avg")

#: VGG-11 ("configuration A"): channel multiples of the base width, ``"M"`` = 2x2 pooling.
VGG11_LAYERS: tuple[int | str, ...] = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")


def activation(name: str) -> Callable[[Array], Array]:
    """The activation function called ``name`` (a key of :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}."
        ) from None


def pool2x2(x: Array, kind: str) -> Array:
    """2x2 pooling with stride 2 over the last two axes, dropping an odd last row/column
    (PyTorch's ``MaxPool2d(2)`` / ``AvgPool2d(2)``).

    Written as a reshape and a reduction, so derivatives of any order (HVPs, third
    derivatives) go through plain ``max``/``mean``.

    >>> import jax.numpy as jnp
    >>> x = jnp.arange(16.0).reshape(1, 4, 4)
    >>> pool2x2(x, "avg")[0].tolist(), pool2x2(x, "max")[0].tolist()
    ([[2.5, 4.5], [10.5, 12.5]], [[5.0, 7.0], [13.0, 15.0]])
    """
    *lead, h, w = x.shape
    h2, w2 = h // 2, w // 2
    if h2 == 0 or w2 == 0:
        raise ValueError(f"cannot 2x2-pool an image of size {h}x{w}; it needs at least 2x2.")
    x = x[..., : 2 * h2, : 2 * w2].reshape(*lead, h2, 2, w2, 2)
    if kind == "max":
        return jnp.max(x, axis=(-3, -1))
    if kind == "avg":
        return jnp.mean(x, axis=(-3, -1))
    raise ValueError(f"pool must be one of {POOLINGS}, got {kind!r}.")


def _check_pool(pool: str) -> str:
    if pool not in POOLINGS:
        raise ValueError(f"pool must be one of {POOLINGS}, got {pool!r}.")
    return pool


# --------------------------------------------------------------------------- initialisation
# Layers are built abstractly (shapes only) and then filled from ONE uniform and ONE normal
# draw per model inside a single jitted function: eagerly, every distinct random shape would
# otherwise cost its own XLA compilation (seconds each for VGG-11 on a loaded CPU).



def _linear(a: int, b: int, dtype) -> eqx.nn.Linear:
    """An ``eqx.nn.Linear`` whose arrays are shapes only (nothing is computed)."""
    return eqx.filter_eval_shape(lambda: eqx.nn.Linear(a, b, key=jax.random.key(0), dtype=dtype))


def _conv(a: int, b: int, dtype, stride: int = 1) -> eqx.nn.Conv2d:
    """A 3x3, padding-1 ``eqx.nn.Conv2d`` whose arrays are shapes only."""
    return eqx.filter_eval_shape(
        lambda: eqx.nn.Conv2d(a, b, 3, stride, 1, key=jax.random.key(0), dtype=dtype)
    )


def _torch_default(layer) -> tuple[tuple[str, float], tuple[str, float]]:
    """PyTorch's (and equinox's) default: weight and bias uniform in +-1/sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(math.prod(layer.weight.shape[1:]))
    return ("uniform", bound), ("uniform", bound)


def _he_fan_out(layer) -> tuple[tuple[str, float], tuple[str, float]]:
    """Weights N(0, 2 / (k*k*out_channels)), zero bias (Cohen et al.'s / torchvision-CIFAR's
    VGG initialisation)."""
    out_ch, _, kh, kw = layer.weight.shape
    return ("normal", math.sqrt(2.0 / (kh * kw * out_ch))), ("zeros", 0.0)


@functools.partial(jax.jit, static_argnames=("specs", "dtype"))
def _draw(key, specs: tuple[tuple[tuple[int, ...], str, float], ...], dtype) -> list[Array]:
    sizes = [math.prod(shape) for shape, _, _ in specs]
    total = sum(sizes)
    k_uniform, k_normal = jax.random.split(key)
    uniform = jax.random.uniform(k_uniform, (total,), dtype, -1.0, 1.0)
    normal = jax.random.normal(k_normal, (total,), dtype)
    out, start = [], 0
    for (shape, kind, scale), size in zip(specs, sizes, strict=True):
        if kind == "zeros":
            out.append(jnp.zeros(shape, dtype))
        else:
            src = uniform if kind == "uniform" else normal
            out.append(scale * src[start : start + size].reshape(shape))
        start += size
    return out


def _initialise(key: PRNGKeyArray, layers: list, rule, dtype) -> list:
    """Fill abstract ``layers`` (``weight`` and ``bias``) as ``rule(layer)`` says."""
    specs = []
    for layer in layers:
        (wk, ws), (bk, bs) = rule(layer)
        specs += [(tuple(layer.weight.shape), wk, ws), (tuple(layer.bias.shape), bk, bs)]
    arrays = _draw(key, tuple(specs), jnp.dtype(dtype))
    return [
        eqx.tree_at(lambda m: (m.weight, m.bias), layer, (arrays[2 * i], arrays[2 * i + 1]))
        for i, layer in enumerate(layers)
    ]


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
            eqx.nn.Linear(a, b, key=k, dtype=dtype)
            for a, b, k in zip(sizes[:-1], sizes[1:], keys, strict=True)
        ]
        self.act = activation(act)

    @property
    def last_layer(self) -> eqx.nn.Linear:
        """The output layer (what ``freeze_last_layer`` fixes)."""
        return self.layers[-1]

    def __call__(self, x: Array) -> Array:
        x = jnp.ravel(x)
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return self.layers[-1](x)


class CNN(eqx.Module):
    """Cohen et al.'s small CNN: ``[conv3x3(pad 1) -> act -> 2x2 pool]`` per width, then linear.

    With the defaults (``width=32``, two layers, max pooling) this is their ``cnn-relu``
    (``act="relu"``) or ``cnn-tanh`` (``act="tanh"``); ``pool="avg"`` gives their
    ``cnn-avgpool-*``. Initialisation has PyTorch's default distribution, as in their code:
    weights and biases uniform in $\\pm 1/\\sqrt{\\text{fan in}}$ (drawn from ``key`` in one
    batch, so the values differ from ``eqx.nn.Conv2d``'s own draw).

    Args:
        in_channels: channels of the input image ``(C, H, W)``.
        num_classes: outputs.
        image_size: the input's height and width (square images; 32 for CIFAR-10, 28 for
            MNIST, 8 for digits).
        act: activation name (:data:`ACTIVATIONS`).
        width: an int ``w`` for two conv layers of ``w`` channels (Cohen et al.), or a
            sequence giving each conv layer's channels.
        pool: ``"max"`` (Cohen et al.'s ``cnn-*``) or ``"avg"``.
        key: PRNG key of the initialisation.
        dtype: parameter dtype.
    """

    convs: list[eqx.nn.Conv2d]
    head: eqx.nn.Linear
    act: Callable[[Array], Array] = eqx.field(static=True)
    pool: str = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        image_size: int = 32,
        act: str = "relu",
        width: int | Sequence[int] = 32,
        pool: str = "max",
        key: PRNGKeyArray,
        dtype=jnp.float32,
    ):
        pair = isinstance(width, int | np.integer) or not isinstance(width, Iterable)
        widths = tuple(check_int("width", w) for w in ((width, width) if pair else width))
        if not widths:
            raise ValueError("width must be an int or a non-empty sequence of ints, got ().")
        size = check_int("image_size", image_size)
        chans = [in_channels, *widths]
        convs = [_conv(a, b, dtype) for a, b in itertools.pairwise(chans)]
        for _ in widths:
            size //= 2
        if size < 1:
            raise ValueError(
                f"image_size = {image_size} is too small for {len(widths)} 2x2 poolings; "
                f"it needs at least {2 ** len(widths)}."
            )
        layers = _initialise(
            key, [*convs, _linear(widths[-1] * size * size, num_classes, dtype)],
            _torch_default, dtype,
        )
        self.convs, self.head = layers[:-1], layers[-1]
        self.act = activation(act)
        self.pool = _check_pool(pool)

    @property
    def last_layer(self) -> eqx.nn.Linear:
        """The output layer (what ``freeze_last_layer`` fixes)."""
        return self.head

    def __call__(self, x: Array) -> Array:
        for conv in self.convs:
            x = pool2x2(self.act(conv(x)), self.pool)
        return self.head(jnp.ravel(x))


class VGG11(eqx.Module):
    """VGG-11 (configuration A) without BatchNorm, 2x2 **average** pooling by default.

    Features: ``64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M`` (3x3 convs with
    padding 1, each followed by ``act``; ``M`` = 2x2 pooling); then a classifier
    ``Linear -> act`` for each of ``classifier_widths`` and a final ``Linear`` to
    ``num_classes`` (:attr:`last_layer`). The defaults match Cohen et al.'s
    ``vgg11_nodropout`` (classifier ``512 -> 512 -> 512 -> 10``) with average instead of max
    pooling, the CIFAR-10 model of Arora et al. (who freeze the last layer).

    Initialisation (Cohen et al.'s / torchvision-CIFAR's): conv weights
    $\\mathcal N(0, 2/(9\\,c_\\text{out}))$ with zero biases; linear layers PyTorch's default,
    uniform $\\pm 1/\\sqrt{\\text{fan in}}$ (all drawn from ``key``).

    Args:
        in_channels: channels of the input image ``(C, H, W)``.
        num_classes: outputs.
        image_size: the input's height and width; at least 32 (five 2x2 poolings).
        act: activation name (:data:`ACTIVATIONS`).
        pool: ``"avg"`` (the paper's) or ``"max"`` (the original VGG).
        width: base width (64 for VGG-11; smaller for quick tests); the conv channels are
            ``width`` times ``1, 2, 4, 4, 8, 8, 8, 8``.
        classifier_widths: hidden widths of the classifier; ``()`` for a single linear layer.
        key: PRNG key of the initialisation.
        dtype: parameter dtype.
    """

    convs: list[eqx.nn.Conv2d]
    classifier: list[eqx.nn.Linear]
    pool_after: tuple[bool, ...] = eqx.field(static=True)
    act: Callable[[Array], Array] = eqx.field(static=True)
    pool: str = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        *,
        image_size: int = 32,
        act: str = "relu",
        pool: str = "avg",
        width: int = 64,
        classifier_widths: Sequence[int] = (512, 512),
        key: PRNGKeyArray,
        dtype=jnp.float32,
    ):
        width = check_int("width", width)
        classifier_widths = tuple(check_int("classifier_widths", w) for w in classifier_widths)
        num_pools = VGG11_LAYERS.count("M")
        size = check_int("image_size", image_size) // 2**num_pools
        if size < 1:
            raise ValueError(
                f"image_size = {image_size} is too small for VGG-11's {num_pools} 2x2 "
                f"poolings; it needs at least {2**num_pools} (pad or resize the images)."
            )
        convs, pool_after = [], []
        chans = in_channels
        for v in VGG11_LAYERS:
            if v == "M":
                pool_after[-1] = True
                continue
            convs.append(_conv(chans, v * width, dtype))
            pool_after.append(False)
            chans = v * width
        sizes = [chans * size * size, *classifier_widths, num_classes]
        k_conv, k_lin = jax.random.split(key)
        self.convs = _initialise(k_conv, convs, _he_fan_out, dtype)
        self.pool_after = tuple(pool_after)
        self.classifier = _initialise(
            k_lin, [_linear(a, b, dtype) for a, b in itertools.pairwise(sizes)], _torch_default,
            dtype,
        )
        self.act = activation(act)
        self.pool = _check_pool(pool)

    @property
    def last_layer(self) -> eqx.nn.Linear:
        """The output layer (frozen in Arora et al.'s CIFAR-10 runs)."""
        return self.classifier[-1]

    def __call__(self, x: Array) -> Array:
        for conv, pool in zip(self.convs, self.pool_after, strict=True):
            x = self.act(conv(x))
            if pool:
                x = pool2x2(x, self.pool)
        x = jnp.ravel(x)
        for layer in self.classifier[:-1]:
            x = self.act(layer(x))
        return self.classifier[-1](x)


class _Block(eqx.Module):
    """``act(shortcut(x) + alpha * conv(act(conv(x))))``; the shortcut is the identity, or
    (when the block halves the resolution and widens) parameter-free subsampling with
    zero-padded channels ("option A" of He et al.)."""

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    alpha: Array | None
    out_channels: int = eqx.field(static=True)
    stride: int = eqx.field(static=True)

    def __call__(self, x: Array, act: Callable[[Array], Array]) -> Array:
        h = self.conv2(act(self.conv1(x)))
        if self.alpha is not None:
            h = self.alpha * h
        short = x[:, :: self.stride, :: self.stride]
        pad = self.out_channels - short.shape[0]
        if pad:
            short = jnp.pad(short, ((0, pad), (0, 0), (0, 0)))
        return act(short + h)


class ResNet(eqx.Module):
    """A CIFAR ResNet (He et al.'s ``6n+2`` family) without BatchNorm.

    ``conv3x3(widths[0]) -> act``, then for each stage ``s`` ``blocks_per_stage`` basic
    blocks of ``widths[s]`` channels (the first block of every stage after the first halves
    the resolution), global average pooling and a linear layer (:attr:`last_layer`). The
    defaults are ResNet-20 (``widths=(16, 32, 64)``, 3 blocks per stage). Shortcuts are the
    identity, or parameter-free subsampling with zero-padded channels where the shape
    changes; so there is no BatchNorm anywhere.

    Without normalisation each residual branch can be multiplied by a learnable scalar
    ``alpha`` initialised at ``branch_scale`` (SkipInit, De & Smith 2020, uses 0, so the
    network starts close to its shortcut path); ``branch_scale=None`` drops the scalar.
    Convs and the linear layer have PyTorch's default initialisation distribution, uniform
    $\\pm 1/\\sqrt{\\text{fan in}}$ for weights and biases (drawn from ``key``).

    Args:
        in_channels: channels of the input image ``(C, H, W)``.
        num_classes: outputs.
        widths: channels per stage.
        blocks_per_stage: basic blocks per stage (ResNet-``(6n+2)`` has ``n`` with 3 stages).
        act: activation name (:data:`ACTIVATIONS`).
        branch_scale: initial value of the learnable residual scalar, or ``None`` for none.
        key: PRNG key of the initialisation.
        dtype: parameter dtype.
    """

    stem: eqx.nn.Conv2d
    blocks: list[_Block]
    head: eqx.nn.Linear
    act: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 3,
        act: str = "relu",
        branch_scale: float | None = 0.0,
        key: PRNGKeyArray,
        dtype=jnp.float32,
    ):
        widths = tuple(check_int("widths", w) for w in widths)
        if not widths:
            raise ValueError("widths must be a non-empty sequence of ints, got ().")
        blocks_per_stage = check_int("blocks_per_stage", blocks_per_stage)
        layers, strides, chans = [_conv(in_channels, widths[0], dtype)], [], widths[0]
        if any(b < a for a, b in itertools.pairwise(widths)):
            raise ValueError(f"widths must not decrease, got {list(widths)}.")
        for s, w in enumerate(widths):
            for b in range(blocks_per_stage):
                stride = 2 if (s > 0 and b == 0) else 1
                layers += [_conv(chans, w, dtype, stride), _conv(w, w, dtype)]
                strides.append(stride)
                chans = w
        layers = _initialise(key, [*layers, _linear(chans, num_classes, dtype)], _torch_default,
                             dtype)
        self.stem, self.head = layers[0], layers[-1]
        self.blocks = [
            _Block(
                layers[1 + 2 * i], layers[2 + 2 * i],
                None if branch_scale is None else jnp.asarray(branch_scale, dtype),
                layers[2 + 2 * i].weight.shape[0], stride,
            )
            for i, stride in enumerate(strides)
        ]
        self.act = activation(act)

    @property
    def last_layer(self) -> eqx.nn.Linear:
        """The output layer (what ``freeze_last_layer`` fixes)."""
        return self.head

    def __call__(self, x: Array) -> Array:
        x = self.act(self.stem(x))
        for block in self.blocks:
            x = block(x, self.act)
        return self.head(jnp.mean(x, axis=(-2, -1)))


def trainable_filter(model: eqx.Module, freeze_last_layer: bool = False) -> PyTree[bool]:
    """An equinox filter spec (``model``'s structure, ``bool`` leaves) marking trained arrays.

    Every floating-point array is trainable, except, with ``freeze_last_layer``, those of
    ``model.last_layer``. Pass it as ``supervised_problem(..., trainable=spec)`` or to
    ``eqx.partition(model, spec)``.

    Raises:
        TypeError: ``freeze_last_layer`` for a model without a ``last_layer``.
    """
    spec = jax.tree.map(eqx.is_inexact_array, model)
    if not freeze_last_layer:
        return spec
    if not hasattr(type(model), "last_layer"):
        raise TypeError(
            f"freeze_last_layer needs a model with a `last_layer`; {type(model).__name__} "
            "has none (use MLP, CNN, VGG11 or ResNet, or build the filter spec by hand)."
        )
    frozen = jax.tree.map(lambda _: False, spec.last_layer)
    return eqx.tree_at(lambda m: m.last_layer, spec, frozen)


def describe_init(model: eqx.Module) -> str:
    """A one-line description of how ``model`` was initialised (for run metadata)."""
    uniform = "weights and biases uniform +-1/sqrt(fan_in) (PyTorch's default)"
    if isinstance(model, MLP):
        return f"equinox Linear default: {uniform}"
    default = f"all layers: {uniform}, drawn in one batch from the seed"
    if isinstance(model, VGG11):
        return (
            "convs: weights N(0, 2/(9*out_channels)), zero biases (Cohen et al.'s vgg.py); "
            f"linear layers: {uniform}; drawn in one batch from the seed"
        )
    if isinstance(model, ResNet):
        scale = model.blocks[0].alpha
        tail = (
            "no residual scalar"
            if scale is None
            else f"learnable residual-branch scalar initialised at {float(scale)}"
            + (" (SkipInit)" if float(scale) == 0.0 else "")
        )
        return f"{default}; {tail}"
    return default
