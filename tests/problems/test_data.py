"""Subsets, the digits loader's provenance, and the synthetic data sets."""

import numpy as np
import pytest

from eosflow.problems import gaussian_clusters, load_digits, select, teacher_student


def test_first_n_is_a_prefix():
    labels = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3])
    np.testing.assert_array_equal(select(labels, 4, "first", 0), np.arange(4))
    np.testing.assert_array_equal(select(labels, None, "first", 0), np.arange(10))


def test_stratified_is_proportional_sorted_unique_and_seeded():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(4), [50, 30, 15, 5]))  # 100 rows
    idx = select(labels, 40, "stratified", seed=1)
    assert len(idx) == 40 and len(np.unique(idx)) == 40 and np.all(np.diff(idx) > 0)
    counts = np.bincount(labels[idx], minlength=4)
    np.testing.assert_array_equal(counts, [20, 12, 6, 2])  # exactly 40% of each class
    np.testing.assert_array_equal(idx, select(labels, 40, "stratified", seed=1))
    assert not np.array_equal(idx, select(labels, 40, "stratified", seed=2))
    # Quotas that do not divide evenly differ from n * share by less than one.
    counts = np.bincount(labels[select(labels, 7, "stratified", seed=0)], minlength=4)
    assert counts.sum() == 7 and np.all(np.abs(counts - 7 * np.array([.5, .3, .15, .05])) < 1)


def test_select_errors():
    labels = np.zeros(5, int)
    with pytest.raises(ValueError, match="exceeds the 5 examples"):
        select(labels, 6, "first", 0)
    with pytest.raises(ValueError, match="must be positive"):
        select(labels, 0, "first", 0)
    with pytest.raises(ValueError, match="'first' or 'stratified'"):
        select(labels, 2, "random", 0)


def test_digits_records_indices_and_standardisation():
    data = load_digits(30, subset="stratified", seed=4)
    assert data.x.shape == (30, 64) and data.info["image_shape"] == [1, 8, 8]
    assert np.bincount(data.labels, minlength=10).tolist() == [3] * 10
    raw = load_digits(standardize_inputs=False)
    np.testing.assert_array_equal(data.labels, raw.labels[data.indices])
    sub = raw.x[data.indices].astype(np.float64)
    centred = sub - sub.mean(axis=0)
    np.testing.assert_allclose(data.x, centred / centred.std(), rtol=1e-5, atol=1e-5)
    assert data.info["standardize_stats"] == "over the 30 selected examples"


def test_teacher_student_is_seeded_regression_with_the_stated_noise():
    a = teacher_student(2000, d=5, k=2, teacher_widths=(7, 3), seed=3)
    b = teacher_student(2000, d=5, k=2, teacher_widths=(7, 3), seed=3)
    c = teacher_student(2000, d=5, k=2, teacher_widths=(7, 3), seed=4)
    noisy = teacher_student(2000, d=5, k=2, teacher_widths=(7, 3), noise=0.5, seed=3)
    assert a.x.shape == (2000, 5) and a.y.shape == (2000, 2) and a.labels.size == 0
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.allclose(a.y, c.y)
    np.testing.assert_array_equal(noisy.x, a.x)  # same inputs and teacher, only noise added
    assert np.std(noisy.y - a.y) == pytest.approx(0.5, rel=0.05)
    assert np.std(a.x) == pytest.approx(1.0, rel=0.05)
    assert a.info["teacher"].startswith("MLP [5, 7, 3, 2]")
    with pytest.raises(ValueError, match="teacher_widths"):
        teacher_student(10, teacher_widths=(0,))


@pytest.mark.parametrize("d, num_classes, geometry", [(4, 3, "simplex"), (2, 5, "circle")])
def test_gaussian_clusters_are_balanced_and_separated(d, num_classes, geometry):
    data = gaussian_clusters(4001, d=d, num_classes=num_classes, separation=5.0, seed=2)
    counts = np.bincount(data.labels)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 4001
    np.testing.assert_array_equal(data.y, np.eye(num_classes)[data.labels])
    means = np.stack([data.x[data.labels == c].mean(axis=0) for c in range(num_classes)])
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1)
    if geometry == "simplex":  # every pair `separation` apart
        off = dist[~np.eye(num_classes, dtype=bool)]
        np.testing.assert_allclose(off, 5.0, atol=0.25)
    else:  # on a circle: the nearest other mean is `separation` away
        nearest = np.sort(dist, axis=1)[:, 1]
        np.testing.assert_allclose(nearest, 5.0, atol=0.25)
    within = data.x - means[data.labels]
    assert np.std(within) == pytest.approx(1.0, rel=0.05)
    again = gaussian_clusters(4001, d=d, num_classes=num_classes, separation=5.0, seed=2)
    np.testing.assert_array_equal(again.x, data.x)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        gaussian_clusters(10, num_classes=1)


def test_digits_are_scikit_learns_pixels_and_labels():
    """eosflow reads scikit-learn's digits.csv.gz itself (importing scikit-learn takes
    seconds); the arrays are those of sklearn.datasets.load_digits."""
    from sklearn.datasets import load_digits as sk_digits

    raw, ref = load_digits(standardize_inputs=False), sk_digits()
    np.testing.assert_array_equal(raw.x, ref.data.astype(np.float32))
    np.testing.assert_array_equal(raw.labels, ref.target)
