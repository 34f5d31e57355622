"""Principle 7 (instruction complexity): how many semantic elements an instruction asks about.

The review counts semantic roles with a dependency parser; the offline default counts distinct
content words (objects, attributes, relations) and clause markers, which rank "What colour is the
circle?" below "Which shape left of the red circle is larger, and why?". An LLM difficulty score
(1-10) through the synthesis teacher is the real backend still to come.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from allava.quality.base import Op, OpSettings, QCRecord, Stats, register_op
from allava.quality.text import content_words

CLAUSE = re.compile(r"\b(and|or|but|if|because|which|that|while|when|whether|than|then)\b|[,;?]", re.IGNORECASE)


@dataclass
class InstructionComplexitySettings(OpSettings):
    turn: str = "first"  # first | all human turns


@register_op("instruction_complexity")
class InstructionComplexity(Op):
    Settings = InstructionComplexitySettings
    primary = "elements"

    def compute(self, batch: list[QCRecord]) -> list[Stats]:
        out = []
        for r in batch:
            ins = r.instructions[:1] if self.settings.turn == "first" else r.instructions
            text = " ".join(ins)
            if not text.strip():
                out.append({})
                continue
            out.append({"elements": len(set(content_words(text))), "clauses": len(CLAUSE.findall(text)),
                        "words": len(text.split())})
        return out

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        v = [s["elements"] for s in stats if "elements" in s]
        return {"instruction_complexity": float(np.mean(v))} if v else {}
