"""Principle 1 (readability), images: decodable, big enough, sharp, well exposed.

`blur` is the classic variance of the Laplacian (low = blurry), but it also falls when a sharp
picture simply has few edges (one small shape on a plain background). `sharpness` divides the
Laplacian energy by the gradient energy: a step edge blurred by sigma keeps its gradient energy
~1/sigma but loses Laplacian energy ~1/sigma^3, so the ratio measures blur whatever the content
(quickstart images: >= 0.033 sharp, <= 0.026 after a 1-pixel Gaussian blur). Exposure is the mean
luma and contrast its standard deviation. A no-reference IQA model (MANIQA in the review) is the real
backend the paper uses; these numbers are the cheap, dependency-free default.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from allava.quality.base import Op, OpSettings, QCRecord, Stats, register_op
from allava.quality.images import gray, laplacian, load_rgb, sobel_magnitude


@dataclass
class ImageReadabilitySettings(OpSettings):
    max_side: int = 512  # analyse at most this resolution (blur depends on scale, so it is in the cache key)


@register_op("image_readability")
class ImageReadability(Op):
    Settings = ImageReadabilitySettings
    primary = "sharpness"
    VERSION = "2"
    needs_image = True

    def compute(self, batch: list[QCRecord]) -> list[Stats]:
        return [self._one(r) for r in batch]

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
        return {"decodable": 1, "width": w, "height": h, "min_side": min(w, h),
                "blur": float(lap.var()) if lap.size else 0.0,
                "sharpness": float((lap ** 2).sum()) / energy if energy > 0 else 0.0,
                "brightness": float(g.mean()), "contrast": float(g.std())}

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        vals = [s["decodable"] for s in stats if "decodable" in s]
        if not vals:
            return {}
        blur = [s["blur"] for s in stats if "blur" in s]
        return {"image_readability": float(np.mean(vals)), "mean_blur": float(np.mean(blur)) if blur else None}
