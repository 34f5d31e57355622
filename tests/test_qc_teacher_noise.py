"""The teacher-style noise generator: every kind changes what it says it changes, deterministically."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from allava.quality.measure import distinct, kind_table
from allava.quality.teacher_noise import LANG, REFUSALS, TEACHER_KINDS, inject_teacher_noise, paraphrase


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from allava.scenes.world import WorldConfig, build_world

    root = tmp_path_factory.mktemp("tnworld")
    build_world(root, WorldConfig(n_train_images=150, n_bench_per_ability=1, n_text=10, vqa_per_ability=20),
                progress=False)
    return root


def _load(world: Path) -> list[dict]:
    return distinct([json.loads(x) for x in (world / "instruct.jsonl").read_text().splitlines()])


def test_every_kind_is_injected_and_changes_its_record(world):
    clean = _load(world)
    noisy, injected = inject_teacher_noise(clean, world / "images", rate=0.4, seed=3)
    counts = Counter(injected.values())
    assert set(counts) == set(TEACHER_KINDS), counts
    before = {r["id"]: r for r in clean}
    for r in noisy:
        kind = injected.get(r["id"])
        old = before[r["id"]]
        if kind is None:
            assert r == old
            continue
        answer = r["conversations"][-1]["value"]
        if kind in ("blank", "lowres", "jpeg"):
            assert r["image"] != old["image"] and r["conversations"] == old["conversations"]
            px = np.asarray(Image.open(world / "images" / r["image"]).convert("RGB"), dtype=float)
            orig = np.asarray(Image.open(world / "images" / old["image"]).convert("RGB"), dtype=float)
            assert px.shape == orig.shape and np.abs(px - orig).mean() > 0.5
            if kind == "blank":
                assert px.reshape(-1, 3).std(axis=0).max() == 0
        elif kind == "refusal":
            assert answer in REFUSALS
        elif kind == "language":
            assert any(w in answer for w in ("imagen", "image, on", "Bild", "图中"))
        elif kind in ("hallucinate", "wrong_count"):  # one word changed, the rest untouched
            a, b = old["conversations"][-1]["value"].split(), answer.split()
            assert len(a) == len(b) and sum(x != y for x, y in zip(a, b)) == 1
        elif kind == "paraphrase":
            assert r["image"] == old["image"] and r["conversations"] != old["conversations"]
        elif kind == "terse":
            assert len(answer.split()) <= 6 < len(old["conversations"][-1]["value"].split())
        else:
            assert answer != old["conversations"][-1]["value"]


def test_deterministic_and_unknown_kind_refused(world):
    clean = _load(world)[:80]
    a = inject_teacher_noise(clean, world / "images", rate=0.3, seed=5, kinds=("refusal", "terse", "swap_same"))
    b = inject_teacher_noise(clean, world / "images", rate=0.3, seed=5, kinds=("refusal", "terse", "swap_same"))
    assert a == b and a[1]
    with pytest.raises(ValueError, match="unknown noise kinds"):
        inject_teacher_noise(clean, world / "images", kinds=("nonsense",))


def test_paraphrase_keeps_the_referent():
    import random

    rng = random.Random(0)
    q = "What colour is the large circle?\nAnswer the question using a single word or phrase."
    p = paraphrase(q, rng)
    assert p != q and "large circle" in p and p.endswith("single word or phrase.")
    assert "purple cars" in paraphrase("How many purple cars are there?", rng)
    assert set(LANG) == {"es", "fr", "de", "zh"}


def test_kind_table_lists_every_kind_and_the_clean_rate():
    rows = kind_table({"per_kind": {"jpeg": 0.5}, "injected": 2, "clean": 10, "injected_removed": 0.5,
                       "clean_removed": 0.1}, {"jpeg": 2})
    assert "| jpeg | 2 | 50.0% |" in rows and rows[-1].endswith("**10.0%** |")
