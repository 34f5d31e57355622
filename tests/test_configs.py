"""The shipped recipes load, say what the papers say, and run on tiny stand-ins."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from allava.train.stages import load_recipe, run_recipe

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["allava-phi2.yaml", "llava-v1.5-7b.yaml"])
def test_recipe_loads(name):
    recipe = load_recipe(CONFIGS / name)
    assert list(recipe.stages) == ["stage1", "stage2"]


def test_allava_phi2_is_appendix_c():
    r = load_recipe(CONFIGS / "allava-phi2.yaml")
    assert r.model.vision_tower == "openai/clip-vit-large-patch14-336" and r.model.language_model == "microsoft/phi-2"
    s1, s2 = r.stages["stage1"], r.stages["stage2"]
    assert (s1.global_batch_size, s2.global_batch_size) == (256, 128)
    for s in (s1, s2):
        assert (s.lr, s.min_lr, s.warmup_ratio, s.weight_decay) == (2e-5, 2e-6, 0.03, 0.0)
        assert s.train == ["projector", "language_model"]  # ALLaVA trains the LM in both stages
    text1 = [d.repeat for d in s1.data if d.image_folder is None]
    text2 = [d.repeat for d in s2.data if d.image_folder is None]
    assert set(text1) == {2} and set(text2) == {1}  # 2x text in stage 1, 1x in stage 2


def test_allava_phi2_loading_path_runs_with_tiny_stand_ins(backbones, tiny_data, tmp_path):
    # Same file, hub ids swapped for local tiny models, data for ALLaVA-format fixtures.
    allava_style = tmp_path / "ALLaVA-Caption-LAION-4V.json"  # the public files are JSON arrays
    allava_style.write_text(json.dumps([json.loads(l) for l in Path(tiny_data["captions"]).read_text().splitlines()]))
    overrides = [
        f"output_dir={tmp_path / 'run'}", f"model.vision_tower={backbones['clip']}",
        f"model.language_model={backbones['lm']}", "stages.stage1.gradient_checkpointing=false",
        "stages.stage2.gradient_checkpointing=false",
        f"stages.stage1.data=[{{path: {allava_style}, image_folder: {tiny_data['images']}}}, {{path: {tiny_data['text']}, repeat: 2}}]",
        f"stages.stage2.data=[{{path: {tiny_data['vqa']}, image_folder: {tiny_data['images']}}}, {{path: {tiny_data['text']}}}]",
    ]
    for s in ("stage1", "stage2"):
        overrides += [f"stages.{s}.max_steps=2", f"stages.{s}.global_batch_size=4", f"stages.{s}.per_device_batch_size=2"]
    s1, s2 = run_recipe(load_recipe(CONFIGS / "allava-phi2.yaml", overrides), progress=False)
    assert s1.steps == 2 and s2.steps == 2 and set(s2.trainable) == {"projector", "language_model"}
