"""An OpenAI chat-completions body -> one generation request, every field checked.

The message list becomes the conversation the checkpoint trained on: ``user``/``assistant``
turns as LLaVA's ``human``/``gpt``, each image part as the ``<image>\\n`` marker at its place in the
message (what the template's ``jinja()`` renders for an OpenAI message list), a leading ``system``
message as the template's system prompt.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from allava.data.tokenize import IMAGE_MARKER
from allava.serve.config import ServeConfig
from allava.serve.errors import APIError, bad
from allava.serve.images import load_image

IGNORED = {"user", "presence_penalty", "frequency_penalty", "logit_bias", "metadata", "store",
           "stream_options", "parallel_tool_calls", "service_tier", "response_format"}
KNOWN = {"model", "messages", "stream", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
         "seed", "n"} | IGNORED


@dataclass
class ChatRequest:
    conversations: list[dict]
    images: list[Image.Image]
    system: str | None
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the counts

    @property
    def sampling(self) -> bool:
        return self.temperature > 0


def _number(body: dict, key: str, low: float, high: float, integer: bool = False) -> Any:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        raise bad(key, f"expected {'an integer' if integer else 'a number'}, got {v!r}")
    if not low <= v <= high:
        raise bad(key, f"{v} is outside [{low:g}, {high:g}]")
    return v


async def parse_chat(body: Any, cfg: ServeConfig) -> ChatRequest:
    if not isinstance(body, dict):
        raise bad("body", "expected a JSON object")
    unknown = sorted(set(body) - KNOWN)
    if unknown:
        raise bad(unknown[0], "unsupported parameter")
    model = body.get("model")
    if model is not None and model != cfg.model_name:
        raise APIError(404, f"The model `{model}` does not exist; this server serves `{cfg.model_name}`",
                       param="model", code="model_not_found")
    if _number(body, "n", 1, 1, integer=True) not in (None, 1):
        raise bad("n", "only n=1 is supported")
    max_tokens = None
    for key in ("max_completion_tokens", "max_tokens"):
        v = _number(body, key, 1, float("inf"), integer=True)
        if v is not None:
            if v > cfg.max_new_tokens:
                raise bad(key, f"{v} is over this server's limit of {cfg.max_new_tokens} (--max-new-tokens)")
            max_tokens = max_tokens or v
    temperature = _number(body, "temperature", 0, 2)
    top_p = _number(body, "top_p", 0, 1)
    if top_p == 0:
        raise bad("top_p", "must be above 0")
    seed = _number(body, "seed", -(2 ** 63), 2 ** 63 - 1, integer=True)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or len(stop) > 4
                             or not all(isinstance(s, str) and s for s in stop)):
        raise bad("stop", "expected a non-empty string or a list of up to 4 of them")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("stream", f"expected true or false, got {stream!r}")
    opts = body.get("stream_options") or {}
    conversations, images, system = await _messages(body.get("messages"), cfg)
    return ChatRequest(conversations, images, system, max_tokens or cfg.max_new_tokens,
                       float(temperature if temperature is not None else 0.0),
                       float(top_p if top_p is not None else 1.0), stop or [], seed, stream,
                       bool(isinstance(opts, dict) and opts.get("include_usage")))


async def _messages(messages: Any, cfg: ServeConfig) -> tuple[list[dict], list[Image.Image], str | None]:
    if not isinstance(messages, list) or not messages:
        raise bad("messages", "expected a non-empty list of messages")
    conversations: list[dict] = []
    images: list[Image.Image] = []
    system = None
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad(where, "expected an object with role and content")
        role = m.get("role")
        if role in ("system", "developer"):
            if i != 0:
                raise bad(f"{where}.role", "a system message is accepted only as the first message")
            system = await _content(m.get("content"), f"{where}.content", cfg, images, allow_images=False)
            continue
        if role not in ("user", "assistant"):
            raise bad(f"{where}.role", f"expected user, assistant or system, got {role!r}")
        speaker = "human" if role == "user" else "gpt"
        if conversations and conversations[-1]["from"] == speaker:
            raise bad(f"{where}.role", "user and assistant messages must alternate")
        if not conversations and speaker == "gpt":
            raise bad(f"{where}.role", "the conversation must start with a user message")
        text = await _content(m.get("content"), f"{where}.content", cfg, images, allow_images=role == "user")
        conversations.append({"from": speaker, "value": text})
    if not conversations or conversations[-1]["from"] != "human":
        raise bad("messages", "the last message must be a user message")
    return conversations, images, system


async def _content(content: Any, where: str, cfg: ServeConfig, images: list, allow_images: bool) -> str:
    if isinstance(content, str):
        return _text(content, where)
    if not isinstance(content, list) or not content:
        raise bad(where, "expected a string or a non-empty list of parts")
    out = []
    for k, part in enumerate(content):
        at = f"{where}[{k}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            out.append(_text(part.get("text"), f"{at}.text"))
        elif kind == "image_url":
            if not allow_images:
                raise bad(at, "images are accepted in user messages only")
            if len(images) >= cfg.max_images:
                raise bad(at, f"more than {cfg.max_images} images in one conversation (--max-images)")
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            images.append(await load_image(url, f"{at}.image_url", cfg))
            out.append(IMAGE_MARKER + "\n")
        else:
            raise bad(f"{at}.type", f"expected 'text' or 'image_url', got {kind!r}")
    return "".join(out)


def _text(text: Any, where: str) -> str:
    if not isinstance(text, str):
        raise bad(where, "expected a string")
    if IMAGE_MARKER in text:
        raise bad(where, f"the text contains the image marker {IMAGE_MARKER!r}; send images as image_url parts")
    return text
