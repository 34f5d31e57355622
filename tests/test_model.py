"""A built and saved checkpoint is a plain transformers folder that answers about an image."""
from __future__ import annotations

import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

from allava.model.build import ModelSpec, Recipe, build_model, load_checkpoint, save_checkpoint


def test_build_adds_tokens_and_only_projector_is_new(backbones):
    from transformers import AutoModelForCausalLM, CLIPVisionModel

    model, processor = build_model(ModelSpec(vision_tower=backbones["clip"], language_model=backbones["lm"]))
    tok = processor.tokenizer
    assert "<image>" in tok.get_vocab() and tok.pad_token is not None
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<image>")
    assert model.get_input_embeddings().num_embeddings == len(tok)
    lm = AutoModelForCausalLM.from_pretrained(backbones["lm"])
    vision = CLIPVisionModel.from_pretrained(backbones["clip"])
    for name, p in lm.model.layers[0].named_parameters():
        assert torch.equal(p, dict(model.model.language_model.layers[0].named_parameters())[name])
    for name, p in vision.named_parameters():
        assert torch.equal(p, dict(model.model.vision_tower.named_parameters())[name])
    proj = model.model.multi_modal_projector
    assert proj.linear_1.in_features == vision.config.hidden_size
    assert proj.linear_2.out_features == lm.config.hidden_size
    assert model.config.projector_hidden_act == "gelu"


def test_saved_checkpoint_loads_with_plain_transformers_and_answers(backbones, tmp_path):
    spec = ModelSpec(vision_tower=backbones["clip"], language_model=backbones["lm"])
    model, processor = build_model(spec)
    save_checkpoint(model, processor, Recipe(spec=spec), tmp_path / "ckpt")

    plain = LlavaForConditionalGeneration.from_pretrained(tmp_path / "ckpt")
    proc = AutoProcessor.from_pretrained(tmp_path / "ckpt")
    for (k, a), (_, b) in zip(sorted(model.state_dict().items()), sorted(plain.state_dict().items())):
        assert torch.equal(a, b), k
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
    prompt = proc.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt.endswith("USER: <image>\nWhat colour is it? ASSISTANT:")
    inputs = proc(images=Image.new("RGB", (50, 40), (200, 0, 0)), text=prompt, return_tensors="pt")
    assert int((inputs["input_ids"] == plain.config.image_token_id).sum()) == plain.config.image_seq_length
    out = plain.generate(**inputs, max_new_tokens=4, do_sample=False, min_new_tokens=4)
    answer = proc.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4 and isinstance(answer, str)

    again, _, template = load_checkpoint(tmp_path / "ckpt")
    assert template == "vicuna_v1"
    assert torch.equal(again.lm_head.weight, plain.lm_head.weight)


def test_load_checkpoint_rejects_a_non_model_folder(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="not a model folder"):
        load_checkpoint(tmp_path)


def test_a_checkpoint_saved_with_the_old_plain_name_reads_as_human_assistant(backbones, tmp_path):
    """Before LLaVA's `plain` shipped, our base-LM template was called `plain`: such a checkpoint (its
    saved chat template writes 'Human: ') keeps its format under the new name."""
    import json

    spec = ModelSpec(vision_tower=backbones["clip"], language_model=backbones["lm"], template="human_assistant")
    model, processor = build_model(spec)
    save_checkpoint(model, processor, Recipe(spec=spec), tmp_path / "old")
    raw = json.loads((tmp_path / "old" / "allava_recipe.json").read_text())
    raw["spec"]["template"] = "plain"
    (tmp_path / "old" / "allava_recipe.json").write_text(json.dumps(raw))
    assert Recipe.load(tmp_path / "old").spec.template == "human_assistant"
    assert load_checkpoint(tmp_path / "old")[2] == "human_assistant"
