"""Image operators on generated pictures: sharp vs blurred, broken files, duplicates, complexity."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import test_qc_helpers as h
from PIL import Image

from allava.quality.base import QCRecord
from allava.quality.ops.image_dedup import ImageDedup, dhash, phash
from allava.quality.ops.image_readability import ImageReadability
from allava.quality.ops.visual_complexity import VisualComplexity
from allava.quality.ops.visual_diversity import VisualDiversity


def rec(path: Path | None, rid: str = "x") -> QCRecord:
    return QCRecord(id=rid, conversations=[], image=path.name if path else None, image_file=path)


def test_image_readability_separates_blur_broken_small_and_flat(tmp_path):
    sharp, blurred = [], []
    for i in range(8):
        h.scene_image(tmp_path / f"s{i}.png", seed=i)
        h.scene_image(tmp_path / f"b{i}.png", seed=i, blur=1.5)
        sharp.append(rec(tmp_path / f"s{i}.png"))
        blurred.append(rec(tmp_path / f"b{i}.png"))
    op = ImageReadability()
    s_stats, b_stats = op.compute(sharp), op.compute(blurred)
    assert min(s["sharpness"] for s in s_stats) > 0.025 > max(s["sharpness"] for s in b_stats)
    assert all(s["blur"] > b["blur"] for s, b in zip(s_stats, b_stats))  # the classic measure agrees pairwise

    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    Image.new("RGB", (16, 12), (128, 128, 128)).save(tmp_path / "flat.png")
    broken, flat, text_only = op.compute([rec(tmp_path / "broken.png"), rec(tmp_path / "flat.png"), rec(None)])
    assert broken["decodable"] == 0 and "error" in broken
    assert flat["min_side"] == 12 and flat["contrast"] == 0 and flat["sharpness"] == 0
    assert text_only == {}
    dark = tmp_path / "dark.png"
    Image.new("RGB", (64, 64), (3, 3, 3)).save(dark)
    assert op.compute([rec(dark)])[0]["brightness"] < 10


def test_perceptual_hashes_and_dedup(tmp_path):
    for i in range(6):
        h.scene_image(tmp_path / f"{i}.png", seed=100 + i)
    shutil.copy(tmp_path / "2.png", tmp_path / "2copy.png")
    Image.open(tmp_path / "4.png").resize((128, 128)).save(tmp_path / "4big.png")  # same picture, rescaled
    assert phash(tmp_path / "2.png") == phash(tmp_path / "2copy.png")
    assert dhash(tmp_path / "2.png") == dhash(tmp_path / "2copy.png")
    files = [f"{i}.png" for i in range(6)] + ["2copy.png", "4big.png", "0.png"]  # 0.png again: same file
    recs = [rec(tmp_path / f, f"r{k}") for k, f in enumerate(files)] + [rec(None, "text")]
    op = ImageDedup()
    stats = op.finalize(op.features(recs))
    assert stats[6]["distance"] == 0 and stats[6]["near"].endswith("2.png")
    assert stats[7]["distance"] <= 2
    assert stats[8]["distance"] == stats[0]["distance"]  # another question about the same file is no duplicate
    assert all(s["distance"] >= 3 for s in stats[:6])
    assert stats[9] == {}


def test_visual_complexity_and_diversity(tmp_path):
    flat = tmp_path / "flat.png"
    Image.new("RGB", (64, 64), (200, 200, 200)).save(flat)
    busy = tmp_path / "busy.png"
    import numpy as np

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(busy)
    h.scene_image(tmp_path / "scene.png", seed=1)
    f, s, b = VisualComplexity().compute([rec(flat), rec(tmp_path / "scene.png"), rec(busy)])
    assert f["entropy"] < s["entropy"] < b["entropy"] and f["edge_density"] < s["edge_density"] < b["edge_density"]
    assert f["colours"] == 1

    # 6 near-identical red pictures + 6 varied scenes: the red ones form one cluster
    recs = []
    for i in range(6):
        p = tmp_path / f"red{i}.png"
        Image.new("RGB", (32, 32), (200 + i, 30, 30)).save(p)
        recs.append(rec(p, f"red{i}"))
        h.scene_image(tmp_path / f"v{i}.png", seed=50 + i)
        recs.append(rec(tmp_path / f"v{i}.png", f"v{i}"))
    op = VisualDiversity(VisualDiversity.Settings(min_samples=3))
    stats = op.finalize(op.features(recs))
    red = {stats[k]["cluster"] for k in range(0, 12, 2)}
    assert len(red) == 1 and red != {-1}
    assert op.indicators(stats)["visual_diversity"] >= 2


def test_visual_diversity_with_a_missing_clip_fails_loudly(tmp_path):
    """A wrong model path is a user mistake to report, not a dataset of images without vectors."""
    h.scene_image(tmp_path / "a.png", seed=1)
    op = VisualDiversity(VisualDiversity.Settings(model=str(tmp_path / "no-such-clip")))
    with pytest.raises(OSError, match="model folder .* not found"):
        op.features([rec(tmp_path / "a.png")])


def _brute_dedup(features: list) -> list:
    """The definition: per distinct file, the smallest max(grey, R, G, B) Hamming distance to any
    earlier distinct file (exact up to 7, 8 beyond), `near` = the earliest file at that distance."""
    files, out = [], {}
    for f in features:
        if f is None or f["file"] in out:
            continue
        best, near = 8, None
        for g in files:
            d = bin(int(f["hash"], 16) ^ int(g["hash"], 16)).count("1")
            if "rgb" in f:
                d = max([d] + [bin(int(a, 16) ^ int(b, 16)).count("1") for a, b in zip(f["rgb"], g["rgb"])])
            if d < best:
                best, near = d, g["file"]
        out[f["file"]] = {"distance": best, **({"near": near} if near else {})}
        files.append(f)
    return [dict(out[f["file"]]) if f is not None else {} for f in features]


def test_image_dedup_index_equals_brute_force():
    """The multi-index hash finds every earlier file within 7 bits: distances and `near` equal the
    brute-force scan over all earlier files, on hashes made to sit at every distance 0..12 from
    others (same file twice, files without an image, colour on and off)."""
    import random

    rng = random.Random(3)

    def flip(x: int, k: int) -> int:
        for b in rng.sample(range(64), k):
            x ^= 1 << b
        return x

    for colour in (True, False):
        feats, bases = [], [[rng.getrandbits(64) for _ in range(4)] for _ in range(12)]
        for i in range(400):
            base = rng.choice(bases)
            h = flip(base[0], rng.randint(0, 12))
            f = {"file": f"f{i}.png", "hash": f"{h:016x}"}
            if colour:
                f["rgb"] = [f"{flip(c, rng.choice((0, 0, 1, 2, 4))):016x}" for c in base[1:]]
            feats.append(f)
            if i % 37 == 0:
                feats += [None, dict(f)]  # a record without an image; a second record of the same file
            if i % 41 == 40:
                feats.append({**feats[-1], "file": f"copy{i}.png"})  # another file, the same picture
        got = ImageDedup().finalize(feats)
        assert got == _brute_dedup(feats)
        dists = [g["distance"] for g in got if g]
        assert set(range(0, 8)) <= set(dists) and 8 in dists  # every exact distance and "beyond" occur
