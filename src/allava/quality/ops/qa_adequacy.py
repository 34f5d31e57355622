"""Does the answer give the detail its question asks for? (terse and echoed answers)

A teacher asked to "explain" or "reason step by step" sometimes replies with the bare answer ("2.",
"The answer is 2."), and a broken one repeats the question back. Both read as fluent, finished
sentences, so readability and completeness pass them; what is wrong is the fit between the two
turns. `demand` is 1 when the instruction asks for detail or reasoning (describe, explain, why,
step by step, evidence, ...) and does not ask for a single word; `detail_words` counts the
answer's words beyond a restatement of its final answer; `adequate` is 0 when a demanding
question gets fewer than `min_words` of them. `echo` is the share of the answer's words that
only repeat the instruction (1.0 = the question copied back).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from allava.quality.base import Op, OpSettings, QCRecord, Stats, register_op

DEMAND = re.compile(r"\b(describe|description|explain|explanation|justify|evidence|step by step|why|reason|reasoning"
                    r"|in detail|detailed|elaborate|how do you know|walk me through|carefully|inspect)", re.IGNORECASE)
SHORT = re.compile(r"\b(single word|one word|short answer|briefly|in a word|yes or no)\b", re.IGNORECASE)
FINAL = re.compile(r"\b(?:so |therefore,? |thus,? )?the (?:final )?answer is:?", re.IGNORECASE)
WORD = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass
class QAAdequacySettings(OpSettings):
    min_words: int = 8  # detail words a demanding question needs, beyond the final answer


@register_op("qa_adequacy")
class QAAdequacy(Op):
    Settings = QAAdequacySettings
    primary = "adequate"

    def _pair(self, question: str, answer: str) -> Stats:
        demand = int(bool(DEMAND.search(question)) and not SHORT.search(question))
        body = FINAL.split(answer)[0] if FINAL.search(answer) else answer
        detail = len(WORD.findall(body)) if FINAL.search(answer) else max(0, len(WORD.findall(answer)) - 3)
        q_words = {w.lower() for w in WORD.findall(question)}
        a_words = [w.lower() for w in WORD.findall(answer)]
        echo = sum(w in q_words for w in a_words) / len(a_words) if len(a_words) >= 4 else 0.0
        return {"demand": demand, "detail_words": detail, "echo": echo,
                "adequate": int(not demand or detail >= self.settings.min_words)}

    def compute(self, batch: list[QCRecord]) -> list[Stats]:
        out: list[Stats] = []
        for r in batch:
            pairs = [self._pair(q, a) for q, a in zip(r.instructions, r.responses)]
            if not pairs:
                out.append({})
                continue
            worst = min(pairs, key=lambda p: (p["adequate"], -p["echo"]))
            out.append({"adequate": min(p["adequate"] for p in pairs), "demand": max(p["demand"] for p in pairs),
                        "detail_words": worst["detail_words"], "echo": max(p["echo"] for p in pairs)})
        return out

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        v = [s["adequate"] for s in stats if "adequate" in s]
        return {"adequate_answers": float(np.mean(v))} if v else {}
