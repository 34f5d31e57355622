"""dbscan_labels collapses repeated rows (weighted) and must label every row as plain DBSCAN does
(sklearn.cluster.DBSCAN, metric cosine, brute force: the reference)."""
from __future__ import annotations

import numpy as np
from sklearn.cluster import DBSCAN

from allava.quality.clusters import dbscan_labels, unique_rows


def _templated(seed: int, distinct: int = 150, n: int = 900) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(distinct, 6))
    base[distinct // 2:] = base[: distinct - distinct // 2] + 0.05 * rng.normal(size=(distinct - distinct // 2, 6))
    x = base[rng.integers(0, distinct, n)]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_labels_identical_to_dbscan_on_all_rows():
    for seed in range(4):
        x = _templated(seed)
        for eps, min_samples in ((0.05, 5), (0.2, 3), (0.01, 12)):
            ref = DBSCAN(eps=eps, min_samples=min_samples, metric="cosine", algorithm="brute").fit_predict(x)
            got = dbscan_labels(x, eps, min_samples, max_points=20000)
            assert np.array_equal(got, ref), (seed, eps, min_samples)
            assert len(set(ref)) > 2  # clusters and noise, not one blob


def test_tiled_dbscan_equals_sklearn_weighted_and_in_float32():
    """dbscan_tiled = sklearn's DBSCAN (cosine, brute, sample weights) for tiles smaller than the
    data, weights from repeats, float32 rows that are not quite unit norm (visual_diversity's rounded
    thumbnails), and the eps / min_samples that give all noise or one cluster."""
    from allava.quality.clusters import dbscan_tiled

    rng = np.random.default_rng(7)
    for seed in range(3):
        x = _templated(seed, distinct=120, n=120)
        w = rng.integers(1, 6, size=len(x))
        for eps, min_samples in ((0.05, 5), (0.2, 3), (0.01, 12), (1e-9, 2), (1.5, 3)):
            ref = DBSCAN(eps=eps, min_samples=min_samples, metric="cosine", algorithm="brute").fit_predict(
                x, sample_weight=w)
            for block in (16, 50, 1024):
                got = dbscan_tiled(x, w, eps, min_samples, block=block)
                assert np.array_equal(got, ref), (seed, eps, min_samples, block)
    y = np.round(_templated(9, distinct=80, n=200), 4).astype(np.float32)
    ref = DBSCAN(eps=0.05, min_samples=5, metric="cosine", algorithm="brute").fit_predict(y)
    assert np.array_equal(dbscan_tiled(y, np.ones(len(y)), 0.05, 5, block=32), ref)
    assert len(set(ref)) > 2


def test_unique_rows_first_occurrence_order():
    x = np.array([[1.0, 0], [0, 1], [1, 0], [0.5, 0.5], [0, 1]])
    rows, first, inverse, counts = unique_rows(x)
    assert first.tolist() == [0, 1, 3] and counts.tolist() == [2, 2, 1]
    assert np.array_equal(rows[inverse], x)


def _brute_nearest(x: np.ndarray) -> np.ndarray:
    """The definition, on all rows: the full similarity matrix, own row masked, max per row."""
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    return sims.max(axis=1)


def test_nearest_similarity_equals_brute_force():
    """Tiled over distinct rows (any block size, blocks not dividing the row count) = brute force on
    all rows, including rows whose nearest other row is their own copy (similarity 1)."""
    from allava.quality.clusters import nearest_similarity

    for seed in range(3):
        x = _templated(seed, distinct=97, n=400)
        ref = _brute_nearest(x)
        for block in (7, 64, 1024):
            got = nearest_similarity(x, block=block)
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
        counts = np.unique(x, axis=0, return_counts=True)[1]
        assert (counts == 1).any() and (counts > 1).any()  # both cases are exercised
    rng = np.random.default_rng(5)
    y = rng.normal(size=(50, 4))
    y /= np.linalg.norm(y, axis=1, keepdims=True)  # all distinct: no row is 1.0
    np.testing.assert_allclose(nearest_similarity(y, block=8), _brute_nearest(y), rtol=0, atol=1e-12)
    assert nearest_similarity(y, block=8).max() < 1 - 1e-6
    assert np.isnan(nearest_similarity(y[:1])).all() and nearest_similarity(y[:0]).shape == (0,)
