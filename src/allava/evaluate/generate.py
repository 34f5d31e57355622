"""Greedy answers from a checkpoint, batched, with the prompt built exactly as in training."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from allava.data.tokenize import ConversationEncoder
from allava.config import ConfigError
from allava.model.build import load_checkpoint


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, in one line, before the model is loaded."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: this machine has no CUDA device "
                              "(torch.cuda.is_available() is false); use --device cpu")
        index = device.split(":", 1)[1] if ":" in device else "0"
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: no such CUDA device ({torch.cuda.device_count()} present)")
    elif device == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("--device mps: MPS is not available on this machine; use --device cpu")
    elif device != "cpu":
        raise ConfigError(f"--device {device}: expected cpu, cuda, cuda:N or mps")



@dataclass
class Question:
    conversations: list[dict]  # ending with a human turn
    image: str | Path | bytes | Image.Image | None = None  # bytes: an encoded file (MMBench's base64 cells)


def _rgb(image: str | Path | bytes | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as im:  # closes the file; one open
        return im.convert("RGB")  # handle per question adds up over a benchmark


class Answerer:
    def __init__(self, model_dir: str | Path, max_length: int = 4096, dtype: str | None = None,
                 device: str | None = None):
        if device:
            check_device(device)
        self.model, self.processor, self.template = load_checkpoint(model_dir, dtype=dtype)
        if device:
            self.model.to(device)
        self.model.eval()
        self.tokenizer = self.processor.tokenizer
        self.encoder = ConversationEncoder(self.tokenizer, self.template, self.processor.image_token,
                                           self.model.config.image_seq_length, max_length)

    @torch.inference_mode()
    def set_system(self, system: str) -> None:
        """Replace the template's system prompt (role-prefix templates; `chat --system`)."""
        import dataclasses

        from allava.data.templates import Template

        if not isinstance(self.encoder.template, Template):
            raise ConfigError(f"--system: template {self.template!r} takes its system prompt from the tokenizer")
        self.encoder.template = dataclasses.replace(self.encoder.template, system=system.rstrip() + "\n")

    def batch_inputs(self, prompts: list[list[int]], images: list[Image.Image]) -> dict:
        """`generate` inputs for prompts of different lengths: left padding (generation continues at
        the right edge of every row) with its attention mask, and every image in prompt order."""
        n = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (n - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (n - len(p)) + [1] * len(p) for p in prompts])
        inputs = {"input_ids": ids.to(self.model.device), "attention_mask": mask.to(self.model.device)}
        if images:
            pixels = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
            inputs["pixel_values"] = pixels.to(self.model.dtype).to(self.model.device)
        return inputs

    def answer(self, questions: list[Question], max_new_tokens: int = 32, temperature: float = 0.0,
               top_p: float = 1.0) -> list[str]:
        """Greedy by default; `temperature > 0` samples (with nucleus `top_p`)."""
        inputs = self.batch_inputs([self.encoder.prompt_ids(q.conversations) for q in questions],
                                   [_rgb(q.image) for q in questions if q.image is not None])
        n = inputs["input_ids"].shape[1]
        pad = self.tokenizer.pad_token_id
        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens,
                                  **({"do_sample": True, "temperature": temperature, "top_p": top_p}
                                     if temperature > 0 else {"do_sample": False}),
                                  pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id)
        return [self.tokenizer.decode(row[n:], skip_special_tokens=True).strip() for row in out]
