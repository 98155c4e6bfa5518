"""CIFAR-10 and MNIST readers: exact round trips of tiny files, standardisation, errors."""

import datetime
import gzip
import pickle

import numpy as np
import pytest

from eosflow.problems import load_cifar10, load_mnist, read_idx

from .conftest import TEST_IMAGES, write_cifar_batch, write_idx

CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


# ------------------------------------------------------------------------------- CIFAR-10


def test_cifar_reads_pixels_in_channel_row_column_order(cifar_dir, cifar_raw):
    train, _ = cifar_raw
    data = load_cifar10(cifar_dir, standardize=False)
    raw = np.concatenate([d for d, _ in train])
    assert data.x.shape == (30, 3, 32, 32) and data.x.dtype == np.float32
    # The official layout: 1024 red values, then green, then blue, each row-major.
    for n, c, h, w in [(0, 0, 0, 0), (3, 1, 5, 7), (29, 2, 31, 30), (17, 2, 0, 31)]:
        assert data.x[n, c, h, w] * 255 == pytest.approx(raw[n, c * 1024 + h * 32 + w], abs=1e-4)
    np.testing.assert_allclose(data.x.reshape(30, -1) * 255.0, raw, atol=1e-4)
    labels = np.concatenate([lab for _, lab in train])
    np.testing.assert_array_equal(data.labels, labels)
    np.testing.assert_array_equal(data.y, np.eye(10)[labels])
    np.testing.assert_array_equal(data.indices, np.arange(30))
    assert data.info["standardize"] == "x / 255 only"


def test_cifar_accepts_the_folder_itself_and_reads_the_test_split(cifar_dir, cifar_raw):
    _, (test_data, test_labels) = cifar_raw
    data = load_cifar10(cifar_dir / "cifar-10-batches-py", split="test", standardize=False)
    assert len(data) == TEST_IMAGES
    np.testing.assert_allclose(data.x.reshape(TEST_IMAGES, -1) * 255.0, test_data, atol=1e-4)
    np.testing.assert_array_equal(data.labels, test_labels)


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar_standardises_per_feature_with_training_statistics(cifar_dir, cifar_raw, split):
    train, (test_data, _) = cifar_raw
    full_train = np.concatenate([d for d, _ in train]).astype(np.float64) / 255.0
    mean, std = full_train.mean(axis=0), full_train.std(axis=0)
    # A subset still uses the statistics of the whole training set (Cohen et al.'s order).
    n = 10 if split == "train" else 3
    data = load_cifar10(cifar_dir, n, split=split)
    source = full_train if split == "train" else test_data.astype(np.float64) / 255.0
    expected = (source[:n] - mean) / std
    np.testing.assert_allclose(data.x.reshape(n, -1), expected, rtol=1e-5, atol=1e-5)
    stats = data.info["standardize_stats"]
    assert stats["over"] == "train" and stats["num_examples"] == 30
    assert stats["mean_of_means"] == pytest.approx(mean.mean(), rel=1e-12)
    assert stats["mean_of_stds"] == pytest.approx(std.mean(), rel=1e-12)
    assert "per-feature" in data.info["standardize"]


def test_cifar_first_n_is_a_prefix_and_stratified_is_balanced(cifar_dir):
    full = load_cifar10(cifar_dir)
    first = load_cifar10(cifar_dir, 7)
    np.testing.assert_array_equal(first.indices, np.arange(7))
    np.testing.assert_array_equal(first.x, full.x[:7])
    strat = load_cifar10(cifar_dir, 20, subset="stratified", seed=3)
    assert np.bincount(strat.labels, minlength=10).tolist() == [2] * 10
    np.testing.assert_array_equal(strat.x, full.x[strat.indices])
    np.testing.assert_array_equal(strat.labels, full.labels[strat.indices])
    again = load_cifar10(cifar_dir, 20, subset="stratified", seed=3)
    np.testing.assert_array_equal(again.indices, strat.indices)
    assert strat.info["subset"] == "stratified" and strat.info["seed"] == 3


def test_cifar_missing_directory_and_files_name_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cifar10(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as err:
        load_cifar10(tmp_path)
    for name in [*CIFAR_FILES, "cifar-10-batches-py", str(tmp_path)]:
        assert name in str(err.value)


def test_cifar_one_missing_batch_is_named(cifar_dir):
    (cifar_dir / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks data_batch_4;"):
        load_cifar10(cifar_dir)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x80\x04garbage", "not a CIFAR-10 python batch"),
        (pickle.dumps([1, 2, 3]), "expected a pickled dict"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}), "b'labels'"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), r"\(N, 3072\)"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}), "uint8"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "2 integers"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}), "0..9"),
        (pickle.dumps({b"data": datetime.date(2020, 1, 1), b"labels": []}), "refusing"),
    ],
)
def test_cifar_malformed_batch_is_rejected_with_its_name(cifar_dir, content, message):
    (cifar_dir / "cifar-10-batches-py" / "data_batch_2").write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        load_cifar10(cifar_dir)
    assert "data_batch_2" in str(err.value)


def test_cifar_bad_arguments(cifar_dir):
    with pytest.raises(ValueError, match="split must be"):
        load_cifar10(cifar_dir, split="val")
    with pytest.raises(ValueError, match="exceeds the 30 examples"):
        load_cifar10(cifar_dir, 31)
    with pytest.raises(ValueError, match="subset must be"):
        load_cifar10(cifar_dir, 5, subset="random")


def test_cifar_reads_python2_style_str_keys(tmp_path, cifar_raw):
    train, test = cifar_raw
    for i, (data, labels) in enumerate(train, start=1):
        with open(tmp_path / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": data, "labels": list(map(int, labels))}, f, protocol=2)
    write_cifar_batch(tmp_path / "test_batch", *test)
    assert len(load_cifar10(tmp_path)) == 30


# ------------------------------------------------------------------------------- MNIST


def test_idx_round_trip_and_header_checks(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", arr)
    write_idx(tmp_path / "b", arr, gz=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "a", 3), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "b.gz", 3), arr)
    with pytest.raises(ValueError, match="3 dimensions; expected 1"):
        read_idx(tmp_path / "a", 1)
    raw = (tmp_path / "a").read_bytes()
    cases = {
        "magic": (b"\x01" + raw[1:], "two zero bytes"),
        "type": (raw[:2] + b"\x0d" + raw[3:], "type code 0x0d"),
        "short": (raw[:-1], r"header says \(2, 3, 4\) = 24 bytes of data, file has 23"),
        "long": (raw + b"\x00", "file has 25"),
        "header": (raw[:9], "truncated header"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=message):
            read_idx(tmp_path / name, 3)
    (tmp_path / "fake.gz").write_bytes(raw)  # not actually gzipped
    with pytest.raises(ValueError, match=r"fake\.gz"):
        read_idx(tmp_path / "fake.gz", 3)


def test_mnist_reads_exactly(mnist_dir, mnist_raw):
    train_x, train_y, test_x, test_y = mnist_raw
    data = load_mnist(mnist_dir, standardize=False)
    assert data.x.shape == (40, 1, 28, 28) and data.x.dtype == np.float32
    np.testing.assert_allclose(data.x[:, 0] * 255.0, train_x, atol=1e-4)
    np.testing.assert_array_equal(data.labels, train_y)
    np.testing.assert_array_equal(data.y, np.eye(10)[train_y])
    test = load_mnist(mnist_dir, split="test", standardize=False)
    np.testing.assert_allclose(test.x[:, 0] * 255.0, test_x, atol=1e-4)
    np.testing.assert_array_equal(test.labels, test_y)
    assert data.info["image_shape"] == [1, 28, 28]


@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_standardises_with_global_training_statistics(mnist_dir, mnist_raw, split):
    train_x, _, test_x, _ = mnist_raw
    pixels = train_x.astype(np.float64) / 255.0
    mean, std = pixels.mean(), pixels.std()
    data = load_mnist(mnist_dir, 5, split=split)
    source = train_x if split == "train" else test_x
    expected = (source[:5].astype(np.float64) / 255.0 - mean) / std
    np.testing.assert_allclose(data.x[:, 0], expected, rtol=1e-5, atol=1e-5)
    stats = data.info["standardize_stats"]
    assert stats["mean"] == pytest.approx(mean, rel=1e-12)
    assert stats["std"] == pytest.approx(std, rel=1e-12)
    assert stats["num_examples"] == 40 and stats["over"] == "train"


def test_mnist_stratified_subset(mnist_dir):
    a = load_mnist(mnist_dir, 20, subset="stratified", seed=5)
    b = load_mnist(mnist_dir, 20, subset="stratified", seed=5)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert np.bincount(a.labels, minlength=10).tolist() == [2] * 10
    full = load_mnist(mnist_dir)
    np.testing.assert_array_equal(a.x, full.x[a.indices])


def test_mnist_torchvision_layout(tmp_path, mnist_raw):
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    train_x, train_y, _, _ = mnist_raw
    write_idx(folder / "train-images-idx3-ubyte", train_x, gz=True)
    write_idx(folder / "train-labels-idx1-ubyte", train_y)
    assert len(load_mnist(tmp_path)) == 40


def test_mnist_missing_files_are_named(tmp_path, mnist_raw):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")
    write_idx(tmp_path / "train-images-idx3-ubyte", mnist_raw[0])
    with pytest.raises(FileNotFoundError) as err:
        load_mnist(tmp_path)
    msg = str(err.value)
    assert "lacks train-labels-idx1-ubyte;" in msg
    assert "train-images-idx3-ubyte (or train-images-idx3-ubyte.gz)" in msg
    assert "train-labels-idx1-ubyte (or train-labels-idx1-ubyte.gz)" in msg
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_mnist(tmp_path, split="test")


def test_mnist_inconsistent_files_are_rejected(tmp_path, mnist_raw):
    train_x, train_y, _, _ = mnist_raw
    write_idx(tmp_path / "train-images-idx3-ubyte", train_x)
    write_idx(tmp_path / "train-labels-idx1-ubyte", train_y[:-1])
    with pytest.raises(ValueError, match="40 images but train-labels-idx1-ubyte has 39"):
        load_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(40, 11))
    with pytest.raises(ValueError, match="labels above 9"):
        load_mnist(tmp_path)
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x03")  # a labels file claiming 3 dimensions
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match="3 dimensions; expected 1"):
        load_mnist(tmp_path)
