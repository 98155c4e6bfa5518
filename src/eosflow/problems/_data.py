"""Datasets: scikit-learn's digits, synthetic sets, and (from user-named files) CIFAR-10 and MNIST.

Every loader returns a :class:`Dataset` of host (NumPy) arrays with the indices it used and a
description of its preprocessing, so a run can record exactly which examples it trained on.
Nothing here downloads anything.
"""

from dataclasses import dataclass, field

import numpy as np


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
    picked = [rng.choice(np.flatnonzero(labels == c), q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked))


def standardize(x: np.ndarray, axis: tuple[int, ...]) -> tuple[np.ndarray, dict]:
    """Centre by the mean over ``axis`` and divide by the std over ``axis`` (Cohen et al.)."""
    mean = x.mean(axis=axis, keepdims=True)
    std = x.std(axis=axis, keepdims=True)
    std = np.where(std > 0, std, 1.0)
    return ((x - mean) / std).astype(np.float32), {"standardize": f"mean/std over axes {axis}"}


def load_digits(
    n: int | None = None, *, subset: str = "first", seed: int = 0, standardize_inputs: bool = True
) -> Dataset:
    """scikit-learn's 8x8 digits (1797 examples, 10 classes), bundled with scikit-learn.

    Inputs are centred per pixel and scaled by the global standard deviation (pixels that are
    always zero stay zero).
    """
    try:
        from sklearn.datasets import load_digits as _sk_digits
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "the digits dataset comes from scikit-learn: pip install 'eosflow[data]'"
        ) from err
    raw = _sk_digits()
    x_all = raw.data.astype(np.float64)
    labels_all = raw.target.astype(np.int32)
    idx = select(labels_all, n, subset, seed)
    x = x_all[idx]
    info = {"source": "sklearn.datasets.load_digits", "subset": subset, "seed": seed}
    if standardize_inputs:
        x = x - x.mean(axis=0, keepdims=True)
        x = (x / x.std()).astype(np.float32)
        info["standardize"] = "per-pixel mean removed, divided by the global std"
    labels = labels_all[idx]
    return Dataset(x.astype(np.float32), one_hot(labels, 10), labels, idx, "digits", info)
