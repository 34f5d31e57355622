"""Principle 1 (readability), images: decodable, big enough, sharp, well exposed.

`blur` is the classic variance of the Laplacian (low = blurry), but it also falls when a sharp
picture simply has few edges (one small shape on a plain background). `sharpness` divides the
Laplacian energy by the gradient energy: a step edge blurred by sigma keeps its gradient energy
~1/sigma but loses Laplacian energy ~1/sigma^3, so the ratio measures blur whatever the content
(quickstart images: >= 0.033 sharp, <= 0.026 after a 1-pixel Gaussian blur). Exposure is the mean
luma and contrast its standard deviation. These numbers are the cheap, dependency-free default;
`iqa_model` adds the review's kind of judgement, a learned no-reference IQA model (MANIQA there;
any transformers image classifier or regressor here, see `allava.quality.iqa`), as the `iqa` stat.

Two more measures catch what a scraped pool or a careless resize does, which blur and exposure
miss: `jpeg_ghost` (a JPEG "ghost", Farid 2009: an image already compressed at a low quality hardly
changes when recompressed at that quality, so the smallest change over qualities 3-12, per unit of
gradient, is near 0 for a heavily compressed image; quickstart: clean >= 0.43, JPEG q4-10 <= 0.06)
and `detail` (the error of rebuilding the image from a 3-8x smaller copy, per unit of gradient:
a thumbnail scaled back up holds no more detail than the thumbnail; clean >= 0.45, upscaled
nearest-neighbour <= 0.15). Both are None on flat images (no gradient to measure against).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from allava.quality.base import ImageMemo, Op, OpSettings, QCRecord, Stats, no_cache, register_op
from allava.quality.images import compression_stats, gray, laplacian, load_rgb, sobel_magnitude


@dataclass
class ImageReadabilitySettings(OpSettings):
    max_side: int = 512  # analyse at most this resolution (blur depends on scale, so it is in the cache key)
    iqa_model: str | None = None  # hub id or local path of an IQA model (image classifier / regressor)
    iqa_label: str | None = None  # its label meaning "good" (multi-label heads with non-numeric labels)
    iqa_backend: str = "transformers"  # how iqa_model is loaded: a name registered in allava.quality.iqa
    compression: bool = True  # jpeg_ghost and detail (about 3 ms per image at 96 px)
    device: str = no_cache("cpu")


@register_op("image_readability")
class ImageReadability(Op):
    Settings = ImageReadabilitySettings
    primary = "sharpness"
    VERSION = "3"
    needs_image = True
    optional_stats = ("jpeg_ghost", "detail", "iqa")  # none on flat images; iqa only with iqa_model

    def __init__(self, settings: ImageReadabilitySettings | None = None):
        super().__init__(settings)
        self.iqa: Any = None  # loaded on the first batch with a readable image
        self._memo = ImageMemo()

    def compute(self, batch: list[QCRecord]) -> list[Stats]:
        out = [self._memo.get(r.image_file, lambda r=r: self._one(r)) if r.image_file is not None else {}
               for r in batch]
        if self.settings.iqa_model:
            self._score([(s, r) for s, r in zip(out, batch) if s.get("decodable")])
        return out

    def _one(self, r: QCRecord) -> Stats:
        if r.image_file is None:
            return {}
        try:
            from PIL import Image

            with Image.open(r.image_file) as im:
                w, h = im.size
            rgb = load_rgb(r.image_file, self.settings.max_side)
        except Exception as e:  # noqa: BLE001 - any decoder failure means "unreadable"
            return {"decodable": 0, "error": f"{type(e).__name__}: {e}"[:200]}
        g = gray(rgb)
        lap, grad = laplacian(g), sobel_magnitude(g)
        energy = float((grad ** 2).sum())
        out = {"decodable": 1, "width": w, "height": h, "min_side": min(w, h),
               "blur": float(lap.var()) if lap.size else 0.0,
               "sharpness": float((lap ** 2).sum()) / energy if energy > 0 else 0.0,
               "brightness": float(g.mean()), "contrast": float(g.std())}
        if self.settings.compression:
            out.update(compression_stats(rgb, g))
        return out

    def _score(self, todo: list[tuple[Stats, QCRecord]]) -> None:
        """`iqa` for the readable images of a batch, in one forward pass (one by one after a failure,
        so one image the processor rejects costs only its own score, reported as `iqa_error`)."""
        if not todo:
            return
        from PIL import Image

        from allava.quality.iqa import load_iqa

        images, ok = [], []
        for stats, r in todo:
            try:
                with Image.open(r.image_file) as im:
                    images.append(im.convert("RGB"))
                ok.append((stats, r))
            except Exception as e:  # noqa: BLE001 - changed on disk since `_one` read it
                stats["iqa_error"] = f"{type(e).__name__}: {e}"[:200]
        todo = ok
        if not todo:
            return
        if self.iqa is None:
            s = self.settings
            self.iqa = load_iqa(s.iqa_backend, s.iqa_model, s.iqa_label, s.device)
        try:
            scores: list[float | None] = list(self.iqa.score(images))
        except Exception:  # noqa: BLE001 - find the image that breaks the batch
            scores = []
            for (stats, _), image in zip(todo, images):
                try:
                    scores.append(self.iqa.score([image])[0])
                except Exception as e:  # noqa: BLE001
                    stats["iqa_error"] = f"{type(e).__name__}: {e}"[:200]
                    scores.append(None)
        for (stats, _), score in zip(todo, scores):
            if score is not None:
                stats["iqa"] = float(score)

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        vals = [s["decodable"] for s in stats if "decodable" in s]
        if not vals:
            return {}
        blur = [s["blur"] for s in stats if "blur" in s]
        out = {"image_readability": float(np.mean(vals)), "mean_blur": float(np.mean(blur)) if blur else None}
        iqa = [s["iqa"] for s in stats if "iqa" in s]
        if iqa:
            out["mean_iqa"] = float(np.mean(iqa))
        return out

    def close(self) -> None:
        self.iqa = None
