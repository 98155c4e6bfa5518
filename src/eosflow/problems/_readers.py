"""Readers for CIFAR-10 (python-pickle batches) and MNIST (idx files) in a user-named folder.

Nothing here downloads: each reader looks in the directory it is given, validates what it
finds, and says exactly which files it expected when something is missing or malformed.
Both return a :class:`~eosflow.problems.Dataset` of host arrays whose ``info`` records the
files read, the subset rule and the standardisation (with the statistics' provenance).
"""

import gzip
import pickle
from pathlib import Path

import numpy as np

from ._data import Dataset, held_out, one_hot, select

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
CIFAR10_SUBDIR = "cifar-10-batches-py"
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_SUBDIRS = (".", "MNIST/raw", "raw")

_SPLITS = ("train", "test")


def _check_split(split: str) -> str:
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    return split


def _as_dir(path, what: str) -> Path:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"{what}: directory {str(root)!r} does not exist (pass the folder that holds the "
            "dataset's files; eosflow never downloads)."
        )
    return root


# --------------------------------------------------------------------------- CIFAR-10


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays only, never arbitrary callables."""

    _ALLOWED = frozenset({
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    })

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _cifar_dir(path) -> Path:
    root = _as_dir(path, "load_cifar10")
    for cand in (root, root / CIFAR10_SUBDIR):
        if all((cand / f).is_file() for f in CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES):
            return cand
    where = root / CIFAR10_SUBDIR if (root / CIFAR10_SUBDIR).is_dir() else root
    missing = [f for f in CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES if not (where / f).is_file()]
    raise FileNotFoundError(
        f"load_cifar10: {str(where)!r} lacks {', '.join(missing)}; expected the CIFAR-10 python "
        f"batches {', '.join(CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES)} in {str(root)!r} or in "
        f"its subfolder {CIFAR10_SUBDIR!r} (extract cifar-10-python.tar.gz there)."
    )


def _read_cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch: ``(uint8 (N, 3, 32, 32), int32 (N,))``."""
    bad = f"load_cifar10: {str(file)!r} is not a CIFAR-10 python batch"
    try:
        with open(file, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{bad} ({err}).") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{bad} (expected a pickled dict, found {type(batch).__name__}).")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"{bad} (it needs the keys b'data' and b'labels', has {sorted(batch)}).")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"{bad} (b'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape})."
        )
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{bad} (b'labels' must be {data.shape[0]} integers, got {labels.dtype} "
            f"{labels.shape})."
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{bad} (labels must lie in 0..9, got {labels.min()}..{labels.max()}).")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int32)


def _read_cifar(folder: Path, files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    parts = [_read_cifar_batch(folder / f) for f in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _feature_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and (population) std of ``images / 255`` in float64, in slabs."""
    flat = images.reshape(images.shape[0], -1)
    mean = flat.mean(axis=0, dtype=np.float64) / 255.0
    sq = np.zeros_like(mean)
    for start in range(0, flat.shape[0], 10_000):
        sq += ((flat[start : start + 10_000] / 255.0 - mean) ** 2).sum(axis=0)
    return mean.reshape(images.shape[1:]), np.sqrt(sq / flat.shape[0]).reshape(images.shape[1:])


def load_cifar10(
    path,
    n: int | None = None,
    *,
    split: str = "train",
    subset: str = "first",
    seed: int = 0,
    standardize: bool = True,
    exclude: np.ndarray | None = None,
) -> Dataset:
    """CIFAR-10 from the python-pickle batches in ``path`` (or its ``cifar-10-batches-py``).

    Reads ``data_batch_1`` ... ``data_batch_5`` (train, 50 000 images) or ``test_batch``
    (10 000) and returns images as float32 ``(N, 3, 32, 32)`` with one-hot targets. With
    ``standardize`` (Cohen et al.'s ``cifar.py``) pixels are divided by 255, then every
    feature (pixel and channel) is centred by its mean and divided by its standard deviation
    (``ddof=0``) **over the whole training set**, for either split and before any subset is
    taken, so the first 5000 examples are exactly Cohen et al.'s ``cifar10-5k``. Without it,
    pixels are only divided by 255.

    Args:
        path: the folder holding the batches, or its parent.
        n: number of examples (``None`` for all of the split).
        split: ``"train"`` or ``"test"``.
        subset: ``"first"`` (the first ``n``, as Cohen et al.) or ``"stratified"`` (a
            class-balanced random draw from ``seed``); see :func:`select`.
        seed: the stratified draw's seed.
        standardize: apply the standardisation above.
        exclude: the rows of a training set: return the first ``n`` other rows instead (a
            held-out set from the same files; the statistics are the training set's).

    Raises:
        FileNotFoundError: the folder or one of the six batch files is missing.
        ValueError: a file is not a CIFAR-10 batch, or a bad argument.

    Note:
        The batches are pickles; only plain containers and NumPy arrays are unpickled.
    """
    _check_split(split)
    folder = _cifar_dir(path)
    files = CIFAR10_TRAIN_FILES if split == "train" else CIFAR10_TEST_FILES
    images, labels_all = _read_cifar(folder, files)
    idx = (select(labels_all, n, subset, seed) if exclude is None
           else held_out(len(labels_all), exclude, n))
    x = images[idx].astype(np.float64) / 255.0
    info = {
        "source": "CIFAR-10 python batches",
        "path": str(folder),
        "files": list(files),
        "split": split,
        "subset": subset if exclude is None else "held out: the first rows not in exclude",
        "seed": seed,
        "image_shape": [3, 32, 32],
        "classes": list(CIFAR10_CLASSES),
    }
    if standardize:
        train = images if split == "train" else _read_cifar(folder, CIFAR10_TRAIN_FILES)[0]
        mean, std = _feature_stats(train)
        constant = int(np.sum(std == 0))
        x = (x - mean) / np.where(std > 0, std, 1.0)
        info["standardize"] = (
            "x / 255, then per-feature (pixel and channel) mean removed and divided by the "
            "per-feature std (ddof=0), statistics over the whole training set "
            "(Cohen et al. 2021, cifar.py)"
        )
        info["standardize_stats"] = {
            "over": "train",
            "num_examples": int(train.shape[0]),
            "mean_of_means": float(mean.mean()),
            "mean_of_stds": float(std.mean()),
            "constant_features": constant,
        }
    else:
        info["standardize"] = "x / 255 only"
    labels = labels_all[idx]
    return Dataset(x.astype(np.float32), one_hot(labels, 10), labels, idx, "cifar10", info)


# --------------------------------------------------------------------------- MNIST

_IDX_TYPES = {0x08: np.uint8}


def _open_maybe_gz(folder: Path, name: str) -> Path | None:
    for cand in (folder / name, folder / f"{name}.gz"):
        if cand.is_file():
            return cand
    return None


def _mnist_files(path, split: str) -> tuple[Path, Path]:
    root = _as_dir(path, "load_mnist")
    names = MNIST_FILES[split]
    for sub in MNIST_SUBDIRS:
        found = [_open_maybe_gz(root / sub, name) for name in names]
        if all(f is not None for f in found):
            return found[0], found[1]
    expected = " and ".join(f"{name} (or {name}.gz)" for name in names)
    missing = [name for name in names if _open_maybe_gz(root, name) is None]
    raise FileNotFoundError(
        f"load_mnist: {str(root)!r} lacks {', '.join(missing)}; expected the MNIST {split} "
        f"files {expected} there or in its subfolder 'MNIST/raw' or 'raw'."
    )


def read_idx(file, ndim: int) -> np.ndarray:
    """Read an idx file (optionally gzipped) holding unsigned bytes with ``ndim`` dimensions.

    The header is two zero bytes, a type code (``0x08`` = unsigned byte), the number of
    dimensions, and one big-endian uint32 per dimension; the data follow. The header and the
    file's length are validated.

    >>> import io, gzip, tempfile, os
    >>> raw = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = os.path.join(d, "a.gz")
    ...     with gzip.open(p, "wb") as f:
    ...         _ = f.write(raw)
    ...     read_idx(p, 2).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    file = Path(file)
    opener = gzip.open if file.suffix == ".gz" else open
    bad = f"load_mnist: {str(file)!r} is not an idx file"
    try:
        with opener(file, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{bad} ({err}).") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{bad} (the magic number must start with two zero bytes).")
    if raw[2] not in _IDX_TYPES:
        raise ValueError(f"{bad} (type code {raw[2]:#04x}; expected 0x08, unsigned bytes).")
    if raw[3] != ndim:
        raise ValueError(f"{bad} (it has {raw[3]} dimensions; expected {ndim}).")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{bad} (truncated header).")
    dims = tuple(int(v) for v in np.frombuffer(raw, ">u4", ndim, 4))
    size = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != size:
        raise ValueError(
            f"{bad} (header says {dims} = {size} bytes of data, file has {len(raw) - header})."
        )
    return np.frombuffer(raw, _IDX_TYPES[raw[2]], size, header).reshape(dims)


def _read_mnist(path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    img_file, lab_file = _mnist_files(path, split)
    images = read_idx(img_file, 3)
    labels = read_idx(lab_file, 1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"load_mnist: {img_file.name} has {images.shape[0]} images but {lab_file.name} has "
            f"{labels.shape[0]} labels."
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"load_mnist: {lab_file.name} has labels above 9 ({labels.max()}).")
    return images[:, None], labels.astype(np.int32), [str(img_file), str(lab_file)]


def load_mnist(
    path,
    n: int | None = None,
    *,
    split: str = "train",
    subset: str = "first",
    seed: int = 0,
    standardize: bool = True,
    exclude: np.ndarray | None = None,
) -> Dataset:
    """MNIST from the idx files in ``path`` (each optionally gzipped).

    Reads ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (or the ``t10k-*``
    pair for ``split="test"``), with or without ``.gz``, from ``path`` or its ``MNIST/raw``
    or ``raw`` subfolder (torchvision's layout). Images are float32 ``(N, 1, 28, 28)`` with
    one-hot targets. With ``standardize`` pixels are divided by 255, then centred by the
    global mean and divided by the global standard deviation (``ddof=0``), both single
    numbers over the whole training set (about 0.1307 and 0.3081 for the real data,
    torchvision's usual ``Normalize``). A single scale is used because per-pixel statistics
    blow up MNIST's nearly constant border pixels.

    Args:
        path: the folder with the idx files.
        n: number of examples (``None`` for all of the split).
        split: ``"train"`` or ``"test"``.
        subset: ``"first"`` or ``"stratified"`` (class-balanced draw from ``seed``).
        seed: the stratified draw's seed.
        standardize: apply the standardisation above; otherwise only divide by 255.
        exclude: the rows of a training set: return the first ``n`` other rows instead (a
            held-out set from the same files; the statistics are the training set's).

    Raises:
        FileNotFoundError: the folder or one of the files is missing.
        ValueError: a file is not a valid idx file, or a bad argument.
    """
    _check_split(split)
    images, labels_all, files = _read_mnist(path, split)
    idx = (select(labels_all, n, subset, seed) if exclude is None
           else held_out(len(labels_all), exclude, n))
    x = images[idx].astype(np.float64) / 255.0
    info = {
        "source": "MNIST idx files",
        "files": [Path(f).name for f in files],
        "path": str(Path(files[0]).parent),
        "split": split,
        "subset": subset if exclude is None else "held out: the first rows not in exclude",
        "seed": seed,
        "image_shape": [1, *images.shape[2:]],
    }
    if standardize:
        train = images if split == "train" else _read_mnist(path, "train")[0]
        counts = np.bincount(train.reshape(-1), minlength=256).astype(np.float64)
        values = np.arange(256) / 255.0
        total = counts.sum()
        mean = float(counts @ values / total)
        std = float(np.sqrt(max(counts @ (values - mean) ** 2 / total, 0.0)))
        x = (x - mean) / (std if std > 0 else 1.0)
        info["standardize"] = (
            "x / 255, then the global mean removed and divided by the global std (ddof=0), "
            "one number each over every pixel of the whole training set"
        )
        info["standardize_stats"] = {
            "over": "train", "num_examples": int(train.shape[0]), "mean": mean, "std": std,
        }
    else:
        info["standardize"] = "x / 255 only"
    labels = labels_all[idx]
    return Dataset(x.astype(np.float32), one_hot(labels, 10), labels, idx, "mnist", info)
