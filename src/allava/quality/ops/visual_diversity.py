"""Principle 6 (visual diversity): image embeddings clustered with DBSCAN; number of clusters.

Offline default: an 8x8 colour thumbnail, mean-centred (layout and colour). Real backend: a CLIP
image tower by path or hub id (`model:`), as in the review. Each distinct image file counts once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from allava.quality.base import (
    DatasetOp,
    ImageMemo,
    OpSettings,
    QCRecord,
    Stats,
    by_image_file,
    no_cache,
    per_image,
    register_op,
)
from allava.quality.clusters import cluster_count, dbscan_labels


@dataclass
class VisualDiversitySettings(OpSettings):
    model: str | None = None  # CLIP path / hub id; None = colour thumbnails
    eps: float = 0.05
    min_samples: int = 5
    max_points: int = 20000
    device: str = no_cache("cpu")


def thumbnail_vector(path) -> list[float]:
    from PIL import Image

    with Image.open(path) as im:
        x = np.asarray(im.convert("RGB").resize((8, 8), Image.Resampling.BOX), dtype=np.float32).ravel() / 255.0
    x = x - x.mean()
    n = float(np.linalg.norm(x))
    return (x / n if n > 0 else x).round(4).tolist()


@register_op("visual_diversity")
class VisualDiversity(DatasetOp):
    Settings = VisualDiversitySettings
    needs_image = True

    def __init__(self, settings=None):
        super().__init__(settings)
        self._clip = None

    def features(self, batch: list[QCRecord]) -> list[Any]:
        if self.settings.model is not None and self._clip is None:  # outside the per-image try: a bad path fails loudly
            from allava.quality.ops.clip_match import HFClip

            self._clip = HFClip(self.settings.model, self.settings.device)
        if not hasattr(self, "_memo"):
            self._memo = ImageMemo(copy=False)  # features are only read
        return per_image(batch, lambda r: {"file": str(r.image_file), "vec": self._vector(r)}, self._memo)

    def _vector(self, r: QCRecord) -> list[float]:
        if self._clip is None:
            return thumbnail_vector(r.image_file)
        return self._clip.encode_images([r.image_file])[0].round(4).tolist()

    def finalize(self, features: list[Any]) -> list[Stats]:
        files, vecs = by_image_file(features, "vec")
        if not vecs:
            return [{} for _ in features]
        s = self.settings
        labels = dbscan_labels(np.asarray(vecs, dtype=np.float32), s.eps, s.min_samples, s.max_points)
        return [{"cluster": int(labels[files[f["file"]]]), "image": str(files[f["file"]])} if f is not None else {}
                for f in features]

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        per_image = {s["image"]: s["cluster"] for s in stats if "cluster" in s}
        return {"visual_diversity": cluster_count(list(per_image.values()))} if per_image else {}

    def close(self) -> None:
        self._clip = None
