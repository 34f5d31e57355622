"""Benchmark answers from any OpenAI-compatible endpoint (`allava serve`, vLLM, SGLang, a hosted
model), through the synthesis teacher client: the same retries (Retry-After honoured), concurrency
limit and connection handling as `allava synth`.

A question becomes the OpenAI message list the checkpoint's chat template reads: each ``<image>``
marker an image part at its place (the newline after it belongs to the marker, as in
`Template.jinja`), the turns as user/assistant messages, greedy decoding. Images go byte for byte
(no resizing), so an `allava serve` endpoint sees exactly the pixels a local run does.
"""
from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allava.data.tokenize import IMAGE_MARKER
from allava.evaluate.generate import Question

NO_RESIZE = 1 << 16


def remote_fingerprint(base_url: str, model: str) -> str:
    """The answer cache's model key for an endpoint: its URL and model name."""
    return "remote-" + hashlib.sha256(f"{base_url.rstrip('/')}\0{model}".encode()).hexdigest()[:16]


def _image_part(image: Any) -> dict:
    if isinstance(image, (str, Path)):
        return {"type": "image", "path": str(image)}  # the teacher hashes and encodes it
    from PIL import Image

    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, "PNG")
        data, fmt = buf.getvalue(), "png"
    else:
        data = bytes(image)
        with Image.open(io.BytesIO(data)) as im:
            fmt = (im.format or "png").lower()
    return {"type": "image_url", "image_url": {"url": f"data:image/{fmt};base64,{base64.b64encode(data).decode()}"}}


def to_messages(q: Question) -> list[dict]:
    messages = []
    for turn in q.conversations:
        pieces = turn["value"].split(IMAGE_MARKER)
        if turn["from"] != "human" or len(pieces) == 1:
            messages.append({"role": "user" if turn["from"] == "human" else "assistant", "content": turn["value"]})
            continue
        parts: list[dict] = [{"type": "text", "text": pieces[0]}] if pieces[0] else []
        for piece in pieces[1:]:
            parts.append(_image_part(q.image))
            piece = piece[1:] if piece.startswith("\n") else piece
            if piece:
                parts.append({"type": "text", "text": piece})
        messages.append({"role": "user", "content": parts})
    return messages


@dataclass
class RemoteAnswerer:
    base_url: str
    model: str
    cache_dir: Path
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout: float = 300.0
    max_retries: int = 6

    def answer(self, questions: list[Question], max_new_tokens: int) -> list[str | None]:
        """One text per question; None where the endpoint still failed after the retries (the
        question stays unanswered: not cached, retried by the next run, counted in the coverage)."""
        from allava.evaluate.judge import ask_all
        from allava.synth.config import SynthConfig

        cfg = SynthConfig(task="eval", images=None, out=Path(self.cache_dir), base_url=self.base_url, model=self.model,
                          api_key_env=self.api_key_env, concurrency=self.concurrency, max_tokens=max_new_tokens,
                          timeout=self.timeout, max_retries=self.max_retries, max_image_side=NO_RESIZE)
        # no teacher cache: the runner's answer cache keeps the answers
        texts = ask_all(cfg, [to_messages(q) for q in questions], {"temperature": 0, "max_tokens": max_new_tokens})
        return [t.strip() if t is not None else None for t in texts]
