"""Principle 1 (readability), text: does every long response end like a finished sentence?

A teacher that hits `max_tokens` leaves an answer cut mid-sentence; the LM log-prob of the rest
hardly moves, so the cut needs its own check. Responses shorter than `min_words` (short VQA
answers such as "red") are not judged.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from allava.quality.base import Op, OpSettings, QCRecord, Stats, register_op

END = re.compile(r"""[.!?)\]"'`*:;…。！？]\s*$""")


@dataclass
class TextCompletenessSettings(OpSettings):
    min_words: int = 8


@register_op("text_completeness")
class TextCompleteness(Op):
    Settings = TextCompletenessSettings
    primary = "complete"

    def compute(self, batch: list[QCRecord]) -> list[Stats]:
        out: list[Stats] = []
        for r in batch:
            long = [t for t in r.responses if len(t.split()) >= self.settings.min_words]
            out.append({"complete": int(all(END.search(t) for t in long))} if long else {})
        return out

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        v = [s["complete"] for s in stats if "complete" in s]
        return {"complete_responses": float(np.mean(v))} if v else {}
