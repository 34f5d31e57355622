"""The backbones people use, each from a shrunk config of its real architecture (2 layers, small
widths, saved to a temp dir with a tokenizer of its family built offline): CLIP, SigLIP and SigLIP2
(NaFlex, run at one square resolution: see allava.model.siglip2 for why and how) towers; Phi-3, StableLM-2, Qwen2, Llama-3 and Gemma-2 LMs. Each trains 2 steps of stage 1 and stage 2,
saves, reloads with plain transformers (LlavaForConditionalGeneration + AutoProcessor) and
generates from the prompt its saved chat template builds, which is the prompt it trained on.
`template: auto` picks the tokenizer's chat template for instruct LMs and `human_assistant` for
base ones (StableLM-2-1.6B, as ALLaVA-StableLM2 trains it)."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import (AutoProcessor, CLIPImageProcessor, Siglip2Config, Siglip2ImageProcessor, Siglip2Model,
                          Siglip2VisionModel, SiglipImageProcessor, SiglipVisionModel, Gemma2Config, Gemma2ForCausalLM, LlamaConfig,
                          LlamaForCausalLM, LlavaForConditionalGeneration, Phi3Config, Phi3ForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, SiglipConfig, SiglipImageProcessor, SiglipModel, StableLmConfig,
                          StableLmForCausalLM)

from allava.data.dataset import DataSource
from allava.data.tokenize import ConversationEncoder
from allava.model.build import ModelSpec
from allava.train.stages import StageConfig, run_stage

from tokenizer_builders import build

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=1024)

# name: (tokenizer family, config class, model class, extra config, tower, expected template)
LMS = {
    "phi3": ("phi3", Phi3Config, Phi3ForCausalLM, dict(num_key_value_heads=4), "clip", "chat_template"),
    "stablelm2": ("stablelm2", StableLmConfig, StableLmForCausalLM,
                  dict(num_key_value_heads=4, partial_rotary_factor=0.25, use_qkv_bias=True), "clip", "human_assistant"),
    "qwen2": ("qwen2", Qwen2Config, Qwen2ForCausalLM, dict(num_key_value_heads=2, tie_word_embeddings=True),
              "siglip", "chat_template"),
    "qwen2-siglip2": ("qwen2", Qwen2Config, Qwen2ForCausalLM, dict(num_key_value_heads=2, tie_word_embeddings=True),
                      "siglip2", "chat_template"),
    "llama3": ("llama3", LlamaConfig, LlamaForCausalLM, dict(num_key_value_heads=2, rope_theta=500000.0),
               "siglip", "chat_template"),
    "gemma2": ("gemma", Gemma2Config, Gemma2ForCausalLM,
               dict(num_key_value_heads=2, head_dim=16, sliding_window=64, query_pre_attn_scalar=16), "clip",
               "chat_template"),
}


@pytest.fixture(scope="module")
def siglip(tmp_path_factory):
    """A SigLIP dual encoder (no CLS: every token a patch), as google/siglip-* checkpoints are saved."""
    root = tmp_path_factory.mktemp("siglip")
    config = SiglipConfig(text_config=dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=2),
                          vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=2))
    SiglipModel(config).save_pretrained(root)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root)
    return str(root)


@pytest.fixture(scope="module")
def siglip2_naflex(tmp_path_factory):
    """A SigLIP2 NaFlex dual encoder (model_type siglip2, as google/siglip2-*-naflex are saved) with
    its patch-sequence processor: 4 x 4 patches of 8 px at most (the real ones: 256 of 16 px)."""
    root = tmp_path_factory.mktemp("siglip2")
    config = Siglip2Config(text_config=dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                            num_attention_heads=2, bos_token_id=None, eos_token_id=None),
                           vision_config=dict(num_patches=16, patch_size=8, hidden_size=32, intermediate_size=64,
                                              num_hidden_layers=2, num_attention_heads=2))
    torch.manual_seed(0)
    Siglip2Model(config).save_pretrained(root)
    Siglip2ImageProcessor(patch_size=8, max_num_patches=16).save_pretrained(root)
    return str(root)


def save_lm(name: str, root) -> str:
    family, config_cls, model_cls, extra, _, _ = LMS[name]
    tok = build(family)
    config = config_cls(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id, **{**SMALL, **extra})
    torch.manual_seed(0)
    model_cls(config).save_pretrained(root)
    tok.save_pretrained(root)
    return str(root)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LMS))
def test_backbone_trains_both_stages_reloads_and_generates(name, backbones, siglip, siglip2_naflex, tiny_data, tmp_path):
    lm = save_lm(name, tmp_path / name)
    towers = {"siglip": (siglip, "full"), "siglip2": (siglip2_naflex, "full"), "clip": (backbones["clip"], "default")}
    tower, strategy = towers[LMS[name][4]]
    spec = ModelSpec(vision_tower=tower, language_model=lm, template="auto", vision_feature_select_strategy=strategy)
    common = dict(max_steps=2, global_batch_size=2, per_device_batch_size=2, save_steps=100, logging_steps=1,
                  lr=1e-3, model_max_length=512)
    s1 = StageConfig(data=[DataSource(path=tiny_data["captions"], image_folder=tiny_data["images"])],
                     train=["projector"], **common)
    r1 = run_stage("stage1", s1, spec, tmp_path / "run" / "stage1", spec, progress=False)
    s2 = StageConfig(data=[DataSource(path=tiny_data["vqa"], image_folder=tiny_data["images"]),
                           DataSource(path=tiny_data["text"])], train=["projector", "language_model"], **common)
    r2 = run_stage("stage2", s2, r1.model_dir, tmp_path / "run" / "stage2", spec, progress=False)
    assert r1.steps == r2.steps == 2 and all(loss == loss for _, loss in r2.losses)

    model = LlavaForConditionalGeneration.from_pretrained(r2.model_dir)
    processor = AutoProcessor.from_pretrained(r2.model_dir)
    assert model.config.text_config.model_type == LMS[name][1].model_type
    if LMS[name][4] in ("siglip", "siglip2"):  # SigLIP2 NaFlex is saved as the SigLIP tower it runs as
        assert type(model.model.vision_tower).__name__ == "SiglipVisionModel"
        assert type(processor.image_processor).__name__.startswith("SiglipImageProcessor")
    msgs = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (32, 32), (200, 0, 0))},
                                         {"type": "text", "text": "What colour is the image?"}]}]
    inputs = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    from allava.model.build import Recipe

    template = Recipe.load(r2.model_dir).spec.template
    assert template == LMS[name][5]
    enc = ConversationEncoder(processor.tokenizer, template, processor.image_token, model.config.image_seq_length)
    prompt = enc.prompt_ids([{"from": "human", "value": "<image>\nWhat colour is the image?"}])
    assert inputs["input_ids"][0].tolist() == prompt  # what it serves with is what it trained on
    n_image = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image == model.config.image_seq_length == (16 if strategy == "full" else 16)
    out = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3


@pytest.mark.parametrize("max_patches", [16, 9])
def test_siglip2_naflex_on_a_square_grid_is_the_siglip_tower_it_converts_to(siglip2_naflex, max_patches):
    """``Siglip2VisionModel`` on NaFlex patch sequences (transformers' Siglip2ImageProcessor: resize
    keeping the aspect ratio to at most ``max_num_patches``, patchify, mask) and the converted
    ``SiglipVisionModel`` on the matching ``SiglipImageProcessor`` pixels give the same hidden states
    for a square image: at the tower's own 4 x 4 grid, and at 3 x 3, where the position table is the
    model's own bilinear resize (``Siglip2VisionEmbeddings.resize_positional_embeddings``). fp32;
    the convolution and the linear patch embedding sum in another order: 1e-5."""
    import numpy as np

    from allava.model import siglip2

    naflex = Siglip2VisionModel.from_pretrained(siglip2_naflex).eval()
    proc = Siglip2ImageProcessor.from_pretrained(siglip2_naflex, max_num_patches=max_patches)
    tower, fixed = siglip2.fixed_resolution(naflex, proc)
    assert isinstance(tower, SiglipVisionModel) and isinstance(fixed, SiglipImageProcessor)
    side = int(max_patches ** 0.5)
    assert tower.config.image_size == side * 8 and fixed.size == {"height": side * 8, "width": side * 8}
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 50, 3), dtype=np.uint8))
    inputs = proc(image, return_tensors="pt")
    assert inputs["spatial_shapes"].tolist() == [[side, side]] and bool(inputs["pixel_attention_mask"].all())
    with torch.no_grad():
        ref = naflex(**inputs, output_hidden_states=True).hidden_states
        got = tower(fixed(image, return_tensors="pt")["pixel_values"], output_hidden_states=True).hidden_states
    assert len(got) == len(ref) == 3
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_siglip_with_the_cls_dropping_strategy_is_refused(siglip, backbones):
    from allava.config import ConfigError
    from allava.model.build import build_model

    with pytest.raises(ConfigError, match="siglip_vision_model has none"):
        build_model(ModelSpec(vision_tower=siglip, language_model=backbones["lm"]))


@pytest.mark.parametrize("name,lm,template", [("allava-stablelm2-1.6b", "stabilityai/stablelm-2-1_6b", "human_assistant"),
                                              ("siglip-qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B-Instruct", "auto")])
def test_backbone_recipes_load(name, lm, template):
    from pathlib import Path

    from allava.train.stages import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")
    assert recipe.model.language_model == lm and recipe.model.template == template
    assert list(recipe.stages) == ["stage1", "stage2"]
    if "siglip" in name:
        assert recipe.model.vision_feature_select_strategy == "full"
