"""De-duplication, images: perceptual hashes (pHash / dHash in numpy) and the distance to the nearest
distinct image file *ranked before* this one (sharper, then earlier: see below).

The stat is a distance, not a yes/no, so the Hamming cut-off is a threshold (`min`) and can be
changed without rehashing. Records that share one image file are not duplicates of each other
(LLaVA data asks many questions about one image); a second file with the same picture is.
Candidates come from a multi-index hash (Norouzi et al., "Fast search in Hamming space with
multi-index hashing", CVPR 2012): 4 tables of 16-bit substrings, each probed at its exact value and
its 16 one-bit neighbours. Any pair within 7 bits differs in at most 1 bit of some substring
(pigeonhole: 2 in each would be 8), so the distance is exact up to 7 and reported as 8 beyond that;
of two equally near files, `near` names the better-ranked one. The 8 tables of 8-bit substrings
this replaced gave the same distances, but their buckets hold 1/256 of all files each, so the work
per image grew with the dataset (finalize 0.02 s per 1K records at 10K, 0.21 at 100K).

With `colour` (default) each file also gets a pHash per RGB channel and the distance is the largest
of the grey and channel distances: a grey thumbnail loses colour, so a red and a green cross in the
same place hash alike in grey (the quickstart: most of image_dedup's false removals), but not in
the red or green channel. A copy, re-encoded or resized, stays within a few bits in every channel.

Which of two near-identical files is the duplicate is a stated rule, not simply file order: files are
ranked by edge sharpness (`sharp`: the mean of the largest 1% of the grey image's neighbour
differences, at most 256 px a side), then by first appearance, and each file's distance is to the nearest file ranked
before it. A blurred, darkened, upscaled or JPEG-damaged copy has softer
or fainter edges than its original, so the original is kept even when the copy comes first (at 10K
records of the quickstart noise benchmark, file order made image_dedup remove 41 clean records, most
of them originals whose damaged copy came earlier; 6 now); an exact copy ties and the later one is
the duplicate, as before. Each file is decoded once for its hashes and sharpness (`image_features`).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from allava.quality.base import DatasetOp, ImageMemo, OpSettings, QCRecord, Stats, per_image, register_op

SUBSTRINGS, SUB_BITS = 4, 16  # RADIUS // SUBSTRINGS == 1: each table is probed within one bit
RADIUS = 7  # exact distances up to here
_PROBES = np.array([0] + [1 << b for b in range(SUB_BITS)], dtype=np.int64)
_POP = np.array([i.bit_count() for i in range(256)], dtype=np.uint8)


def _bits_to_int(bits: np.ndarray) -> int:
    return int("".join("1" if b else "0" for b in bits.ravel()), 2)


def _lanczos(im, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(im.resize(size, Image.Resampling.LANCZOS), dtype=np.float64)


def _dhash_of(grey, size: int = 8) -> int:
    """Difference hash: is each pixel brighter than its right neighbour (size x size bits)."""
    g = _lanczos(grey, (size + 1, size))
    return _bits_to_int(g[:, 1:] > g[:, :-1])


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


_DCT32 = _dct_matrix(32)


def _dct_hash(g: np.ndarray, size: int = 8) -> int:
    low = (_DCT32 @ g @ _DCT32.T)[:size, :size]
    return _bits_to_int(low > np.median(low))


def _phash_of(grey, size: int = 8) -> int:
    """Perceptual hash: low 8x8 DCT coefficients of a 32x32 grey image above their median."""
    return _dct_hash(_lanczos(grey, (32, 32)), size)


def _channel_hashes(rgb, size: int = 8) -> list[int]:
    """The pHash of each RGB channel (a 32x32 antialiased thumbnail per channel)."""
    thumb = _lanczos(rgb, (32, 32))
    return [_dct_hash(thumb[..., c], size) for c in range(3)]


def _sharpness_of(grey, side: int = 256) -> float:
    """Edge sharpness: the mean of the largest 1% of absolute neighbour differences of the grey image
    (shrunk to at most `side` px a side; a percentile is 0 where edges are sparse): soft or faint
    edges rank a copy below its original."""
    from PIL import Image

    if max(grey.size) > side:
        grey = grey.copy()
        grey.thumbnail((side, side), Image.Resampling.LANCZOS)
    a = np.asarray(grey, dtype=np.float64)
    diffs = np.concatenate([np.abs(np.diff(a, axis=1)).ravel(), np.abs(np.diff(a, axis=0)).ravel()])
    if not diffs.size:
        return 0.0
    k = max(1, diffs.size // 100)
    return float(np.partition(diffs, diffs.size - k)[-k:].mean())


_HASHES = {"phash": _phash_of, "dhash": _dhash_of}


def image_features(path, hash_name: str = "phash", colour: bool = True) -> dict[str, Any]:
    """The hash, sharpness and (with `colour`) channel hashes of one file, from a single decode."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        grey = im.convert("L")
        f = {"hash": f"{_HASHES[hash_name](grey):016x}", "sharp": _sharpness_of(grey)}
        if colour:
            f["rgb"] = [f"{h:016x}" for h in _channel_hashes(im.convert("RGB"))]
    return f


def phash(path, size: int = 8) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return _phash_of(im.convert("L"), size)


def dhash(path, size: int = 8) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return _dhash_of(im.convert("L"), size)


def hamming(a: int, b: np.ndarray) -> np.ndarray:
    """Bit distances between one 64-bit hash and an array of them."""
    x = np.bitwise_xor(b, np.uint64(a)).view(np.uint8).reshape(-1, 8)
    return _POP[x].sum(axis=1)


@dataclass
class ImageDedupSettings(OpSettings):
    hash: str = "phash"  # phash | dhash
    colour: bool = True  # distance = max(grey, R, G, B hash distances): colour changes are not copies

    def check(self) -> None:
        if self.hash not in _HASHES:
            raise ValueError(f"hash must be one of {sorted(_HASHES)}, got {self.hash!r}")


@register_op("image_dedup")
class ImageDedup(DatasetOp):
    Settings = ImageDedupSettings
    primary = "distance"
    needs_image = True
    VERSION = "3"  # 3: copies ranked by sharpness, not only file order

    def features(self, batch: list[QCRecord]) -> list[Any]:
        def one(r: QCRecord) -> dict[str, Any]:
            return {"file": str(r.image_file), **image_features(r.image_file, self.settings.hash, self.settings.colour)}
        if not hasattr(self, "_memo"):
            self._memo = ImageMemo(copy=False)  # features are only read
        return per_image(batch, one, self._memo)

    def finalize(self, features: list[Any]) -> list[Stats]:
        first: dict[str, Any] = {}
        for f in features:
            if f is not None and f["file"] not in first:
                first[f["file"]] = f
        seen = list(first.values())
        ranked = [seen[i] for i in sorted(range(len(seen)), key=lambda i: (-seen[i].get("sharp", 0.0), i))]
        files: list[str] = [f["file"] for f in ranked]
        file_stats: dict[str, Stats] = {name: {} for name in files}
        grey: list[int] = [int(f["hash"], 16) for f in ranked]
        rgb: list[tuple[int, int, int] | None] = [tuple(int(x, 16) for x in f["rgb"]) if "rgb" in f else None
                                                  for f in ranked]
        hashes = np.array(grey, dtype=np.uint64)
        channels = np.array([c or (0, 0, 0) for c in rgb], dtype=np.uint64).reshape(-1, 3)
        tables: list[dict[int, list[int]]] = [defaultdict(list) for _ in range(SUBSTRINGS)]
        mask = (1 << SUB_BITS) - 1
        for i, h in enumerate(grey):
            subs = [(h >> (SUB_BITS * t)) & mask for t in range(SUBSTRINGS)]
            found = [tables[t][k] for t in range(SUBSTRINGS) for k in (subs[t] ^ _PROBES).tolist() if k in tables[t]]
            dist, near = RADIUS + 1, None
            if found:
                idx = np.unique(np.concatenate([np.asarray(x, dtype=np.int64) for x in found]))
                d = hamming(h, hashes[idx])
                if rgb[i] is not None:
                    for c in range(3):
                        d = np.maximum(d, hamming(rgb[i][c], channels[idx, c]))
                k = int(np.argmin(d))  # the first minimum: the best-ranked file among equally near ones
                if d[k] <= RADIUS:
                    dist, near = int(d[k]), files[int(idx[k])]
            file_stats[files[i]] = {"distance": dist, **({"near": near} if near else {})}
            for t in range(SUBSTRINGS):
                tables[t][subs[t]].append(i)
        return [dict(file_stats[f["file"]]) if f is not None else {} for f in features]

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        d = [s["distance"] for s in stats if "distance" in s]
        return {"duplicate_images": float(np.mean([x == 0 for x in d]))} if d else {}
