"""Principle 2 (matching degree), relative: does the answer fit its own image better than others?

Absolute CLIP similarity depends on the CLIP and on the wording (a generic sentence scores low
everywhere), so one global threshold is blunt; the quickstart's tiny CLIP makes this obvious. Here
each record's text (the mean of its chunk embeddings, chunked as in `clip_match`) is compared with
its own image and with `k` other, randomly drawn image files of the dataset: `rank_pct` is the
share of those others that match the text better. An answer swapped from another picture ranks
its own image low (high `rank_pct`) whatever the CLIP's scale. Embeddings are cached per record;
only the ranking (cheap) depends on the whole dataset.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from allava.quality.base import DatasetOp, OpSettings, QCRecord, Stats, by_image_file, no_cache, register_op
from allava.quality.ops.clip_match import ClipScored, embed_chunks


@dataclass
class ClipRankSettings(OpSettings):
    model: str | None = None  # hub id or local path of a CLIP (required)
    field: str = "responses"
    min_words: int = 3
    k: int = 31  # other images each text is compared with
    seed: int = 0
    device: str = no_cache("cpu")
    batch_size: int = no_cache(32)


@register_op("clip_rank")
class ClipRank(ClipScored, DatasetOp):
    Settings = ClipRankSettings
    primary = "rank_pct"
    required = {"model": "a CLIP by hub id or path, e.g. the quickstart's OUT/clip"}

    def __init__(self, settings: ClipRankSettings | None = None, encoder: Any = None):
        super().__init__(settings)
        self.encoder = encoder

    def features(self, batch: list[QCRecord]) -> list[Any]:
        out: list[Any] = [None] * len(batch)
        for i, r, img, chunk_emb in embed_chunks(self._encoder, batch, self._text, self.settings.min_words):
            if not len(chunk_emb):
                continue
            txt = chunk_emb.mean(axis=0)
            txt = txt / (np.linalg.norm(txt) or 1.0)
            out[i] = {"file": str(r.image_file), "img": np.asarray(img).round(4).tolist(), "txt": txt.round(4).tolist()}
        return out

    def finalize(self, features: list[Any]) -> list[Stats]:
        files, imgs = by_image_file(features, "img")
        m = len(imgs)
        out: list[Stats] = [{} for _ in features]
        if m < 2:
            return out
        img = np.asarray(imgs, dtype=np.float32)
        k = min(self.settings.k, m - 1)
        rng = np.random.default_rng(self.settings.seed)
        for i, f in enumerate(features):
            if f is None:
                continue
            own = files[f["file"]]
            others = rng.choice(m - 1, size=k, replace=False)
            others = others + (others >= own)  # skip the record's own image file
            txt = np.asarray(f["txt"], dtype=np.float32)
            s_own = float(img[own] @ txt)
            s_oth = img[others] @ txt
            out[i] = {"rank_pct": float((s_oth > s_own).mean()), "margin": s_own - float(s_oth.mean())}
        return out

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        v = [s["rank_pct"] for s in stats if "rank_pct" in s]
        return {"matching_rank": float(np.mean(v))} if v else {}

    def close(self) -> None:
        self.encoder = None
