"""A stage may train with its own template (LLaVA-1.5: stage 1 `plain`, stage 2 `vicuna_v1`); each
stage's final/ carries the template it trained with as its processor's chat template."""
from __future__ import annotations

from transformers import AutoProcessor, GenerationConfig

from allava.data.tokenize import chat_template_for
from allava.model.build import ModelSpec, Recipe
from allava.train.stages import StageConfig, run_stage
from allava.data.dataset import DataSource


def test_stage1_plain_then_stage2_vicuna(backbones, tiny_data, tmp_path):
    spec = ModelSpec(vision_tower=backbones["clip"], language_model=backbones["lm"], template="vicuna_v1")
    common = dict(max_steps=1, global_batch_size=4, per_device_batch_size=4, save_steps=100, logging_steps=1)
    s1 = StageConfig(data=[DataSource(path=tiny_data["captions"], image_folder=tiny_data["images"])],
                     train=["projector"], template="plain", **common)
    r1 = run_stage("stage1", s1, spec, tmp_path / "stage1", spec, progress=False)
    s2 = StageConfig(data=[DataSource(path=tiny_data["vqa"], image_folder=tiny_data["images"])],
                     train=["projector"], **common)
    r2 = run_stage("stage2", s2, r1.model_dir, tmp_path / "stage2", spec, progress=False)
    assert spec.template == "vicuna_v1"  # the run's own spec is not rewritten by stage 1
    for result, name in ((r1, "plain"), (r2, "vicuna_v1")):
        proc = AutoProcessor.from_pretrained(result.model_dir)
        assert proc.chat_template == chat_template_for(name, proc.tokenizer)
        assert Recipe.load(result.model_dir).spec.template == name
        eos = GenerationConfig.from_pretrained(result.model_dir).eos_token_id
        newline = proc.tokenizer("\n", add_special_tokens=False)["input_ids"]
        # plain trains '\n' as the caption's stop: generation stops there too (and at the eos)
        assert eos == (sorted(set(newline + [proc.tokenizer.eos_token_id])) if name == "plain"
                       else proc.tokenizer.eos_token_id)
