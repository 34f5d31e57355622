"""DBSCAN over unit vectors, shared by the diversity operators; sized to stay flat at scale."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def dbscan_labels(x: np.ndarray, eps: float, min_samples: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Cluster labels (-1 = noise) for unit-norm rows, cosine distance `eps`.

    Above `max_points` rows a random sample is clustered and every other row joins the cluster of its
    nearest sampled row when that row is within `eps` (noise otherwise): DBSCAN's neighbourhoods are
    quadratic on templated data, the sample keeps the cost flat.
    """
    if len(x) == 0:
        return np.zeros(0, dtype=int)
    rows, first, inverse, counts = unique_rows(x)
    return _dbscan(rows, counts, eps, min_samples, max_points, seed)[inverse]


def unique_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct rows in order of first occurrence, their first index, each row's distinct row, counts.

    Templated data repeats itself (10K quickstart short-VQA records have 1,251 distinct responses):
    DBSCAN over the distinct rows weighted by their counts gives every copy the same label as DBSCAN
    over all rows (same weighted neighbourhoods, clusters found in the same order), without the
    quadratic neighbour lists of the copies (2 GB at 10K records)."""
    _, first, inverse, counts = np.unique(x, axis=0, return_index=True, return_inverse=True, return_counts=True)
    order = np.argsort(first, kind="stable")  # first-occurrence order, so cluster ids are numbered as before
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return x[first[order]], first[order], rank[inverse.reshape(-1)], counts[order]


def _dbscan(x: np.ndarray, weight: np.ndarray, eps: float, min_samples: int, max_points: int, seed: int) -> np.ndarray:
    from sklearn.cluster import DBSCAN
    from sklearn.neighbors import NearestNeighbors

    n = len(x)
    idx = np.arange(n) if n <= max_points else np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    labels = np.full(n, -1, dtype=int)
    labels[idx] = DBSCAN(eps=eps, min_samples=min_samples, metric="cosine", algorithm="brute").fit_predict(
        x[idx], sample_weight=weight[idx])
    if len(idx) < n:
        rest = np.setdiff1d(np.arange(n), idx)
        nn = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute").fit(x[idx])
        d, j = nn.kneighbors(x[rest])
        labels[rest] = np.where(d[:, 0] <= eps, labels[idx][j[:, 0]], -1)
    return labels


def nearest_similarity(x: np.ndarray, block: int = 1024) -> np.ndarray:
    """Cosine similarity of each unit row to its most similar other row, exact.

    Over the distinct rows only (`unique_rows`): a row that occurs twice has its copy as nearest
    other row, whose similarity is its own dot product, so only a row that occurs once has its
    diagonal masked. Tiles of `block` x `block` keep memory flat; the old row-chunk x all-rows
    matrix was 1.6 GB at 100K rows, and templated data (10K quickstart records: 1,251 distinct
    responses) costs the square of its distinct rows, not of its records.
    """
    n = len(x)
    out = np.full(n, np.nan)
    if n < 2:
        return out
    rows, _, inverse, counts = unique_rows(x)
    m = len(rows)
    best = np.full(m, -np.inf)
    for s in range(0, m, block):
        a = rows[s:s + block]
        for t in range(0, m, block):
            sims = a @ rows[t:t + block].T
            if s == t:
                diag = np.arange(len(a))
                sims[diag, diag] = np.where(counts[s:s + len(a)] > 1, sims[diag, diag], -np.inf)
            np.maximum(best[s:s + block], sims.max(axis=1), out=best[s:s + block])
    out[:] = best[inverse]
    return out


def cluster_count(labels: list[Any]) -> int:
    """Clusters plus noise points (each noise point is its own, unique, semantic cluster)."""
    real = {lab for lab in labels if lab is not None and lab != -1 and lab != "-1"}
    noise = sum(1 for lab in labels if lab == -1 or lab == "-1")
    return len(real) + noise


def log_clusters(labels: list[Any]) -> float | None:
    n = cluster_count(labels)
    return math.log(n) if n else None
