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

from allava.quality.base import DatasetOp, OpSettings, QCRecord, Stats, no_cache, register_op
from allava.quality.ops.clip_match import HFClip, chunk_text


@dataclass
class ClipRankSettings(OpSettings):
    model: str = "runs/quickstart/clip"
    field: str = "responses"
    min_words: int = 3
    k: int = 31  # other images each text is compared with
    seed: int = 0
    device: str = no_cache("cpu")
    batch_size: int = no_cache(32)


@register_op("clip_rank")
class ClipRank(DatasetOp):
    Settings = ClipRankSettings
    primary = "rank_pct"

    def __init__(self, settings: ClipRankSettings | None = None, encoder: Any = None):
        super().__init__(settings)
        self.encoder = encoder

    def _text(self, r: QCRecord) -> str:
        return "\n".join(r.responses) if self.settings.field == "responses" else r.text()

    def features(self, batch: list[QCRecord]) -> list[Any]:
        out: list[Any] = [None] * len(batch)
        todo = [(i, r) for i, r in enumerate(batch)
                if r.image_file is not None and len(self._text(r).split()) >= self.settings.min_words]
        if not todo:
            return out
        if self.encoder is None:
            self.encoder = HFClip(self.settings.model, self.settings.device)
        enc = self.encoder
        try:
            imgs, ok = list(enc.encode_images([r.image_file for _, r in todo])), todo
        except Exception:  # noqa: BLE001 - one unreadable image: encode one by one, skip the bad ones
            imgs, ok = [], []
            for i, r in todo:
                try:
                    imgs.append(enc.encode_images([r.image_file])[0])
                    ok.append((i, r))
                except Exception:  # noqa: BLE001, S112 - unreadable images are image_readability's business
                    continue
        chunks = [chunk_text(self._text(r), enc.token_ids, enc.max_tokens, self.settings.min_words) for _, r in ok]
        flat = [c for cs in chunks for c in cs]
        if not flat:
            return out
        emb = np.concatenate([enc.encode_texts(flat[j:j + 256]) for j in range(0, len(flat), 256)])
        pos = 0
        for (i, r), img, cs in zip(ok, imgs, chunks):
            if not cs:
                continue
            txt = emb[pos:pos + len(cs)].mean(axis=0)
            pos += len(cs)
            txt = txt / (np.linalg.norm(txt) or 1.0)
            out[i] = {"file": str(r.image_file), "img": np.asarray(img).round(4).tolist(), "txt": txt.round(4).tolist()}
        return out

    def finalize(self, features: list[Any]) -> list[Stats]:
        files: dict[str, int] = {}
        imgs = []
        for f in features:
            if f is not None and f["file"] not in files:
                files[f["file"]] = len(imgs)
                imgs.append(f["img"])
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
