"""Datasets: scikit-learn's digits, synthetic sets, and (from user-named files) CIFAR-10 and MNIST.

Every loader returns a :class:`Dataset` of host (NumPy) arrays with the indices it used and a
description of its preprocessing, so a run can record exactly which examples it trained on.
Nothing here downloads anything.
"""

import gzip
import importlib.util
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._errors import check_int


@dataclass(frozen=True)
class Dataset:
    """Inputs, one-hot targets, integer labels, and the provenance of every row."""

    x: np.ndarray  # (N, ...) float
    y: np.ndarray  # (N, C) float targets (one-hot for classification)
    labels: np.ndarray  # (N,) int, or empty for regression
    indices: np.ndarray  # (N,) rows of the source that were used, in order
    name: str
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(N,)`` integer labels to ``(N, num_classes)`` float32 one-hot rows."""
    return np.eye(num_classes, dtype=np.float32)[labels]


def select(labels: np.ndarray, n: int | None, subset: str, seed: int) -> np.ndarray:
    """Row indices: the first ``n`` (``subset="first"``), or a class-stratified random draw."""
    total = labels.shape[0]
    if n is None or n >= total:
        if n is not None and n > total:
            raise ValueError(f"n = {n} exceeds the {total} examples available.")
        return np.arange(total)
    if n < 1:
        raise ValueError(f"n must be positive, got {n}.")
    if subset == "first":
        return np.arange(n)
    if subset != "stratified":
        raise ValueError(f"subset must be 'first' or 'stratified', got {subset!r}.")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts / total * n).astype(int)
    order = np.argsort(-(counts / total * n - quota), kind="stable")
    quota[order[: n - quota.sum()]] += 1
    picked = [
        rng.choice(np.flatnonzero(labels == c), q, replace=False)
        for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(picked))


def held_out(total: int, exclude: np.ndarray, n: int | None) -> np.ndarray:
    """The first ``n`` rows of ``range(total)`` not in ``exclude`` (all of them for None): a
    held-out set disjoint from the training rows ``exclude``, in source order."""
    rest = np.setdiff1d(np.arange(total), np.asarray(exclude, np.int64))
    if n is not None and n > len(rest):
        raise ValueError(f"test_examples = {n} exceeds the {len(rest)} examples left after "
                         "the training subset")
    return rest if n is None else rest[:n]


def standardize(x: np.ndarray, axis: tuple[int, ...]) -> tuple[np.ndarray, dict]:
    """Centre by the mean over ``axis`` and divide by the std over ``axis`` (Cohen et al.)."""
    mean = x.mean(axis=axis, keepdims=True)
    std = x.std(axis=axis, keepdims=True)
    std = np.where(std > 0, std, 1.0)
    return ((x - mean) / std).astype(np.float32), {"standardize": f"mean/std over axes {axis}"}


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as ``float64 (1797, 64)`` pixels and ``int32`` labels, read from the
    ``digits.csv.gz`` that scikit-learn ships, without importing scikit-learn (which takes
    2–3 s: most of a small run's start-up); through ``sklearn.datasets.load_digits`` if
    the file is not where scikit-learn keeps it."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise ImportError("the digits dataset comes from scikit-learn: "
                          "pip install 'eosflow[data]'")
    file = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if file.is_file():
        with gzip.open(file, "rt") as f:
            table = np.loadtxt(f, delimiter=",")
        return table[:, :-1], table[:, -1].astype(np.int32)
    from sklearn.datasets import load_digits as sk_digits  # pragma: no cover

    raw = sk_digits()  # pragma: no cover
    return raw.data.astype(np.float64), raw.target.astype(np.int32)  # pragma: no cover


def load_digits(
    n: int | None = None, *, subset: str = "first", seed: int = 0, standardize_inputs: bool = True,
    exclude: np.ndarray | None = None,
) -> Dataset:
    """scikit-learn's 8x8 digits (1797 examples, 10 classes), bundled with scikit-learn.

    Inputs are centred per pixel and scaled by the global standard deviation (pixels that are
    always zero stay zero), statistics over the selected rows. With ``exclude`` (the rows of a
    training set) the result is a held-out set: the first ``n`` other rows, standardised with
    the statistics of the ``exclude`` rows (the training set's).
    """
    x_all, labels_all = _digits_arrays()
    if exclude is None:
        idx = stats_rows = select(labels_all, n, subset, seed)
        info = {"source": "sklearn.datasets.load_digits", "subset": subset, "seed": seed}
    else:
        idx, stats_rows = held_out(len(labels_all), exclude, n), np.asarray(exclude)
        info = {"source": "sklearn.datasets.load_digits",
                "subset": "held out: the first rows not in the training subset"}
    x = x_all[idx]
    if standardize_inputs:
        ref = x_all[stats_rows]
        mean = ref.mean(axis=0, keepdims=True)
        x = ((x - mean) / (ref - mean).std()).astype(np.float32)
        info["standardize"] = "per-pixel mean removed, divided by the global std"
        info["standardize_stats"] = (f"over the {len(stats_rows)} selected examples" if exclude
                                     is None else f"over the {len(stats_rows)} training examples")
    info["image_shape"] = [1, 8, 8]
    labels = labels_all[idx]
    return Dataset(x.astype(np.float32), one_hot(labels, 10), labels, idx, "digits", info)


def teacher_student(
    n: int = 1000,
    d: int = 20,
    k: int = 1,
    *,
    teacher_widths: tuple[int, ...] = (20,),
    noise: float = 0.0,
    seed: int = 0,
) -> Dataset:
    """Regression on the outputs of a random tanh teacher network.

    Inputs $x_i \\sim \\mathcal N(0, I_d)$; the teacher is an MLP
    ``d -> teacher_widths... -> k`` with tanh hidden layers, weights
    $\\mathcal N(0, 1/\\text{fan in})$ and zero biases; targets are its outputs plus
    ``noise`` times standard normal noise. Everything is drawn from ``seed``. The dataset has
    no class labels (``labels`` is empty), so only regression losses apply.

    >>> data = teacher_student(5, d=3, k=2, teacher_widths=(4,), seed=1)
    >>> data.x.shape, data.y.shape, data.labels.shape, data.indices.tolist()
    ((5, 3), (5, 2), (0,), [0, 1, 2, 3, 4])
    """
    n, d, k = check_int("n", n), check_int("d", d), check_int("k", k)
    widths = tuple(check_int("teacher_widths", w) for w in teacher_widths)
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}.")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    h = x
    sizes = [d, *widths, k]
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        h = h @ (rng.standard_normal((a, b)) / np.sqrt(a))
        if i < len(sizes) - 2:
            h = np.tanh(h)
    y = h + noise * rng.standard_normal(h.shape)
    info = {
        "source": "synthetic teacher-student regression",
        "x": f"i.i.d. N(0, I_{d})",
        "teacher": f"MLP {sizes}, tanh hidden layers, weights N(0, 1/fan_in), zero biases",
        "noise": float(noise),
        "seed": seed,
        "subset": "generated",
    }
    return Dataset(
        x.astype(np.float32), y.astype(np.float32), np.zeros(0, np.int32), np.arange(n),
        "teacher_student", info,
    )


def _cluster_means(d: int, num_classes: int, separation: float, rng) -> tuple[np.ndarray, str]:
    if d >= num_classes - 1:
        # Vertices of a regular simplex (pairwise distance `separation`), randomly rotated.
        centred = np.eye(num_classes) - 1.0 / num_classes
        basis = np.linalg.svd(centred)[2][: num_classes - 1]  # orthonormal rows spanning it
        coords = centred @ basis.T * (separation / np.sqrt(2.0))
        rule = f"vertices of a regular simplex, pairwise distance {separation}"
    else:
        # Too few dimensions for a simplex: equally spaced on a circle, neighbours `separation`.
        angles = 2 * np.pi * np.arange(num_classes) / num_classes
        radius = separation / (2 * np.sin(np.pi / num_classes))
        coords = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        rule = f"equally spaced on a circle, neighbouring distance {separation}"
    q = np.linalg.qr(rng.standard_normal((d, d)))[0][:, : coords.shape[1]]
    return coords @ q.T, rule + ", randomly rotated"


def gaussian_clusters(
    n: int = 1000,
    d: int = 2,
    num_classes: int = 3,
    *,
    separation: float = 3.0,
    seed: int = 0,
) -> Dataset:
    """Classification of isotropic Gaussian clusters, one per class, balanced.

    Class means are the vertices of a regular simplex with pairwise distance ``separation``
    when ``d >= num_classes - 1`` (equally spaced points on a circle, neighbours
    ``separation`` apart, otherwise), randomly rotated; each point is its class mean plus
    $\\mathcal N(0, I_d)$ noise. Labels are ``0, 1, ..., num_classes - 1`` repeated (so the
    classes differ in size by at most one) and shuffled; everything is drawn from ``seed``.

    >>> data = gaussian_clusters(7, d=2, num_classes=3, seed=0)
    >>> data.x.shape, data.y.shape, sorted(data.labels.tolist())
    ((7, 2), (7, 3), [0, 0, 0, 1, 1, 2, 2])
    """
    n, d = check_int("n", n), check_int("d", d)
    num_classes = check_int("num_classes", num_classes, 2)
    if not separation > 0:
        raise ValueError(f"separation must be positive, got {separation!r}.")
    rng = np.random.default_rng(seed)
    means, rule = _cluster_means(d, num_classes, float(separation), rng)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int32)
    x = means[labels] + rng.standard_normal((n, d))
    info = {
        "source": "synthetic Gaussian clusters",
        "means": rule,
        "noise": f"N(0, I_{d}) around each mean",
        "num_classes": num_classes,
        "seed": seed,
        "subset": "generated",
    }
    return Dataset(
        x.astype(np.float32), one_hot(labels, num_classes), labels, np.arange(n),
        "gaussian_clusters", info,
    )
