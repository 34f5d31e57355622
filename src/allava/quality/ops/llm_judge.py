"""Principle 2 (correctness, judged): an LLM / MLLM judges each answer, k times, majority wins.

The review asks LLaVA-1.5 with hand-written guiding examples several times and keeps the most
frequent verdict. Here the judge is any teacher of the synthesis registry, reached through
`allava.quality.ask`: `openai` (the default) for any OpenAI-compatible endpoint (OpenAI, vLLM,
SGLang, Ollama; retries honouring Retry-After, rate limits, a budget), or `scene`, the offline
stand-in for GPT-4V, which checks every answer's claims against the record's scene graph (records of
the quickstart world carry `meta.seed`; `allava synth` exports, the scene its teacher's own description
in `meta.raw` states) and replies in the same one-word format. A record is one
prompt with all its question / answer pairs, so a multi-turn record is incorrect when any turn is.
Records the teacher cannot judge (no scene graph, a request that failed) get no `correct` stat.
A false premise counts as wrong: the prompt tells a real judge so (with a guiding example), and the
scene teacher checks the question's referents and reworded questions (`allava.quality.premise`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from allava.quality.ask import Asker, TeacherSettings
from allava.quality.base import Op, QCRecord, Stats, register_op

SYSTEM = ("You check vision-language training data. Given an image, a question and an answer, decide whether the "
          "answer is correct and matches the image. A question with a false premise (it asks about an object, colour "
          "or text that the image does not show) makes the answer incorrect unless the answer says so. "
          "Reply with one word: correct or incorrect.")
EXAMPLES = [
    {"question": "What colour is the circle?", "answer": "The circle is red.", "verdict": "correct",
     "note": "(the image shows a red circle)"},
    {"question": "How many squares are there?", "answer": "There are three squares.", "verdict": "incorrect",
     "note": "(the image shows two squares)"},
    {"question": "How many suns are there?", "answer": "1", "verdict": "incorrect",
     "note": "(the image shows no sun: the question's premise is false)"},
]
JUDGE_MARK = "Now judge:"  # what follows it are the record's "Question: ...\nAnswer: ..." pairs
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
class LLMJudgeSettings(TeacherSettings):
    k: int = 3
    temperature: float = 0.7
    max_tokens: int = 8
    with_image: bool = True
    examples: list[dict] = field(default_factory=lambda: list(EXAMPLES))


@register_op("llm_judge")
class LLMJudge(Op):
    Settings = LLMJudgeSettings
    primary = "correct"
    VERSION = "4"  # 3: reads the teacher's description without a scene graph; 4: full referents, absent answers

    def __init__(self, settings: LLMJudgeSettings | None = None):
        super().__init__(settings)
        self.asker = Asker(self.settings, "judge")

    def messages(self, r: QCRecord, image: bool) -> list[dict[str, Any]]:
        shots = "\n\n".join(f"Question: {e['question']}\nAnswer: {e['answer']} {e.get('note', '')}\n"
                            f"Verdict: {e['verdict']}" for e in self.settings.examples)
        pairs = "\n".join(f"Question: {q}\nAnswer: {a}" for q, a in zip(r.instructions, r.responses))
        text = f"Examples:\n{shots}\n\n{JUDGE_MARK}\n{pairs}\nVerdict:"
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if image:
            content.insert(0, {"type": "image", "path": str(r.image_file)})
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]

    def compute(self, batch: list[QCRecord]) -> list[Stats]:
        s = self.settings
        prompts = [(r, self.messages(r, s.with_image and r.image_file is not None)) for r in batch]
        return [majority([parse_verdict(a) if a is not None else None for a in answers])
                for answers in self.asker.ask("qc-judge", prompts)]

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        v = [s["correct"] for s in stats if "correct" in s]
        out: dict[str, Any] = {"correctness": float(np.mean(v))} if v else {}
        unjudged = sum("correct" not in s for s in stats)
        if unjudged:
            out["judge_unjudged"] = unjudged
        return out

    def close(self) -> None:
        self.asker.close()
