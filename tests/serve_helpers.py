"""Shared by the serve tests: a tiny checkpoint, a server on a thread, image data URLs."""
from __future__ import annotations

import base64
import contextlib
import io
from pathlib import Path

from PIL import Image


def tiny_checkpoint(backbones, out: Path) -> Path:
    from allava.model.build import ModelSpec, Recipe, build_model, save_checkpoint

    spec = ModelSpec(vision_tower=backbones["clip"], language_model=backbones["lm"])
    model, processor = build_model(spec)
    save_checkpoint(model, processor, Recipe(spec=spec), out)
    return out


def data_url(colour=(200, 40, 40), size=(24, 20), fmt="PNG") -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode()}"


def image_message(text: str, url: str) -> dict:
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]}


@contextlib.contextmanager
def running(model_dir, engine, **options):
    """A server on 127.0.0.1 (free port) around an already loaded engine."""
    from allava.serve.config import ServeConfig
    from allava.serve.server import BackgroundServer

    cfg = ServeConfig(model=str(model_dir), **options)
    with BackgroundServer(cfg, engine) as url:
        yield url
