"""Injected bad records (duplicates, unreadable images, truncations) are removed; clean ones are kept."""
from __future__ import annotations

import json

import test_qc_helpers as h

from allava.quality.config import parse_config
from allava.quality.noise import inject_noise, score_injection
from allava.quality.pipeline import run_qc_pipeline


def test_cheap_ops_catch_injected_noise_and_keep_clean_data(tmp_path):
    path = h.build_dataset(tmp_path / "d", n=60)
    clean = [json.loads(x) for x in path.read_text().splitlines()]
    noisy, injected = inject_noise(clean, tmp_path / "d" / "images", rate=0.2, seed=1,
                                   kinds=("duplicate", "unreadable", "truncate"))
    assert len(injected) >= 10
    path.write_text("".join(json.dumps(r) + "\n" for r in noisy))
    cfg = parse_config({"ops": [
        {"name": "image_readability", "thresholds": {"decodable": {"min": 1}, "sharpness": {"min": 0.025},
                                                     "brightness": {"min": 10}}},
        {"name": "image_dedup", "min": 1},
        {"name": "text_completeness", "min": 1, "min_words": 6}]})
    run = run_qc_pipeline(path, cfg, tmp_path / "qc", progress=False, plots=False)
    removed = {json.loads(x)["id"] for x in (tmp_path / "qc" / "removed.jsonl").read_text().splitlines()}
    score = score_injection(removed, run.ids, injected)
    assert score["injected_removed"] >= 0.9, score
    assert score["clean_removed"] <= 0.05, score
