"""Principle 7 (instruction complexity): how many semantic elements an instruction asks about.

The review counts semantic roles with a dependency parser; the offline default counts distinct
content words (objects, attributes, relations) and clause markers, which rank "What colour is the
circle?" below "Which shape left of the red circle is larger, and why?". With `difficulty: true` a
teacher also rates each instruction 1-10 (`difficulty`, the mean of k samples): the LLM judgement
the review cites for difficulty, which counts reasoning steps no word count can see. A reply
without a number in 1-10 gives `difficulty: null` and is counted (`difficulty_unparsed`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from allava.quality.ask import Asker, TeacherSettings
from allava.quality.base import Op, QCRecord, Stats, no_cache, register_op
from allava.quality.text import content_words

CLAUSE = re.compile(r"\b(and|or|but|if|because|which|that|while|when|whether|than|then)\b|[,;?]", re.IGNORECASE)
DIFFICULTY_SYSTEM = ("You rate how hard a vision-language instruction is to answer well, from 1 (one look, e.g. "
                     "naming a colour) to 10 (many elements and several reasoning steps). Reply with the number only.")
SCALE = re.compile(r"\b(?:1\s*(?:-|–|to)\s*10|out of 10|/\s*10)\b", re.IGNORECASE)
INTEGER = re.compile(r"(?<![\d.])\d+(?![\d.]*\d)")


def difficulty_prompt(instruction: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": DIFFICULTY_SYSTEM},
            {"role": "user", "content": f"Instruction: {instruction}\n\nDifficulty (1-10):"}]


def parse_difficulty(text: str | None) -> int | None:
    """The first integer of the reply once the scale itself ("1-10", "/10") is taken out, if in 1-10."""
    m = INTEGER.search(SCALE.sub(" ", text or ""))
    return int(m.group()) if m and 1 <= int(m.group()) <= 10 else None


@dataclass
class InstructionComplexitySettings(TeacherSettings):
    turn: str = "first"  # first | all human turns
    difficulty: bool = False  # also ask the teacher for a 1-10 difficulty
    max_tokens: int = 8
    batch_size: int = no_cache(64)


@register_op("instruction_complexity")
class InstructionComplexity(Op):
    Settings = InstructionComplexitySettings
    primary = "elements"

    def __init__(self, settings: InstructionComplexitySettings | None = None):
        super().__init__(settings)
        self.asker = Asker(self.settings, "difficulty")

    def _text(self, r: QCRecord) -> str:
        ins = r.instructions[:1] if self.settings.turn == "first" else r.instructions
        return "\n".join(ins)

    def compute(self, batch: list[QCRecord]) -> list[Stats]:
        out: list[Stats] = []
        for r in batch:
            text = self._text(r)
            out.append({"elements": len(set(content_words(text))), "clauses": len(CLAUSE.findall(text)),
                        "words": len(text.split())} if text.strip() else {})
        if self.settings.difficulty:
            todo = [(i, r) for i, r in enumerate(batch) if out[i]]
            answers = self.asker.ask("qc-difficulty", [(r, difficulty_prompt(self._text(r))) for _, r in todo])
            for (i, _), samples in zip(todo, answers):
                scores = [v for v in (parse_difficulty(a) for a in samples) if v is not None]
                out[i]["difficulty"] = float(np.mean(scores)) if scores else None
        return out

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        v = [s["elements"] for s in stats if "elements" in s]
        out: dict[str, Any] = {"instruction_complexity": float(np.mean(v))} if v else {}
        d = [s["difficulty"] for s in stats if s.get("difficulty") is not None]
        if d:
            out["instruction_difficulty"] = float(np.mean(d))
        if any("difficulty" in s for s in stats):
            out["difficulty_unparsed"] = sum("difficulty" in s and s["difficulty"] is None for s in stats)
        return out

    def close(self) -> None:
        self.asker.close()
