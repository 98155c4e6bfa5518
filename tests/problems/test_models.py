"""Models: architectures against independent oracles, frozen last layers, chunked losses."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eosflow.problems import (
    CNN,
    MLP,
    VGG11,
    Dataset,
    ResNet,
    pool2x2,
    supervised_problem,
    trainable_filter,
)


def _num_params(model) -> int:
    """Floating-point array entries (concrete or abstract) in ``model``."""
    leaves = [a for a in jax.tree.leaves(model) if hasattr(a, "shape") and hasattr(a, "dtype")]
    return sum(int(np.prod(a.shape)) for a in leaves if jnp.issubdtype(a.dtype, jnp.inexact))


def _abstract(cls, *args, **kwargs):
    """Build a model abstractly (shapes only): no initialisation is computed."""
    return eqx.filter_eval_shape(cls, *args, key=jax.random.key(0), **kwargs)


def _dataset(seed, n, in_shape, num_classes) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *in_shape))
    labels = rng.integers(0, num_classes, n)
    return Dataset(x, np.eye(num_classes)[labels], labels, np.arange(n), "random")


def _like(tree, seed):
    """A random PyTree shaped like ``tree`` (NumPy draws: nothing to compile)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype), tree)


def _conv_oracle(x, conv, pool, act):
    """conv3x3 with padding 1 through lax directly, then act, then a reduce_window pool."""
    y = jax.lax.conv_general_dilated(x[None], conv.weight, (1, 1), ((1, 1), (1, 1)))[0]
    y = act(y + conv.bias)
    if pool == "max":
        return jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 2, 2), (1, 2, 2), "VALID")
    return jax.lax.reduce_window(y, 0.0, jax.lax.add, (1, 2, 2), (1, 2, 2), "VALID") / 4


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool2x2_matches_a_loop_and_drops_odd_edges(kind):
    x = np.random.default_rng(0).standard_normal((2, 5, 7))
    out = np.asarray(pool2x2(jnp.asarray(x), kind))
    assert out.shape == (2, 2, 3)
    reduce = np.max if kind == "max" else np.mean
    for c in range(2):
        for i in range(2):
            for j in range(3):
                window = x[c, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
                assert out[c, i, j] == pytest.approx(reduce(window))
    with pytest.raises(ValueError, match="pool must be"):
        pool2x2(jnp.asarray(x), "min")


def test_cnn_has_cohens_shapes():
    cifar = _abstract(CNN, 3, 10)
    assert [c.weight.shape for c in cifar.convs] == [(32, 3, 3, 3), (32, 32, 3, 3)]
    assert cifar.head.weight.shape == (10, 32 * 8 * 8)
    mnist = _abstract(CNN, 1, 10, image_size=28, width=(16, 8, 4))
    assert [c.weight.shape[:2] for c in mnist.convs] == [(16, 1), (8, 16), (4, 8)]
    assert mnist.head.weight.shape == (10, 4 * 3 * 3)
    with pytest.raises(ValueError, match="needs at least 8"):
        _abstract(CNN, 1, 10, image_size=6, width=(4, 4, 4))


@pytest.mark.parametrize("pool, size", [("max", 8), ("avg", 7)])
def test_cnn_forward_matches_lax_oracle(key, pool, size):
    model = CNN(2, 3, image_size=size, act="tanh", width=(3, 4), pool=pool, key=key,
                dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, size, size)))

    @eqx.filter_jit
    def both(model, x):
        h = x
        for conv in model.convs:
            h = _conv_oracle(h, conv, pool, jnp.tanh)
        return model(x), model.head.weight @ h.reshape(-1) + model.head.bias

    out, expected = both(model, x)
    assert out.shape == (3,)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_vgg11_matches_the_reference_parameter_count():
    # Configuration A: 3x3 convs 64, 128, 256, 256, 512 x 4, then 512 -> 512 -> 512 -> 10.
    chans = [3, 64, 128, 256, 256, 512, 512, 512, 512]
    convs = sum(9 * a * b + b for a, b in itertools.pairwise(chans))
    fcs = (512 * 512 + 512) * 2 + 512 * 10 + 10
    model = _abstract(VGG11)
    assert _num_params(model) == convs + fcs == 9_750_922
    assert model.pool == "avg" and model.pool_after.count(True) == 5
    assert [c.weight.shape[0] for c in model.convs] == chans[1:]
    with pytest.raises(ValueError, match="needs at least 32"):
        _abstract(VGG11, 1, 10, image_size=28)


def test_cnn_initialisation_is_pytorchs_uniform_and_traceable():
    keys = jax.random.split(jax.random.key(2), 2)
    models = eqx.filter_vmap(lambda k: CNN(3, 10, width=(40, 40), image_size=4, key=k))(keys)
    for layer in [*models.convs, models.head]:
        bound = 1 / np.sqrt(np.prod(layer.weight.shape[2:]))  # leading axis: the two keys
        for arr in (layer.weight, layer.bias):
            assert float(jnp.abs(arr).max()) <= bound
        if layer.weight[0].size >= 10_000:
            assert float(jnp.std(layer.weight[0])) == pytest.approx(bound / np.sqrt(3), rel=0.03)
    assert not np.allclose(models.head.weight[0], models.head.weight[1])  # keys differ
    single = CNN(3, 10, width=(40, 40), image_size=4, key=keys[1])
    np.testing.assert_array_equal(single.convs[1].weight, models.convs[1].weight[1])


@pytest.fixture(scope="module")
def tiny_vgg():
    """A narrow VGG-11 (base width 8: the last convs still hold 36 864 weights each)."""
    return VGG11(3, 4, width=8, classifier_widths=(6,), key=jax.random.key(3), dtype=jnp.float64)


def test_vgg11_initialisation_and_output(tiny_vgg):
    model = tiny_vgg
    assert eqx.filter_eval_shape(model, jnp.zeros((3, 32, 32))).shape == (4,)
    checked = 0
    for conv in model.convs:
        assert np.all(np.asarray(conv.bias) == 0)
        out_ch = conv.weight.shape[0]
        if conv.weight.size >= 10_000:  # enough samples to check the std to a few percent
            std = np.sqrt(2 / (9 * out_ch))
            assert float(jnp.std(conv.weight)) == pytest.approx(std, rel=0.03)
            assert abs(float(jnp.mean(conv.weight))) < 0.05 * std
            checked += 1
    assert checked >= 3
    for layer in model.classifier:
        bound = 1 / np.sqrt(layer.weight.shape[1])
        assert float(jnp.abs(layer.weight).max()) <= bound
        assert float(jnp.abs(layer.bias).max()) <= bound


def test_frozen_last_layer_is_not_trained_and_leaves_other_gradients_alone(tiny_vgg):
    model = tiny_vgg
    spec = trainable_filter(model, freeze_last_layer=True)
    assert not any(jax.tree.leaves(spec.classifier[-1]))
    assert all(jax.tree.leaves(eqx.tree_at(lambda m: m.classifier[-1], spec, None)))
    assert all(jax.tree.leaves(trainable_filter(model)))
    data = _dataset(4, 2, (3, 32, 32), 4)
    frozen = supervised_problem(model, data, dtype=jnp.float64, trainable=spec)
    full = supervised_problem(model, data, dtype=jnp.float64)
    assert frozen.params.classifier[-1].weight is None and frozen.params.classifier[-1].bias is None
    last = model.classifier[-1]
    assert full.info["num_params"] - frozen.info["num_params"] == last.weight.size + last.bias.size
    both = jax.jit(lambda pf, pa: (jax.value_and_grad(frozen.full_loss)(pf),
                                   jax.value_and_grad(full.full_loss)(pa)))
    (loss_frozen, g_frozen), (loss_full, g_full) = both(frozen.params, full.params)
    assert float(loss_frozen) == pytest.approx(float(loss_full), rel=1e-14)
    assert jax.tree.structure(g_frozen) == jax.tree.structure(frozen.params)
    g_full_rest = eqx.filter(g_full, spec)
    assert jax.tree.structure(g_full_rest) == jax.tree.structure(g_frozen)
    for a, b in zip(jax.tree.leaves(g_frozen), jax.tree.leaves(g_full_rest), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert float(jnp.abs(g_full.classifier[-1].weight).max()) > 0  # it would have moved


def test_freezing_needs_a_last_layer(key):
    mlp = MLP(4, 3, [5], key=key)
    spec = trainable_filter(mlp, True)
    assert jax.tree.leaves(spec.layers[0]) == [True, True]
    assert jax.tree.leaves(spec.layers[1]) == [False, False]
    linear = eqx.nn.Linear(2, 2, key=key)
    assert all(jax.tree.leaves(trainable_filter(linear)))
    with pytest.raises(TypeError, match="needs a model with a `last_layer`"):
        trainable_filter(linear, True)


def test_chunked_loss_gradient_and_hvp_equal_one_pass_for_the_cnn(key):
    model = CNN(1, 3, image_size=8, act="tanh", width=(2, 3), key=key, dtype=jnp.float64)
    data = _dataset(5, 7, (1, 8, 8), 3)
    one = supervised_problem(model, data, dtype=jnp.float64)
    chunked = supervised_problem(model, data, dtype=jnp.float64, chunk_size=3)
    assert one.info["num_chunks"] == 1 and chunked.info["num_chunks"] == 3  # 3 + 3 + 1 (padded)
    params = one.params
    v = _like(params, 6)
    for problem in (one, chunked):
        assert jax.tree.structure(problem.params) == jax.tree.structure(params)

    @jax.jit
    def everything(params, v, x, y):
        def loss_grad_hvp(problem):
            return jax.jvp(jax.value_and_grad(problem.full_loss), (params,), (v,))

        # the oracle: the per-example losses averaged directly
        out = jax.vmap(model)(x)
        direct = jnp.mean(0.5 * jnp.sum((out - y) ** 2, axis=-1))
        return loss_grad_hvp(one), loss_grad_hvp(chunked), direct

    *results, direct = everything(params, v, jnp.asarray(data.x), jnp.asarray(data.y))
    loss = [float(r[0][0]) for r in results]
    grads = [r[0][1] for r in results]
    hvps = [r[1][1] for r in results]
    direct = float(direct)
    assert loss[0] == pytest.approx(direct, rel=1e-13)
    assert loss[1] == pytest.approx(loss[0], rel=1e-13)
    for a, b in zip(jax.tree.leaves(grads[0]) + jax.tree.leaves(hvps[0]),
                    jax.tree.leaves(grads[1]) + jax.tree.leaves(hvps[1]), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-11, atol=1e-13)


def test_resnet20_parameter_count():
    convs, chans = 9 * 3 * 16 + 16, 16
    for w in (16, 32, 64):
        for _ in range(3):
            convs += 9 * chans * w + w + 9 * w * w + w + 1  # two convs and the branch scalar
            chans = w
    model = _abstract(ResNet, 3, 10)
    assert len(model.blocks) == 9
    assert _num_params(model) == convs + 64 * 10 + 10
    assert _num_params(_abstract(ResNet, 3, 10, branch_scale=None)) == convs - 9 + 650
    with pytest.raises(ValueError, match="must not decrease"):
        _abstract(ResNet, 3, 10, widths=(8, 4))


def test_resnet_shortcuts_and_skipinit(key):
    model = ResNet(1, 4, widths=(2, 3), blocks_per_stage=1, act="relu", key=key,
                   dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(7).standard_normal((1, 7, 7)))

    @eqx.filter_jit
    def check(model, plain):
        # With the residual scalars at 0 only the shortcuts remain: identity, then stride-2
        # subsampling with a zero-padded third channel.
        h = jax.nn.relu(model.stem(x))
        h = jnp.concatenate([h[:, ::2, ::2], jnp.zeros((1, 4, 4))])
        expected = model.head(jnp.mean(jax.nn.relu(h), axis=(1, 2)))
        grads = jax.grad(lambda m: jnp.sum(m(x) ** 2))(model)
        return model(x), expected, grads, plain(x)

    plain = ResNet(1, 4, widths=(2, 3), blocks_per_stage=1, branch_scale=None, key=key,
                   dtype=jnp.float64)
    out, expected, grads, plain_out = check(model, plain)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    convs = jax.tree.leaves([(b.conv1, b.conv2) for b in grads.blocks])
    assert convs and all(float(jnp.abs(g).max()) == 0 for g in convs)
    assert all(float(jnp.abs(b.alpha)) > 0 for b in grads.blocks)
    assert all(b.alpha is None for b in plain.blocks)
    assert plain_out.shape == (4,) and not np.allclose(plain_out, out)
