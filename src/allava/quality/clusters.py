"""DBSCAN over unit vectors, shared by the diversity operators; sized to stay flat at scale."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def dbscan_labels(x: np.ndarray, eps: float, min_samples: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Cluster labels (-1 = noise) for unit-norm rows, cosine distance `eps`.

    Exactly sklearn's DBSCAN labels (`dbscan_tiled`). Above `max_points` distinct rows a random sample is clustered and every other row joins the cluster of its
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
    from sklearn.neighbors import NearestNeighbors

    n = len(x)
    idx = np.arange(n) if n <= max_points else np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    labels = np.full(n, -1, dtype=int)
    labels[idx] = dbscan_tiled(x[idx], weight[idx], eps, min_samples)
    if len(idx) < n:
        rest = np.setdiff1d(np.arange(n), idx)
        nn = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute").fit(x[idx])
        d, j = nn.kneighbors(x[rest])
        labels[rest] = np.where(d[:, 0] <= eps, labels[idx][j[:, 0]], -1)
    return labels


def _tiles(n: int, block: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + block)) for s in range(0, n, block)]


def dbscan_tiled(x: np.ndarray, weight: np.ndarray, eps: float, min_samples: int, block: int = 1024) -> np.ndarray:
    """sklearn's `DBSCAN(eps, min_samples, metric="cosine", algorithm="brute").fit_predict(x,
    sample_weight=weight)`, the same labels, in tiles of `block` x `block` similarities.

    sklearn keeps every point's neighbour list (quadratic memory on templated data: 3 GB and 12 s
    for 10,932 distinct responses of 100K records). The labels need less: a point is core when the
    weight within `eps` reaches `min_samples`; clusters are the connected components of core points
    (their core-core edges), numbered in order of their lowest index (sklearn's outer loop starts
    each cluster at its first unlabelled core point); a border point takes the lowest-numbered
    cluster among its core neighbours (that cluster's expansion reaches it first), others are noise
    (-1). Three passes over the tiles: weights, core-core components (union-find), border labels.
    Distances as sklearn's `cosine_distances`: rows renormalised, 1 - dot, clipped to [0, 2],
    neighbours within `eps` as seen from the row's side (sklearn's radius_neighbors)."""
    from sklearn.preprocessing import normalize

    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    xn = normalize(x)
    w = np.asarray(weight, dtype=np.float64)
    tiles = _tiles(n, block)

    def near(a: tuple[int, int], b: tuple[int, int]) -> np.ndarray:
        d = xn[a[0]:a[1]] @ xn[b[0]:b[1]].T
        d *= -1
        d += 1
        return np.clip(d, 0.0, 2.0) <= eps

    counts = np.zeros(n)
    for a in tiles:
        for b in tiles:
            counts[a[0]:a[1]] += near(a, b) @ w[b[0]:b[1]]
    core = counts >= min_samples
    parent = np.arange(n)

    def roots(i: np.ndarray) -> np.ndarray:
        while True:
            p = parent[i]
            if np.array_equal(p, i):
                return i
            i = p

    for a in tiles:
        ca = np.flatnonzero(core[a[0]:a[1]]) + a[0]
        if not len(ca):
            continue
        for b in tiles:
            cb = np.flatnonzero(core[b[0]:b[1]]) + b[0]
            if not len(cb):
                continue
            i, j = np.nonzero(near(a, b)[ca - a[0]][:, cb - b[0]])
            if not len(i):
                continue
            ri, rj = roots(ca[i]), roots(cb[j])
            for u, v in np.unique(np.stack([ri, rj], 1)[ri != rj], axis=0).tolist():
                while parent[u] != u:
                    u = parent[u]
                while parent[v] != v:
                    v = parent[v]
                if u != v:
                    parent[max(u, v)] = min(u, v)  # a component's root is its lowest index
            while not np.array_equal(parent, parent[parent]):
                parent = parent[parent]
    labels = np.full(n, -1, dtype=np.intp)
    if not core.any():
        return labels
    root = roots(np.arange(n))
    firsts = np.unique(root[core])  # each component's lowest index, ascending: sklearn's cluster order
    number = np.full(n, -1, dtype=np.intp)
    number[firsts] = np.arange(len(firsts))
    labels[core] = number[root[core]]
    border = np.flatnonzero(~core)
    if len(border):
        big = np.iinfo(np.intp).max
        best = np.full(n, big, dtype=np.intp)
        for a in tiles:
            ca = np.flatnonzero(core[a[0]:a[1]]) + a[0]
            if not len(ca):
                continue
            for b in tiles:
                nb = np.flatnonzero(~core[b[0]:b[1]]) + b[0]
                if not len(nb):
                    continue
                hit = near(a, b)[ca - a[0]][:, nb - b[0]]
                lab = np.where(hit, labels[ca][:, None], big).min(axis=0)
                best[nb] = np.minimum(best[nb], lab)
        labels[border] = np.where(best[border] == big, -1, best[border])
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
