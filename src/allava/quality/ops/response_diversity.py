"""Principle 5 (response diversity): responses embedded and clustered with DBSCAN.

Offline default: TF-IDF + TruncatedSVD (scikit-learn). Real backend: any sentence-transformers
model by path or hub id (`model:`; the review uses SimCSE), imported only when asked for. Per
record: `cluster` (-1 = unique) and `nn_sim`, the cosine similarity to the closest other response
(a near-duplicate response scores ~1). Indicator: log of the number of clusters (noise points count
as their own), the review's Table 3 "R".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from allava.quality.base import DatasetOp, OpSettings, QCRecord, Stats, no_cache, register_op
from allava.quality.clusters import dbscan_labels, log_clusters, nearest_similarity


@dataclass
class ResponseDiversitySettings(OpSettings):
    model: str | None = None  # sentence-transformers path / hub id; None = TF-IDF + SVD
    dims: int = 64
    eps: float = 0.1
    min_samples: int = 5
    max_points: int = 20000
    device: str = no_cache("cpu")


def tfidf_svd(texts: list[str], dims: int, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    tf = TfidfVectorizer(sublinear_tf=True, min_df=1, token_pattern=r"(?u)\b\w+\b").fit_transform(texts)
    k = min(dims, tf.shape[1] - 1, len(texts) - 1)
    x = TruncatedSVD(k, random_state=seed).fit_transform(tf) if k >= 1 else tf.toarray()
    return normalize(x)


@register_op("response_diversity")
class ResponseDiversity(DatasetOp):
    Settings = ResponseDiversitySettings
    primary = "nn_sim"

    def __init__(self, settings=None):
        super().__init__(settings)
        self._st = None

    def features(self, batch: list[QCRecord]) -> list[Any]:
        texts = ["\n".join(r.responses)[:4000] for r in batch]
        if self.settings.model is None:
            return texts
        if self._st is None:
            from sentence_transformers import SentenceTransformer  # the real backend, optional

            self._st = SentenceTransformer(self.settings.model, device=self.settings.device)
        return self._st.encode(texts, normalize_embeddings=True).tolist()

    def finalize(self, features: list[Any]) -> list[Stats]:
        if not features:
            return []
        s = self.settings
        x = tfidf_svd(features, s.dims) if s.model is None else np.asarray(features, dtype=np.float32)
        labels = dbscan_labels(x, s.eps, s.min_samples, s.max_points)
        nn = nearest_similarity(x)
        return [{"cluster": int(c), "nn_sim": float(v)} for c, v in zip(labels, nn)]

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        v = log_clusters([s.get("cluster") for s in stats if "cluster" in s])
        return {"response_diversity": v} if v is not None else {}

    def close(self) -> None:
        self._st = None
