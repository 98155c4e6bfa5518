"""Tiny CIFAR-10 and MNIST folders in the real on-disk formats, written from scratch here."""

import gzip
import pickle
import struct

import numpy as np
import pytest

TRAIN_PER_BATCH = 6  # 5 batches -> 30 training images, 3 per class
TEST_IMAGES = 5


def write_cifar_batch(path, data: np.ndarray, labels, *, protocol=2) -> None:
    """A CIFAR-10 python batch as the official files hold it: bytes keys, list labels."""
    batch = {
        b"batch_label": b"testing batch",
        b"labels": [int(v) for v in labels],
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)


def write_idx(path, array: np.ndarray, *, gz: bool = False) -> None:
    """An idx file: 0, 0, type 0x08 (ubyte), ndim, big-endian uint32 dims, then the bytes."""
    array = np.asarray(array, np.uint8)
    raw = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    raw += struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    opener = gzip.open if gz else open
    with opener(str(path) + (".gz" if gz else ""), "wb") as f:
        f.write(raw)


@pytest.fixture
def cifar_raw():
    """Raw uint8 rows (N, 3072) and labels for the 5 train batches and the test batch."""
    rng = np.random.default_rng(7)
    train = [
        (rng.integers(0, 256, (TRAIN_PER_BATCH, 3072), dtype=np.uint8),
         np.array([(b * TRAIN_PER_BATCH + i) % 10 for i in range(TRAIN_PER_BATCH)]))
        for b in range(5)
    ]
    test = (rng.integers(0, 256, (TEST_IMAGES, 3072), dtype=np.uint8), rng.integers(0, 10, 5))
    return train, test


@pytest.fixture
def cifar_dir(tmp_path, cifar_raw):
    """``tmp_path/cifar-10-batches-py`` holding the six batches (returns ``tmp_path``)."""
    train, test = cifar_raw
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i, (data, labels) in enumerate(train, start=1):
        write_cifar_batch(folder / f"data_batch_{i}", data, labels)
    write_cifar_batch(folder / "test_batch", *test, protocol=pickle.HIGHEST_PROTOCOL)
    return tmp_path


@pytest.fixture
def mnist_raw():
    rng = np.random.default_rng(11)
    train_x = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    train_x[:, :3, :] = 0  # constant border rows, as in MNIST
    train_y = np.arange(40) % 10
    test_x = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    test_y = rng.integers(0, 10, 7)
    return train_x, train_y, test_x, test_y


@pytest.fixture(params=[False, True], ids=["raw", "gz"])
def mnist_dir(request, tmp_path, mnist_raw):
    """The four MNIST idx files, gzipped or not."""
    train_x, train_y, test_x, test_y = mnist_raw
    gz = request.param
    write_idx(tmp_path / "train-images-idx3-ubyte", train_x, gz=gz)
    write_idx(tmp_path / "train-labels-idx1-ubyte", train_y, gz=gz)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", test_x, gz=gz)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", test_y, gz=gz)
    return tmp_path
