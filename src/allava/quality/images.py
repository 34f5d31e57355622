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


GHOST_QUALITIES = range(3, 13)
DETAIL_FACTORS = (3, 4, 6, 8)


def _activity(g: np.ndarray) -> float:
    """Mean absolute neighbour difference (horizontal + vertical): the unit both measures divide by."""
    if min(g.shape) < 2:
        return 0.0
    return float(np.abs(np.diff(g, axis=1)).mean() + np.abs(np.diff(g, axis=0)).mean())


def jpeg_ghost(rgb: np.ndarray, act: float) -> float:
    """Smallest mean change over JPEG recompressions at qualities 3-12, per unit of activity."""
    import io

    from PIL import Image

    im = Image.fromarray(rgb)
    x = rgb.astype(np.int16)  # integer differences: the same mean as in float64, half the time
    best = np.inf
    for q in GHOST_QUALITIES:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=q)
        buf.seek(0)
        with Image.open(buf) as again:
            back = np.asarray(again if again.mode == "RGB" else again.convert("RGB"), dtype=np.int16)
        best = min(best, float(np.abs(back - x).mean()))
    return best / act


def detail(g: np.ndarray, act: float) -> float:
    """Smallest error of rebuilding the grey image from a 3-8x box-downscaled copy (nearest or
    bilinear upscale), per unit of activity: near 0 for an upscaled thumbnail."""
    from PIL import Image

    g8 = np.clip(np.rint(g), 0, 255).astype(np.uint8)
    im, g = Image.fromarray(g8), g8.astype(np.float64)  # compared at the precision it is rebuilt in
    w, h = im.size
    best = np.inf
    for f in DETAIL_FACTORS:
        if min(w, h) < 2 * f:
            continue
        small = im.resize((w // f, h // f), Image.Resampling.BOX)
        for how in (Image.Resampling.NEAREST, Image.Resampling.BILINEAR):
            up = np.asarray(small.resize((w, h), how), dtype=np.float64)
            best = min(best, float(np.abs(up - g).mean()))
    return best / act


def compression_stats(rgb: np.ndarray, g: np.ndarray) -> dict[str, float]:
    """`jpeg_ghost` and `detail` (see image_readability); empty on flat or tiny images."""
    act = _activity(g)
    if act < 0.5 or min(g.shape) < 16:
        return {}
    return {"jpeg_ghost": jpeg_ghost(rgb, act), "detail": detail(g, act)}
