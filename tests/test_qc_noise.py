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


def test_noise_study_qcs_samples_and_keeps_the_samplers_repeats(tmp_path):
    """The balanced short VQA repeats identical records on purpose: text_dedup must not remove the
    repeats (it did: ~2,700 clean records), so the study QCs distinct samples and expands back."""
    from allava.studies.noise import _qc_distinct

    path = h.build_dataset(tmp_path / "d", n=12)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    repeats = [{**rows[1], "id": f"again-{k}"} for k in range(3)]
    broken = {**rows[3], "id": "trunc", "conversations": [rows[3]["conversations"][0],
                                                         {"from": "gpt", "value": "There is a red circle and a blue"}]}
    noisy = tmp_path / "noisy.jsonl"
    noisy.write_text("".join(json.dumps(r) + "\n" for r in rows + repeats + [broken]))
    cfg = parse_config({"ops": [{"name": "text_dedup", "max": 0.9}, {"name": "text_completeness", "min": 1}]})
    run, all_rows, kept = _qc_distinct(noisy, cfg, tmp_path / "qc", tmp_path / "d" / "images")
    assert len(run.ids) == len(rows) + 1 and len(all_rows) == len(rows) + 4
    assert {r["id"] for r in kept} == {r["id"] for r in rows + repeats}  # repeats kept, the truncation not
    plain = run_qc_pipeline(noisy, cfg, tmp_path / "plain", tmp_path / "d" / "images", progress=False, plots=False)
    assert plain.removed == 4  # what plain dedup did to the repeats


def test_cheap_config_catches_rule_detectable_teacher_mistakes(tmp_path):
    from allava.quality.config import load_config
    from allava.quality.measure import distinct
    from allava.quality.teacher_noise import inject_teacher_noise
    from allava.scenes.world import WorldConfig, build_world

    files = build_world(tmp_path / "w", WorldConfig(n_train_images=120, n_bench_per_ability=1, n_text=10,
                                                    vqa_per_ability=15), progress=False)
    clean = distinct([json.loads(x) for x in files.instruct.read_text().splitlines()])
    kinds = ("refusal", "language", "terse", "echo", "repeat", "blank", "lowres", "jpeg")
    noisy, injected = inject_teacher_noise(clean, tmp_path / "w" / "images", rate=0.3, seed=2, kinds=kinds)
    path = tmp_path / "noisy.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in noisy))
    cfg = load_config("cheap")
    assert not any(s.op.name in ("text_readability", "clip_match", "llm_judge") for s in cfg.ops)
    run = run_qc_pipeline(path, cfg, tmp_path / "qc", image_folder=tmp_path / "w" / "images", progress=False,
                          plots=False)
    removed = {json.loads(x)["id"] for x in (tmp_path / "qc" / "removed.jsonl").read_text().splitlines()}
    score = score_injection(removed, run.ids, injected)
    assert set(score["per_kind"]) == set(kinds) and min(score["per_kind"].values()) >= 0.9, score
    assert score["clean_removed"] <= 0.03, score
