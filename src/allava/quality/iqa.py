"""A no-reference image quality model (the review uses MANIQA) behind `image_readability`'s `iqa`.

Any `transformers` image-classification model by hub id or local path (+ its image processor), so
a MANIQA/MUSIQ-style regressor or a quality classifier fine-tuned on KonIQ/AVA loads the same way:
a one-output head is a regression and its logit is the score; otherwise the score is the
probability of `label` (e.g. "good"), or, when every label is a number (e.g. 1..5 MOS bins), the
expected label under the softmax. Which reading applies is decided once, at load, and wrong
settings fail there with the model's labels in the message, not as silent NaNs.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

# IQA backends by name (`image_readability.iqa_backend`): each builds a scorer from (model ref, label,
# device) whose `score(list of PIL RGB images)` returns one float per image, higher = better. Register
# your own (e.g. a pyiqa MANIQA/MUSIQ wrapper) with `@register_iqa("name")`.
IQA_BACKENDS: dict[str, Callable[[str, str | None, str], Any]] = {}


def register_iqa(name: str):
    def wrap(factory):
        IQA_BACKENDS[name] = factory
        return factory
    return wrap


def load_iqa(backend: str, ref: str, label: str | None = None, device: str = "cpu") -> Any:
    """The scorer of IQA backend `backend` for model `ref`; an unknown backend is a one-line error."""
    if backend not in IQA_BACKENDS:
        from allava.config import ConfigError

        raise ConfigError(f"image_readability: unknown iqa_backend {backend!r}; known: {sorted(IQA_BACKENDS)}")
    return IQA_BACKENDS[backend](ref, label, device)


@register_iqa("transformers")
class IQAModel:
    def __init__(self, ref: str, label: str | None = None, device: str = "cpu"):
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        from allava.config import ConfigError
        from allava.quality.models import check_model

        path = check_model(ref, "image_readability.iqa_model")
        self.model = AutoModelForImageClassification.from_pretrained(path).to(device).eval()
        self.proc = AutoImageProcessor.from_pretrained(path)
        self.device = device
        labels = {int(i): str(name) for i, name in (self.model.config.id2label or {}).items()}
        n = int(self.model.config.num_labels)
        self.index: int | None = None
        self.values: list[float] | None = None
        if n == 1:
            return
        if label is not None:
            found = [i for i, name in labels.items() if name.lower() == label.lower()]
            if not found:
                raise ConfigError(f"image_readability: iqa_label {label!r} is not a label of {ref} "
                                  f"({sorted(labels.values())})")
            self.index = found[0]
            return
        try:
            self.values = [float(labels[i]) for i in range(n)]
        except (KeyError, ValueError):
            raise ConfigError(f"image_readability: {ref} has labels {[labels.get(i) for i in range(n)]}; set "
                              "`iqa_label` to the one meaning good quality (or use numeric labels or a 1-output "
                              "regression head)") from None

    def score(self, images: list[Any]) -> list[float]:
        """One score per PIL image (RGB), higher = better."""
        import torch

        px = self.proc(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        with torch.no_grad():
            logits = self.model(pixel_values=px).logits.float()
        if self.values is None and self.index is None:
            return logits[:, 0].cpu().tolist()
        p = torch.softmax(logits, dim=-1)
        if self.index is not None:
            return p[:, self.index].cpu().tolist()
        return (p @ torch.tensor(self.values, dtype=p.dtype, device=p.device)).cpu().tolist()
