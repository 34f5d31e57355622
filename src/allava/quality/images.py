"""Image helpers shared by the image operators (numpy only, so they run anywhere)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def load_rgb(path: Path, max_side: int = 0) -> np.ndarray:
    """uint8 (H, W, 3); downscaled so the longest side is <= max_side (0 = native). Raises on bad files."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        im = im.convert("RGB")
        if max_side and max(im.size) > max_side:
            s = max_side / max(im.size)
            im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma as float64 in [0, 255]."""
    return rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def laplacian(g: np.ndarray) -> np.ndarray:
    """4-neighbour Laplacian on the interior (the OpenCV `Laplacian(ksize=1)` kernel)."""
    if min(g.shape) < 3:
        return np.zeros((0,))
    return g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]


def sobel_magnitude(g: np.ndarray) -> np.ndarray:
    if min(g.shape) < 3:
        return np.zeros((0,))
    gx = (g[:-2, 2:] + 2 * g[1:-1, 2:] + g[2:, 2:]) - (g[:-2, :-2] + 2 * g[1:-1, :-2] + g[2:, :-2])
    gy = (g[2:, :-2] + 2 * g[2:, 1:-1] + g[2:, 2:]) - (g[:-2, :-2] + 2 * g[:-2, 1:-1] + g[:-2, 2:])
    return np.hypot(gx, gy)


def resize_gray(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Grayscale float array of exactly `size` (w, h), with antialiasing: the input of perceptual hashes."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L").resize(size, Image.Resampling.LANCZOS), dtype=np.float64)
