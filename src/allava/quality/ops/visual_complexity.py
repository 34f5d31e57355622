"""Principle 9 (visual semantic complexity): grey-level entropy, edge density and colour count.

Cheap stand-ins for an image-complexity model (the review cites ICNet-style assessment): a flat
picture has low entropy and few edges; a cluttered scene has many of both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from allava.quality.base import ImageMemo, Op, OpSettings, QCRecord, Stats, register_op
from allava.quality.images import gray, load_rgb, sobel_magnitude


@dataclass
class VisualComplexitySettings(OpSettings):
    max_side: int = 256
    edge_threshold: float = 100.0  # Sobel magnitude (0..~1440 on 8-bit grey) counted as an edge


@register_op("visual_complexity")
class VisualComplexity(Op):
    Settings = VisualComplexitySettings
    primary = "entropy"
    needs_image = True

    def compute(self, batch: list[QCRecord]) -> list[Stats]:
        if not hasattr(self, "_memo"):
            self._memo = ImageMemo()
        return [self._memo.get(r.image_file, lambda r=r: self._one(r)) if r.image_file is not None else {}
                for r in batch]

    def _one(self, r: QCRecord) -> Stats:
        try:
            rgb = load_rgb(r.image_file, self.settings.max_side)
        except Exception:  # noqa: BLE001 - unreadable images are image_readability's business
            return {}
        g = gray(rgb)
        hist = np.bincount(np.clip(g, 0, 255).astype(np.uint8).ravel(), minlength=256) / g.size
        p = hist[hist > 0]
        mag = sobel_magnitude(g)
        q = (rgb // 32).reshape(-1, 3).astype(np.int32)
        colours = len(np.unique(q[:, 0] * 64 + q[:, 1] * 8 + q[:, 2]))
        return {"entropy": float(-(p * np.log2(p)).sum()),
                "edge_density": float((mag > self.settings.edge_threshold).mean()) if mag.size else 0.0,
                "colours": colours}

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        e = [s["entropy"] for s in stats if "entropy" in s]
        d = [s["edge_density"] for s in stats if "edge_density" in s]
        return {"visual_complexity": float(np.mean(e)), "edge_density": float(np.mean(d))} if e else {}
