"""The `openai` teacher: any OpenAI-compatible endpoint (OpenAI, vLLM, SGLang, Ollama, LM Studio).

Order of work per request, chosen so nothing is paid twice and nothing is overspent: hash the
images and look the request up in the cache (a hit is free and skips every limit), encode the
images, estimate the worst-case cost and reserve it in the budget, wait for the RPM/TPM limiters,
send with our own retries (the client's are off so Retry-After is honoured and every attempt is
rate-limited), then settle the reservation with the real usage and cache the answer.
"""
from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from allava.synth.base import (
    Completion,
    Request,
    SynthError,
    Teacher,
    Usage,
    register_teacher,
)
from allava.synth.budget import Price, text_token_bound
from allava.synth.cache import AnswerCache, file_sha256, fingerprint
from allava.synth.config import SynthConfig, TeacherFatal
from allava.synth.limits import RateLimits
from allava.synth.meter import CURRENT_ITEM, Meter

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 429}
COMPLETION_TOKENS_MODELS = ("o1", "o3", "o4", "gpt-5")
MAX_BACKOFF_S = 60.0
MAX_RETRY_AFTER_S = 600.0
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


@dataclass
class EncodedImage:
    url: str
    width: int
    height: int


def encode_image(path: str | Path, max_side: int) -> EncodedImage:
    """A base64 data URL with the longest side <= max_side. Files already small enough in a format
    every endpoint accepts are sent byte for byte; others are resized and re-encoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            fmt = im.format
            w, h = im.size
            if max(w, h) <= max_side and fmt in _MIME and getattr(im, "n_frames", 1) == 1:
                data, mime = Path(path).read_bytes(), _MIME[fmt]
            else:
                scale = min(1.0, max_side / max(w, h))
                w, h = max(1, round(w * scale)), max(1, round(h * scale))
                im2 = im.convert("RGBA" if "A" in im.getbands() else "RGB").resize((w, h), Image.Resampling.LANCZOS)
                buf = io.BytesIO()
                if im2.mode == "RGBA":
                    im2.save(buf, "PNG")
                    mime = "image/png"
                else:
                    im2.save(buf, "JPEG", quality=90)
                    mime = "image/jpeg"
                data = buf.getvalue()
    except FileNotFoundError:
        raise SynthError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise SynthError(f"unreadable image {path}: {e}") from None
    return EncodedImage(f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", w, h)


def image_paths(messages: list[dict[str, Any]]) -> list[str]:
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            out += [str(p["path"]) for p in content if isinstance(p, dict) and p.get("type") == "image"]
    return out


def retry_after_s(headers: Any) -> float | None:
    """`retry-after-ms` (OpenAI), else `Retry-After` in seconds or as an HTTP date."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra:
        try:
            return float(ra)
        except ValueError:
            try:
                return max(0.0, email.utils.parsedate_to_datetime(ra).timestamp() - time.time())
            except (TypeError, ValueError):
                return None
    return None


def backoff_s(attempt: int, base: float = 0.5) -> float:
    """Exponential backoff with jitter (half fixed, half random) so retries of many requests spread."""
    d = min(MAX_BACKOFF_S, base * 2 ** attempt)
    return d / 2 + random.uniform(0, d / 2)


def _http_client(concurrency: int) -> Any:
    try:
        import httpx2 as httpx  # what openai>=3 is built on
    except ImportError:  # pragma: no cover - openai 1.x/2.x
        import httpx
    n = max(16, concurrency * 2)
    return openai.DefaultAsyncHttpxClient(limits=httpx.Limits(max_connections=n, max_keepalive_connections=n))


@register_teacher
class OpenAITeacher(Teacher):
    name = "openai"

    def __init__(self, cfg: SynthConfig, meter: Meter, cache: AnswerCache | None = None,
                 limits: RateLimits | None = None):
        self.cfg = cfg
        self.meter = meter
        self.cache = cache
        self.limits = limits or RateLimits(cfg.rpm, cfg.tpm)
        self._paused_until = 0.0  # monotonic time before which no request is sent (after a 429)
        key = os.environ.get(cfg.api_key_env)
        if not key:
            if cfg.base_url is None:
                raise TeacherFatal(f"no API key: set the environment variable {cfg.api_key_env} "
                                   "(or --api-key-env NAME), or point --base-url at a local endpoint")
            key = "none"  # local servers (vLLM, Ollama, the fake server) accept any key
        self.client = openai.AsyncOpenAI(api_key=key, base_url=cfg.base_url, max_retries=0, timeout=cfg.timeout,
                                         http_client=_http_client(cfg.concurrency))

    async def complete(self, request: Request) -> Completion:
        cfg = self.cfg
        params = {"max_tokens": cfg.max_tokens, **request.params}
        if cfg.model.startswith(COMPLETION_TOKENS_MODELS):  # reasoning models refuse `max_tokens`
            params["max_completion_tokens"] = params.pop("max_tokens")
        paths = image_paths(request.messages)
        hashes = dict(zip(paths, await asyncio.gather(*(asyncio.to_thread(_hash_or_reject, p) for p in paths))))
        key = fingerprint(cfg.model, request.messages, {**params, "_max_image_side": cfg.max_image_side,
                                                        "_detail": cfg.image_detail}, hashes)
        acct = CURRENT_ITEM.get()
        if self.cache is not None and not (acct and acct.bypass_cache):
            hit = self.cache.get(key)
            if hit is not None:
                self.meter.record(hit, request.step)
                return hit
        images = {p: await asyncio.to_thread(encode_image, p, cfg.max_image_side) for p in dict.fromkeys(paths)}
        messages = [self._wire(m, images, cfg.image_detail) for m in request.messages]
        price = self.meter.price
        text_bound = text_token_bound(request.messages)
        image_tokens = sum((price or Price(0, 0)).image_tokens(images[p].width, images[p].height, cfg.image_detail)
                           for p in paths)
        max_out = int(params.get("max_completion_tokens") or params["max_tokens"])
        estimate = self.meter.cost(text_bound + image_tokens, max_out)  # the budget's upper bound
        # The TPM limiter counts like the provider does (about 4 bytes per token, plus max_tokens);
        # the byte-count upper bound would throttle a run to a quarter of its allowance.
        rate_tokens = text_bound // 4 + image_tokens + max_out
        await self.meter.budget.reserve(estimate)
        actual = 0.0
        try:
            resp = await self._send(messages, params, rate_tokens)
            usage = Usage(resp.usage.prompt_tokens, resp.usage.completion_tokens) if resp.usage else Usage()
            actual = self.meter.cost(usage.prompt_tokens, usage.completion_tokens) if resp.usage else estimate
        finally:
            await self.meter.budget.settle(estimate, actual)
        if not resp.choices:
            raise SynthError("the endpoint returned no choices")
        choice = resp.choices[0]
        text = choice.message.content if choice.message else None
        completion = Completion(text=text or "", model=resp.model or cfg.model, usage=usage, cost_usd=actual,
                                finish_reason=choice.finish_reason)
        self.meter.record(completion, request.step)
        if self.cache is not None:
            self.cache.put(key, completion)
        return completion

    @staticmethod
    def _wire(message: dict[str, Any], images: dict[str, EncodedImage], detail: str) -> dict[str, Any]:
        content = message.get("content")
        if not isinstance(content, list):
            return message
        parts = []
        for p in content:
            if isinstance(p, dict) and p.get("type") == "image":
                parts.append({"type": "image_url", "image_url": {"url": images[str(p["path"])].url,
                                                                 "detail": p.get("detail", detail)}})
            else:
                parts.append(p)
        return {**message, "content": parts}

    _reached = False  # set on the first answer: afterwards a connection error is retried as a blip

    async def _send(self, messages: list[dict[str, Any]], params: dict[str, Any], tokens: int) -> Any:
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            pause = self._paused_until - time.monotonic()
            if pause > 0:  # the endpoint said "slow down" to one request: all of them listen
                await asyncio.sleep(pause)
            await self.limits.acquire(tokens)
            self.meter.requests += 1
            wait = None
            try:
                # client.post (the SDK's documented way to call any endpoint) skips create()'s typed-dict
                # transform of the whole body: ~1 ms of CPU per request, a third of our overhead.
                reply = await self.client.post("/chat/completions", cast_to=ChatCompletion,
                                               body={"model": self.cfg.model, "messages": messages, **params})
                self._reached = True
                return reply
            except openai.APITimeoutError:
                last = f"timed out after {self.cfg.timeout:g}s"
            except openai.APIConnectionError as e:
                last = f"connection error: {e.__cause__ or e}"
                if not self._reached and attempt >= 1:  # never reached at all: a wrong URL, not a blip
                    raise TeacherFatal(self._unreachable(last)) from None
            except openai.APIStatusError as e:
                status, body = e.status_code, _error_text(e)
                code = getattr(e, "code", None)
                if status in (401, 403) or (status == 404 and "model" in body.lower()) or code == "insufficient_quota":
                    raise TeacherFatal(f"the endpoint refused the request (HTTP {status}): {body}") from None
                if status not in RETRY_STATUS and status < 500:
                    raise SynthError(f"HTTP {status}: {body}") from None
                last = f"HTTP {status}: {body}"
                wait = retry_after_s(e.response.headers if e.response is not None else None)
                if status == 429 and wait is not None:
                    self._paused_until = max(self._paused_until, time.monotonic() + min(wait, MAX_RETRY_AFTER_S))
            if attempt == self.cfg.max_retries:
                break
            self.meter.retries += 1
            delay = min(MAX_RETRY_AFTER_S, wait) if wait is not None else backoff_s(attempt)
            log.info("retry %d in %.2fs: %s", attempt + 1, delay, last)
            await asyncio.sleep(delay)
        if last.startswith("connection error"):  # the network, not the item: it stays pending
            raise TeacherFatal(self._unreachable(last))
        raise SynthError(f"gave up after {self.cfg.max_retries + 1} attempts: {last}")

    def _unreachable(self, last: str) -> str:
        url = self.cfg.base_url or "https://api.openai.com/v1"
        return (f"cannot reach the endpoint {url} ({last}); items stay pending: fix --base-url (or the network) "
                "and rerun the same command")

    async def aclose(self) -> None:
        await self.client.close()


def _hash_or_reject(path: str) -> str:
    try:
        return file_sha256(path)
    except FileNotFoundError:
        raise SynthError(f"image not found: {path}") from None
    except OSError as e:
        raise SynthError(f"unreadable image {path}: {e}") from None


def _error_text(e: Any) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body["error"] if isinstance(body.get("error"), dict) else body
        if err.get("message"):
            return str(err["message"])[:300]
    return str(getattr(e, "message", e))[:300]
