"""Text-to-image backends for StableLLaVA-style synthesis, in a registry.

`scenes` (offline default) parses the controlled prompt grammar of `allava.synth.scene_prompt`
and renders the scene procedurally, so the image shows exactly what the prompt (and therefore
the dialogue written from it) says. `diffusers` runs any Stable Diffusion pipeline by local path
or hub id through `diffusers.AutoPipelineForText2Image`; it is an optional dependency
(`pip install allava[diffusers]`), imported only when used. Add your own with
`@register_generator`.
"""
from __future__ import annotations

import asyncio
import importlib.util
import io
import os
import threading
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from allava.model.refs import local_model_path
from allava.synth.base import SynthError
from allava.synth.config import SynthConfigError
from allava.synth.scene_prompt import GRAMMAR, prompt_to_scene


class ImageGenerator(ABC):
    """Renders one prompt to one PNG. `grammar` is appended to the LLM's image-prompt request
    when the backend only understands a restricted language (empty for real diffusion models)."""

    name: ClassVar[str]
    grammar: ClassVar[str] = ""
    blocking: ClassVar[bool] = False  # run in a worker thread so the event loop keeps serving teachers

    @abstractmethod
    def generate(self, prompt: str, seed: int) -> Image.Image:
        """The image for `prompt`; SynthError when the prompt cannot be rendered."""

    def save(self, prompt: str, path: Path, seed: int) -> None:
        """Render and write atomically (a crash never leaves a half-written PNG behind)."""
        img = self.generate(prompt, seed)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)

    async def asave(self, prompt: str, path: Path, seed: int) -> None:
        if self.blocking:
            await asyncio.to_thread(self.save, prompt, path, seed)
        else:
            self.save(prompt, path, seed)


class MissingDependencyError(SynthConfigError, RuntimeError):
    """An optional dependency of the chosen backend is not installed (a user error: one line, exit 2)."""


GENERATORS: dict[str, type[ImageGenerator]] = {}


def register_generator(cls: type[ImageGenerator]) -> type[ImageGenerator]:
    GENERATORS[cls.name] = cls
    return cls


def build_generator(name: str, **options: Any) -> ImageGenerator:
    """A generator by name; options the backend does not take are ignored (one CLI, many backends)."""
    if name not in GENERATORS:
        raise SynthConfigError(f"unknown image generator {name!r}; choose from {sorted(GENERATORS)}")
    cls = GENERATORS[name]
    import inspect

    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted and v is not None})


@register_generator
class ScenesGenerator(ImageGenerator):
    """The procedural renderer driven by text: offline, deterministic, exact."""

    name = "scenes"
    grammar = GRAMMAR

    def __init__(self, image_size: int = 96):
        self.image_size = int(image_size)

    def generate(self, prompt: str, seed: int) -> Image.Image:
        from allava.scenes.render import render

        return render(prompt_to_scene(prompt, self.image_size, seed))


@register_generator
class DiffusersGenerator(ImageGenerator):
    """Any Stable Diffusion pipeline (SD 1.5, SDXL, SD3, ...) from a local path or hub id. The
    pipeline is loaded when the generator is built (at `bind`), so a wrong model stops the run before
    any teacher call is paid for; a lock lets one GPU render one prompt at a time. The same prompt and
    seed give the same image on the same device (the task seeds by item id, so resumes are stable).
    The pipeline's own safety checker is left as shipped."""

    name = "diffusers"
    blocking = True

    def __init__(self, model: str | None = None, steps: int = 30, guidance: float = 7.5,
                 image_size: int | None = None, device: str | None = None):
        if not model:
            raise SynthConfigError("the diffusers image generator needs a model: a local path or hub id "
                                   "(--imagegen-model runwayml/stable-diffusion-v1-5)")
        if importlib.util.find_spec("diffusers") is None:
            raise MissingDependencyError("the diffusers image generator needs the optional dependency: "
                                         "pip install 'allava[diffusers]'")
        if image_size is not None and (int(image_size) <= 0 or int(image_size) % 8):
            raise SynthConfigError(f"--image-size {image_size} for the diffusers image generator must be a "
                                   "positive multiple of 8")
        self.model, self.steps, self.guidance = str(model), int(steps), float(guidance)
        self.image_size = int(image_size) if image_size else None
        self._lock = threading.Lock()
        self._pipe, self._device = self._load(device)

    def _load(self, device: str | None) -> tuple[Any, str]:
        import torch
        from diffusers import AutoPipelineForText2Image

        path = local_model_path(self.model)
        if path is not None and not path.is_dir():
            raise SynthConfigError(f"diffusers image generator: model folder {self.model} does not exist")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
                pipe = AutoPipelineForText2Image.from_pretrained(str(path) if path is not None else self.model,
                                                                 torch_dtype=dtype)
        except (OSError, ValueError) as e:
            raise SynthConfigError(f"diffusers image generator: cannot load pipeline {self.model!r}: {e}") from e
        pipe.set_progress_bar_config(disable=True)  # one bar per image would bury the run's own
        return pipe.to(device), device

    def generate(self, prompt: str, seed: int) -> Image.Image:
        import torch

        size = {"height": self.image_size, "width": self.image_size} if self.image_size else {}
        with self._lock:
            gen = torch.Generator(device=self._device).manual_seed(int(seed))
            out = self._pipe(prompt, num_inference_steps=self.steps, guidance_scale=self.guidance, generator=gen,
                             **size)
        nsfw = getattr(out, "nsfw_content_detected", None)
        if nsfw and any(nsfw):
            raise SynthError("the image generator's safety checker flagged the image")
        return out.images[0].convert("RGB")
