"""LoRA stages (peft): adapters on the LM plus the fully trained projector, small checkpoints that
resume exactly, the next stage and `allava export --merge-lora` starting from them, and QLoRA's
clear refusal without CUDA. Defaults follow LLaVA-1.5's scripts/v1_5/finetune_lora.sh (r 128,
alpha 256, dropout 0.05) and llava/train/train.py find_all_linear_names (every linear layer of the
LM, not the head)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration, TrainerCallback

from allava.cli import main
from allava.config import ConfigError, from_dict
from allava.data.dataset import DataSource
from allava.data.tokenize import chat_template_for
from allava.model import lora
from allava.model.build import ModelSpec, Recipe, build_model, load_checkpoint, save_checkpoint
from allava.train.stages import StageConfig, run_stage

SPEC_KW = dict(r=4, alpha=8, dropout=0.0)


def spec(backbones) -> ModelSpec:
    return ModelSpec(vision_tower=backbones["clip"], language_model=backbones["lm"], template="vicuna_v1")


def inputs(model, processor) -> dict:
    from PIL import Image

    prompt = processor.apply_chat_template([{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "What colour is it?"}]}], add_generation_prompt=True)
    return processor(images=Image.new("RGB", (32, 32), (200, 0, 0)), text=prompt, return_tensors="pt")


def randomise_adapters(model, seed: int = 0) -> None:
    """peft starts B at zero (the adapter is then a no-op); give it weights so merging matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_defaults_are_llava_15s_and_target_every_lm_linear(backbones):
    model, _ = build_model(spec(backbones))
    s = lora.LoraSpec()
    assert (s.r, s.alpha, s.dropout) == (128, 256, 0.05)
    names = lora.lm_linear_names(model, [])
    kinds = {n.rsplit(".", 1)[-1] for n in names}
    assert kinds == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert all(n.startswith("model.language_model.") for n in names)  # no tower, projector or lm_head
    assert {n.rsplit(".", 1)[-1] for n in lora.lm_linear_names(model, ["q_proj", "v_proj"])} == {"q_proj", "v_proj"}
    with pytest.raises(ValueError, match="none of"):
        lora.lm_linear_names(model, ["nope"])


def test_merged_and_unmerged_logits_are_equal(backbones, tmp_path):
    """Tolerance: 1e-5 absolute in float32 (the merge adds B A alpha/r to W once; unmerged adds it per call)."""
    s = spec(backbones)
    model, processor = build_model(s)
    recipe = Recipe(spec=s)
    model, counts = lora.attach(model, processor, recipe, lora.LoraSpec(**SPEC_KW), ["projector", "language_model"],
                                s, tmp_path / "stage")
    assert counts["language_model_lora"] > 0 and counts["projector"] > 0
    randomise_adapters(model)
    save_checkpoint(model, processor, recipe, tmp_path / "stage" / "final")
    final = tmp_path / "stage" / "final"
    assert {p.name for p in final.iterdir()} >= {lora.ADAPTER_CONFIG, lora.ADAPTER_WEIGHTS, lora.NON_LORA_WEIGHTS}
    assert not (final / "model.safetensors").exists()  # the frozen base is not copied
    unmerged, _, _ = lora.load(final, merged=False)
    merged, proc, template = load_checkpoint(final)
    assert template == "vicuna_v1" and not lora.has_adapters(merged)
    x = inputs(merged, proc)
    with torch.no_grad():
        a, b, c = unmerged(**x).logits, merged(**x).logits, model(**x).logits
    assert torch.allclose(a, c, atol=1e-6)  # saved and reloaded adapters = the trained ones
    assert torch.allclose(a, b, atol=1e-5)
    base = LlavaForConditionalGeneration.from_pretrained(tmp_path / "stage" / "base")
    with torch.no_grad():
        assert not torch.allclose(base(**x).logits, b, atol=1e-3)  # the adapters did change the model


def test_adapters_load_with_peft_itself(backbones, tmp_path):
    """The adapter files are peft's own format: PeftModel.from_pretrained on the base takes them."""
    from peft import PeftModel

    s = spec(backbones)
    model, processor = build_model(s)
    recipe = Recipe(spec=s)
    model, _ = lora.attach(model, processor, recipe, lora.LoraSpec(**SPEC_KW), ["language_model"], s, tmp_path / "st")
    randomise_adapters(model, 1)
    save_checkpoint(model, processor, recipe, tmp_path / "st" / "final")
    peft_model = PeftModel.from_pretrained(LlavaForConditionalGeneration.from_pretrained(tmp_path / "st" / "base"),
                                           str(tmp_path / "st" / "final"))
    x = inputs(model, processor)
    with torch.no_grad():
        assert torch.allclose(peft_model(**x).logits, model(**x).logits, atol=1e-5)


class StopAfterSave(TrainerCallback):
    """Kill the run right after checkpoint-`step` is written (before final/)."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def lora_stage(tiny_data, **kw) -> StageConfig:
    return StageConfig(data=[DataSource(path=tiny_data["vqa"], image_folder=tiny_data["images"]),
                             DataSource(path=tiny_data["text"])],
                       train=["projector", "language_model"], lora=lora.LoraSpec(**SPEC_KW),
                       max_steps=4, global_batch_size=4, per_device_batch_size=4, lr=5e-3, save_steps=2,
                       logging_steps=1, **kw)


def test_lora_stage_resumes_exactly_and_the_next_stage_and_export_start_from_it(backbones, tiny_data, tmp_path):
    s = spec(backbones)
    whole = run_stage("stage2", lora_stage(tiny_data), s, tmp_path / "a" / "stage2", s, progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_stage("stage2", lora_stage(tiny_data), s, tmp_path / "b" / "stage2", s, progress=False,
                  callbacks=[StopAfterSave(2)])
    ckpt = tmp_path / "b" / "stage2" / "checkpoint-2"
    assert (ckpt / lora.ADAPTER_WEIGHTS).exists() and not (ckpt / "model.safetensors").exists()
    resumed = run_stage("stage2", lora_stage(tiny_data), s, tmp_path / "b" / "stage2", s, progress=False)
    assert resumed.steps == whole.steps == 4
    assert [l for st, l in resumed.losses if st > 2] == pytest.approx([l for st, l in whole.losses if st > 2],
                                                                      rel=1e-5, abs=1e-6)
    assert whole.trainable["language_model_lora"] > 0 and "language_model" not in whole.trainable

    # the base LM weights did not move; the projector did
    merged, _, _ = load_checkpoint(whole.model_dir)
    base = LlavaForConditionalGeneration.from_pretrained(tmp_path / "a" / "stage2" / "base")
    assert not torch.equal(merged.model.multi_modal_projector.linear_1.weight,
                           base.model.multi_modal_projector.linear_1.weight)

    # the next (full) stage starts from the LoRA folder and writes a full one
    nxt = StageConfig(data=[DataSource(path=tiny_data["vqa"], image_folder=tiny_data["images"])], train=["projector"],
                      max_steps=1, global_batch_size=4, per_device_batch_size=4, save_steps=100)
    r3 = run_stage("stage3", nxt, whole.model_dir, tmp_path / "a" / "stage3", s, progress=False)
    assert (Path(r3.model_dir) / "model.safetensors").exists() and Recipe.load(r3.model_dir).lora_base is None

    # export: a plain folder that transformers alone loads, with the same logits and our chat template
    out = tmp_path / "exported"
    assert main(["export", whole.model_dir, "--out", str(out)]) == 2  # adapters need --merge-lora said
    assert main(["export", whole.model_dir, "--merge-lora", "--out", str(out)]) == 0
    plain = LlavaForConditionalGeneration.from_pretrained(out)
    proc = AutoProcessor.from_pretrained(out)
    assert proc.chat_template == chat_template_for("vicuna_v1", proc.tokenizer)
    assert not (out / lora.ADAPTER_CONFIG).exists() and (out / "model.safetensors").exists()
    unmerged, _, _ = lora.load(whole.model_dir, merged=False)
    x = inputs(plain, proc)
    with torch.no_grad():
        assert torch.allclose(plain(**x).logits, unmerged(**x).logits, atol=1e-5)


def test_quantize_without_cuda_is_one_clear_line(backbones, tiny_data, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: QLoRA is allowed here")
    with pytest.raises(ConfigError, match=r"stages.stage2.lora.quantize: 4bit \(QLoRA\) needs a CUDA GPU"):
        from_dict(StageConfig, {"data": [{"path": "x.jsonl"}], "lora": {"quantize": "4bit"}}, "stages.stage2")
    with pytest.raises(ConfigError, match="choose 4bit or 8bit"):
        from_dict(StageConfig, {"data": [{"path": "x.jsonl"}], "lora": {"quantize": "2bit"}}, "stages.stage2")
    recipe = tmp_path / "r.yaml"
    import yaml

    recipe.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), "model": {
        "vision_tower": backbones["clip"], "language_model": backbones["lm"]}, "stages": {"stage2": {
            "data": [{"path": tiny_data["vqa"], "image_folder": tiny_data["images"]}],
            "train": ["projector", "language_model"], "lora": {"quantize": "8bit"}}}}))
    assert main(["train", "--config", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a CUDA GPU" in err[0]


def test_lora_with_a_sharding_engine_is_refused_in_one_line():
    for engine in ("fsdp", "deepspeed"):
        with pytest.raises(ConfigError, match="lora: runs on one process or DDP"):
            from_dict(StageConfig, {"data": [{"path": "x.jsonl"}], "train": ["projector", "language_model"],
                                    "lora": {}, engine: "configs/x.json"}, "stages.stage2")


def test_lora_without_the_language_model_in_train_is_refused(backbones, tmp_path):
    s = spec(backbones)
    model, processor = build_model(s)
    with pytest.raises(ValueError, match="list language_model in train"):
        lora.attach(model, processor, Recipe(spec=s), lora.LoraSpec(), ["projector"], s, tmp_path)


def test_recipes_parse(tmp_path):
    from allava.train.stages import load_recipe

    for name in ("llava-v1.5-7b-lora", "allava-phi2-lora"):
        r = load_recipe(Path(__file__).parents[1] / "configs" / f"{name}.yaml")
        loras = [c.lora for c in r.stages.values() if c.lora]
        assert loras and all((x.r, x.alpha) == (128, 256) for x in loras)
        assert json.dumps([c.template for c in r.stages.values()])


def test_a_packed_lora_stage_trains_the_unpacked_losses(backbones, tiny_data, tmp_path):
    """LoRA composes with multimodal packing (stages.<s>.packing): the same steps give the same losses
    (tolerance 1e-4 relative: packed rows sum the same per-sample terms in another order)."""
    s = spec(backbones)
    plain = run_stage("stage2", lora_stage(tiny_data, group_by_modality=False), s, tmp_path / "u" / "stage2", s,
                      progress=False)
    packed = run_stage("stage2", lora_stage(tiny_data, group_by_modality=False, packing=True), s,
                       tmp_path / "p" / "stage2", s, progress=False)
    assert [l for _, l in packed.losses] == pytest.approx([l for _, l in plain.losses], rel=1e-4)
