"""An LLM judge: any OpenAI-compatible endpoint, through the synthesis teacher client.

Reusing `OpenAITeacher` gives the judge the same request cache (a re-score never pays twice),
retries honouring Retry-After, and rate limits. A request that still fails returns None and is
counted by the benchmark as a judge failure, never as a score.
"""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from allava.synth.base import Item, Request, SynthError

Messages = list[dict[str, Any]]


class Judge(Protocol):
    model: str

    def ask(self, prompts: list[Messages], max_tokens: int = 1024,
            temperature: float | None = None) -> list[str | None]:
        """One answer per prompt, None where the endpoint gave up (temperature: the judge's default when None)."""


@dataclass
class OpenAIJudge:
    base_url: str | None
    model: str
    cache_dir: Path
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    temperature: float = 0.0

    def ask(self, prompts: list[Messages], max_tokens: int = 1024,
            temperature: float | None = None) -> list[str | None]:
        from allava.synth.cache import AnswerCache
        from allava.synth.config import SynthConfig

        t = self.temperature if temperature is None else temperature
        out = Path(self.cache_dir)
        out.mkdir(parents=True, exist_ok=True)
        cfg = SynthConfig(task="judge", images=None, out=out, base_url=self.base_url, model=self.model,
                          api_key_env=self.api_key_env, concurrency=self.concurrency, max_tokens=max_tokens)
        cache = AnswerCache(out / "judge_cache.sqlite")
        try:
            return ask_all(cfg, prompts, {"temperature": t, "max_tokens": max_tokens}, cache)
        finally:
            cache.close()


def ask_all(cfg, prompts: list[Messages], params: dict[str, Any], cache=None) -> list[str | None]:
    """Every prompt through the synthesis teacher client (`OpenAITeacher`: retries, Retry-After,
    rate limits, `cfg.concurrency` in flight), None where it gave up. Token counts go to
    ``cfg.out/ledger.jsonl``. Shared by the judge and `eval run --base-url`."""
    return asyncio.run(_ask_all(cfg, prompts, params, cache))


async def _ask_all(cfg, prompts: list[Messages], params: dict[str, Any], cache) -> list[str | None]:
    from allava.synth.meter import Meter
    from allava.synth.teachers.openai import OpenAITeacher

    meter = Meter(Path(cfg.out), None, None)
    teacher = OpenAITeacher(cfg, meter, cache)
    gate = asyncio.Semaphore(cfg.concurrency)

    async def one(i: int, messages: Messages) -> str | None:
        async with gate:
            try:
                req = Request(messages, task=cfg.task, item=Item(id=f"{cfg.task}-{i}"), params=dict(params))
                return (await teacher.complete(req)).text
            except SynthError:
                return None

    try:
        return list(await asyncio.gather(*(one(i, m) for i, m in enumerate(prompts))))
    finally:
        await teacher.aclose()
        meter.close()


# --- score parsers: each returns None on failure so the benchmark can count it ----------------
_PAIR = re.compile(r"^\s*\**\s*(\d+(?:\.\d+)?)\s*(?:[,/\s]|and)\s*(\d+(?:\.\d+)?)\s*\**\s*$")
_ASSISTANT = re.compile(r"Assistant\s*([12])\D{0,20}?(\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_pair_score(review: str | None) -> tuple[float, float] | None:
    """LLaVA ``summarize_gpt_review.parse_score``: the first line holds the two scores ("8 7" or
    "8, 7"). When it does not, accept "Assistant 1: 8 ... Assistant 2: 7"; else a failure (LLaVA
    would record -1, -1 and average it in; we count it and leave it out)."""
    if not review:
        return None
    first = review.strip().split("\n")[0].replace(",", " ")
    parts = first.split()
    if len(parts) == 2:
        try:
            return float(parts[0]), float(parts[1])
        except ValueError:
            pass
    m = _PAIR.match(review.strip().split("\n")[0])
    if m:
        return float(m.group(1)), float(m.group(2))
    found = {k: float(v) for k, v in _ASSISTANT.findall(review)}
    if "1" in found and "2" in found:
        return found["1"], found["2"]
    return None


def parse_unit_score(text: str | None) -> float | None:
    """MM-Vet grader: the first whitespace token is a number in [0, 1]."""
    if not text:
        return None
    try:
        score = float(text.strip().split(" ")[0].strip().rstrip("."))
    except ValueError:
        return None
    return score if 0.0 <= score <= 1.0 else None


def parse_verdict(text: str | None) -> int | None:
    """ALLaVA's Vicuna-80 judge answers "Answer1" or "Answer2": 1 or 2, None if neither or both."""
    if not text:
        return None
    hits = set(re.findall(r"Answer\s*([12])", text, re.IGNORECASE))
    return int(hits.pop()) if len(hits) == 1 else None
