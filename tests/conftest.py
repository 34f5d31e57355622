"""Shared fixtures: tiny backbones built from configs and saved to disk, so tests run the real
loading code (hub id or local path) without downloading anything."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 60, 220), "yellow": (230, 210, 20)}
WORDS = ("a red circle at the top left and a blue square below it what colour is the shape "
         "answer the question using a single word or phrase green yellow describe the image").split()


def make_image(path: Path, colour: str, size: int = 32) -> None:
    from PIL import Image

    Image.new("RGB", (size, size), COLOURS[colour]).save(path)


@pytest.fixture(scope="session")
def backbones(tmp_path_factory) -> dict[str, str]:
    """A byte-level BPE tokenizer, a random-init tiny Llama and a random-init tiny CLIP on disk."""
    from transformers import CLIPImageProcessor, CLIPModel, LlamaForCausalLM

    from allava.model.presets import PRESETS
    from allava.train.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("backbones")
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(300)]
    tok = train_tokenizer(texts, root / "lm", vocab_size=400)
    tok.save_pretrained(root / "clip")
    lm_preset, clip_preset = PRESETS["test"]
    LlamaForCausalLM(lm_preset.config(len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)).save_pretrained(root / "lm")
    CLIPModel(clip_preset.config(len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)).save_pretrained(root / "clip")
    size = clip_preset.image_size
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(root / "clip")
    return {"lm": str(root / "lm"), "clip": str(root / "clip"), "root": str(root)}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, str]:
    """Solid-colour images with caption, short-VQA and text-only records in LLaVA format."""
    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    captions, vqa, text = [], [], []
    for i in range(24):
        colour = list(COLOURS)[i % 4]
        make_image(root / "images" / f"{i}.png", colour)
        captions.append({"id": f"cap{i}", "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image concisely."},
            {"from": "gpt", "value": f"A {colour} square fills the whole picture."}]})
        vqa.append({"id": f"vqa{i}", "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the image?\nAnswer the question using a single word or phrase."},
            {"from": "gpt", "value": colour},
            {"from": "human", "value": "Is it a photo?"},
            {"from": "gpt", "value": "No, it is a flat colour."}]})
        text.append({"id": f"txt{i}", "conversations": [
            {"from": "human", "value": f"The picture is {colour}. What colour is it?"},
            {"from": "gpt", "value": colour}]})
    for name, recs in (("captions", captions), ("vqa", vqa), ("text", text)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return {"root": str(root), "images": str(root / "images"), "captions": str(root / "captions.jsonl"),
            "vqa": str(root / "vqa.jsonl"), "text": str(root / "text.jsonl")}
