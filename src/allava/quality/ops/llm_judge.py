"""Principle 2 (correctness, judged): an LLM / MLLM judges each answer, k times, majority wins.

The review asks LLaVA-1.5 with hand-written guiding examples several times and keeps the most
frequent verdict. Here the judge is any OpenAI-compatible endpoint (OpenAI, vLLM, SGLang, Ollama)
reached through the synthesis teacher (`allava.synth.teachers.openai`: retries honouring
Retry-After, rate limits, a budget). There is no offline default model: without `base_url` /
an API key the op fails at the first uncached record, like the synth verb does.
"""
from __future__ import annotations

import asyncio
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from allava.quality.base import Op, OpSettings, QCRecord, Stats, no_cache, register_op

SYSTEM = ("You check vision-language training data. Given an image, a question and an answer, decide whether the "
          "answer is correct and matches the image. Reply with one word: correct or incorrect.")
EXAMPLES = [
    {"question": "What colour is the circle?", "answer": "The circle is red.", "verdict": "correct",
     "note": "(the image shows a red circle)"},
    {"question": "How many squares are there?", "answer": "There are three squares.", "verdict": "incorrect",
     "note": "(the image shows two squares)"},
]
VERDICT = re.compile(r"\b(incorrect|correct|wrong|right|yes|no)\b", re.IGNORECASE)


def parse_verdict(text: str) -> int | None:
    m = VERDICT.search(text or "")
    if not m:
        return None
    return 1 if m.group(1).lower() in ("correct", "right", "yes") else 0


def majority(votes: list[int | None]) -> Stats:
    valid = [v for v in votes if v is not None]
    if not valid:
        return {"votes": len(votes), "valid": 0}
    yes = sum(valid)
    return {"correct": int(yes * 2 > len(valid)), "agreement": max(yes, len(valid) - yes) / len(valid),
            "votes": len(votes), "valid": len(valid)}


@dataclass
class LLMJudgeSettings(OpSettings):
    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key_env: str = no_cache("OPENAI_API_KEY")
    k: int = 3
    temperature: float = 0.7
    with_image: bool = True
    examples: list[dict] = field(default_factory=lambda: list(EXAMPLES))
    concurrency: int = no_cache(8)
    budget_usd: float | None = no_cache(None)
    batch_size: int = no_cache(16)


@register_op("llm_judge")
class LLMJudge(Op):
    Settings = LLMJudgeSettings
    primary = "correct"

    def messages(self, r: QCRecord, image: bool) -> list[dict[str, Any]]:
        shots = "\n\n".join(f"Question: {e['question']}\nAnswer: {e['answer']} {e.get('note', '')}\n"
                            f"Verdict: {e['verdict']}" for e in self.settings.examples)
        pairs = "\n".join(f"Question: {q}\nAnswer: {a}" for q, a in zip(r.instructions, r.responses))
        text = f"Examples:\n{shots}\n\nNow judge:\n{pairs}\nVerdict:"
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if image:
            content.insert(0, {"type": "image", "path": str(r.image_file)})
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]

    def compute(self, batch: list[QCRecord]) -> list[Stats]:
        return asyncio.run(self._judge(batch))

    async def _judge(self, batch: list[QCRecord]) -> list[Stats]:
        from allava.synth.base import Item, Request, SynthError
        from allava.synth.config import SynthConfig
        from allava.synth.meter import Meter
        from allava.synth.teachers.openai import OpenAITeacher

        s = self.settings
        with tempfile.TemporaryDirectory() as tmp:
            cfg = SynthConfig(task="qc-judge", images=None, out=Path(tmp), model=s.model, base_url=s.base_url,
                              api_key_env=s.api_key_env, concurrency=s.concurrency, max_tokens=8,
                              budget_usd=s.budget_usd, progress=False)
            teacher = OpenAITeacher(cfg, Meter(Path(tmp), None, s.budget_usd))
            sem = asyncio.Semaphore(s.concurrency)

            async def one(r: QCRecord, sample: int) -> int | None:
                req = Request(self.messages(r, s.with_image and r.image_file is not None), task="qc-judge",
                              item=Item(r.id), step=f"judge-{sample}",
                              params={"temperature": s.temperature, "seed": sample})
                async with sem:
                    try:
                        return parse_verdict((await teacher.complete(req)).text)
                    except SynthError:
                        return None

            try:
                votes = await asyncio.gather(*(asyncio.gather(*(one(r, j) for j in range(s.k))) for r in batch))
            finally:
                await teacher.aclose()
        return [majority(list(v)) for v in votes]

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        v = [s["correct"] for s in stats if "correct" in s]
        return {"correctness": float(np.mean(v))} if v else {}
