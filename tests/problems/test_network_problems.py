"""``build_network_problem``: every configured choice lands in the problem and its info."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eosflow.experiments import Config, ConfigError
from eosflow.problems import build_network_problem, load_digits, select
from eosflow.runner import FIELD_DOCS


def _per_example_losses(problem, params):
    """Each example's loss through ``loss_fn`` on a one-row batch of weight 1."""
    x = problem.batches["x"].reshape(-1, *problem.batches["x"].shape[2:])
    y = problem.batches["y"].reshape(-1, problem.batches["y"].shape[-1])
    one = lambda xi, yi: problem.loss_fn(params, {"x": xi[None], "y": yi[None], "w": jnp.ones(1)})
    return np.asarray(jax.jit(jax.vmap(one))(x, y))


def test_mlp_on_digits_records_where_everything_came_from():
    config = Config(num_examples=40, subset="stratified", seed=3, widths=(8,))
    problem = build_network_problem(config)
    info = problem.info
    labels = load_digits().labels
    np.testing.assert_array_equal(info["data_indices"], select(labels, 40, "stratified", 3))
    assert np.bincount(labels[info["data_indices"]], minlength=10).tolist() == [4] * 10
    assert info["model"] == "mlp" and info["init_seed"] == 3 and info["widths"] == [8]
    assert info["num_params"] == 64 * 8 + 8 + 8 * 10 + 10
    assert info["standardize"] == info["data_info"]["standardize"]
    assert info["hessian_examples"] == 40 and problem.hessian_batches is None
    assert info["chunking"] == "one pass over all examples" and info["num_chunks"] == 1
    assert problem.eval_fn is not None
    assert problem.params.layers[0].weight.dtype == jnp.float32
    again = build_network_problem(config)
    other = build_network_problem(config.replace(seed=4))
    np.testing.assert_array_equal(again.params.layers[0].weight, problem.params.layers[0].weight)
    assert not np.allclose(other.params.layers[0].weight, problem.params.layers[0].weight)


def test_cnn_on_digits_chunks_the_data_and_measures_curvature_on_a_prefix():
    config = Config(problem="cnn", widths=(2,), activation="relu", num_examples=10,
                    chunk_size=4, hessian_examples=6, dtype="float64")
    problem = build_network_problem(config)
    info = problem.info
    assert problem.batches["x"].shape == (3, 4, 1, 8, 8)  # 4 + 4 + 2 real rows
    w = np.asarray(problem.batches["w"]).ravel()
    np.testing.assert_allclose(w, [0.1] * 10 + [0.0] * 2)
    hw = np.asarray(problem.hessian_batches["w"]).ravel()
    np.testing.assert_allclose(hw, [1 / 6] * 6 + [0.0] * 2)
    np.testing.assert_array_equal(
        np.asarray(problem.hessian_batches["x"]).reshape(-1, 1, 8, 8)[:6],
        np.asarray(problem.batches["x"]).reshape(-1, 1, 8, 8)[:6],
    )
    assert info["hessian_indices"] == info["data_indices"][:6]
    assert info["hessian_examples"] == 6 and info["hessian_chunk_size"] == 4
    assert info["hessian_num_chunks"] == 2 and "first 6" in info["hessian_subset"]
    assert info["chunk_size"] == 4 and "chunks of 4" in info["chunking"]
    assert info["model_class"] == "CNN" and info["input_shape"] == [1, 8, 8]
    params = problem.params
    assert params.convs[0].weight.dtype == jnp.float64
    per_example = _per_example_losses(problem, params)[:10]

    @jax.jit
    def totals(params):
        scan = lambda batches: jax.lax.scan(
            lambda acc, b: (acc + problem.loss_fn(params, b), None), 0.0, batches)[0]
        return scan(problem.batches), scan(problem.hessian_batches)

    full, hessian = totals(params)
    assert float(full) == pytest.approx(per_example.mean(), rel=1e-12)
    assert float(hessian) == pytest.approx(per_example[:6].mean(), rel=1e-12)


def test_vgg11_on_cifar_with_a_frozen_last_layer(cifar_dir):
    config = Config(problem="vgg11", dataset="cifar10", data_dir=str(cifar_dir), num_examples=4,
                    widths=(), activation="relu", freeze_last_layer=True)
    problem = build_network_problem(config)
    info = problem.info
    last = problem.params.classifier[-1]
    assert last.weight is None and last.bias is None
    assert info["num_frozen_params"] == 512 * 10 + 10  # 512 features -> 10 classes
    assert info["freeze_last_layer"] is True and info["model_class"] == "VGG11"
    assert "N(0, 2/(9*out_channels))" in info["init"]
    assert info["input_shape"] == [3, 32, 32] and info["data_indices"] == [0, 1, 2, 3]
    assert "per-feature" in info["standardize"]
    assert info["data_info"]["standardize_stats"]["num_examples"] == 30
    assert all(c.weight is not None for c in problem.params.convs)


def test_resnet_on_mnist(mnist_dir):
    config = Config(problem="resnet", dataset="mnist", data_dir=str(mnist_dir), widths=(2, 4),
                    num_examples=5, subset="first")
    problem = build_network_problem(config)
    assert problem.info["model_class"] == "ResNet" and problem.info["input_shape"] == [1, 28, 28]
    assert problem.batches["x"].shape == (1, 5, 1, 28, 28)
    assert len(problem.params.blocks) == 6 and problem.params.head.weight.shape == (10, 4)
    assert "SkipInit" in problem.info["init"]


def test_synthetic_data_sets():
    reg = build_network_problem(Config(dataset="teacher_student", num_examples=12, widths=(4,)))
    assert reg.eval_fn is None and reg.batches["y"].shape == (1, 12, 1)
    assert reg.info["data_info"]["source"].startswith("synthetic teacher-student")
    assert reg.params.layers[0].weight.shape == (4, 20)
    cls = build_network_problem(Config(dataset="gaussian_clusters", num_examples=12, num_classes=4,
                                       widths=(4,), loss="cross_entropy"))
    assert cls.batches["y"].shape == (1, 12, 4) and cls.params.layers[-1].weight.shape == (4, 4)
    assert cls.eval_fn is not None and cls.info["loss"] == "cross_entropy"
    default = build_network_problem(Config(dataset="gaussian_clusters", widths=(4,)))
    # the defaults FIELD_DOCS states: 1000 examples, 3 clusters
    assert "1000 for a synthetic set" in FIELD_DOCS["num_examples"]
    assert "3 Gaussian clusters" in FIELD_DOCS["num_classes"]
    assert default.info["num_examples"] == 1000
    assert default.batches["y"].shape[-1] == 3


@pytest.mark.parametrize("problem", ["mlp", "cnn"])
def test_init_scale_multiplies_every_initial_parameter(problem):
    """A flatter start (Andreyev & Beneventano's MLPs start at 0.2): every weight and bias of
    the seed's initialization times init_scale, recorded in the problem's info."""
    base = Config(problem=problem, widths=(8,), num_examples=20)
    one = build_network_problem(base)
    scaled = build_network_problem(base.replace(init_scale=0.2))
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(scaled.params), strict=True):
        np.testing.assert_allclose(b, 0.2 * np.asarray(a), rtol=1e-6)
    assert (one.info["init_scale"], scaled.info["init_scale"]) == (1.0, 0.2)
    for bad, message in ((0.0, "init_scale: must be positive"), (-0.2, "must be positive")):
        with pytest.raises(ConfigError, match=message):
            base.replace(init_scale=bad)
    with pytest.raises(ConfigError, match="init_scale: toy problem 'toy_a' starts from x0"):
        Config(problem="toy_a", dataset="none", init_scale=0.5)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(problem="cnn", dataset="teacher_student"),
         "problem: 'cnn' needs image data; dataset 'teacher_student' is flat"),
        (dict(problem="resnet", dataset="gaussian_clusters"), "problem: 'resnet' needs image data"),
        (dict(problem="vgg11"), "problem: 'vgg11' needs images of at least 32x32"),
        (dict(dataset="teacher_student", loss="cross_entropy"),
         "loss: 'cross_entropy' needs class labels; dataset 'teacher_student' is regression"),
        (dict(num_classes=5), "num_classes: dataset 'digits' has 10 classes, got 5"),
        (dict(dataset="teacher_student", num_classes=3), "num_classes: dataset 'teacher_student'"),
        (dict(num_examples=20, hessian_examples=50), "hessian_examples: 50 exceeds num_examples"),
        (dict(hessian_examples=2000), "hessian_examples: 2000 exceeds the 1797 training examples"),
        (dict(problem="resnet", widths=(8, 4)), "widths: ResNet stage widths must not decrease"),
        (dict(problem="cnn", widths=(2, 2, 2, 2)), "widths: 4 conv layers pool 8x8 images"),
        (dict(num_examples=5000), "num_examples: n = 5000 exceeds the 1797 examples"),
        (dict(dataset="none"), "dataset: problem 'mlp' needs a dataset"),
    ],
)
def test_invalid_combinations_name_the_field(fields, message):
    with pytest.raises(ConfigError, match=message) as err:
        build_network_problem(Config(**fields))
    assert "\n" not in str(err.value)


def test_missing_data_directory_names_the_files(tmp_path):
    config = Config(dataset="mnist", data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"^data_dir: load_mnist: .*train-images-idx3-ubyte"):
        build_network_problem(config)
    config = Config(dataset="cifar10", data_dir=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"^data_dir: load_cifar10: .*does not exist"):
        build_network_problem(config)


def test_a_model_too_big_for_memory_is_refused_before_allocating():
    # 64-1e9-10: 64e9 + 1e9 + 10e9 + 10 parameters, ~8.9 TiB of training state; refused from
    # shapes alone (allocating it would abort the process)
    with pytest.raises(ConfigError, match=r"widths: the model has 75,000,000,010 parameters"):
        build_network_problem(Config(num_examples=20, widths=(10**9,)))


def test_the_memory_estimate_counts_the_data_the_problem_holds():
    """The estimate checked before allocating counts every copy of the data on the device:
    training, the Hessian's subset and the held-out set (x, y and a weight per row)."""
    config = Config(num_examples=50, hessian_examples=20, test_examples=30, widths=(8,))
    problem = build_network_problem(config)
    held = [problem.batches, problem.hessian_batches, problem.test_batches]
    actual = sum(np.asarray(a).nbytes for b in held for a in jax.tree.leaves(b))
    estimate = problem.info["memory_estimate_bytes"]
    assert estimate["data"] == actual  # no padding here: one chunk each
    params = sum(np.asarray(a).nbytes for a in jax.tree.leaves(problem.params))
    assert estimate["training_state"] >= 4 * params  # params, gradient, two moments at least


def test_cohen_cifar_sgd_preset_runs_on_cifar_batches(cifar_dir, tmp_path):
    """Issue 18's GPU preset at a toy size: mini-batches of the CIFAR python batches, batch
    sharpness beside lambda1, the held-out metrics from the test batch."""
    from eosflow.experiments import preset_config
    from eosflow.runner import run_experiment

    config = preset_config("cohen-cifar-sgd", dict(
        data_dir=str(cifar_dir), num_examples=24, widths=(8,), steps=20, chunk_steps=10,
        eig_every=10, eval_every=10, batch_size=8, batch_sharpness_batches=2, test_examples=4))
    record = run_experiment(config, tmp_path / "run", progress=False)
    m = record.metrics
    assert record.status == "completed" and config.dataset == "cifar10"
    assert preset_config("cohen-cifar-sgd", {"data_dir": "/d"}).test_examples == 1000
    on = np.isfinite(m["lambda_1"])
    assert on.sum() == 2 and np.all(np.isfinite(m["batch_sharpness"][on]))
    assert np.isfinite(m["test_loss"][10]) and np.isfinite(m["test_accuracy"][10])
