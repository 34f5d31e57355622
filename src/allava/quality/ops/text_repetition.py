"""Looping text: a sampler stuck in a cycle repeats a sentence or phrase over and over.

`word_rep` is data-juicer's word repetition ratio (`word_repetition_filter`): over the word
`rep_len`-grams of a response, the share of occurrences that belong to an n-gram seen more than
once; `sentence_rep` is the share of sentences that repeat an earlier sentence of the same
response. The worst response of the record counts. Responses shorter than `rep_len` words have
no n-gram and get 0.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from allava.quality.base import Op, OpSettings, QCRecord, Stats, register_op

WORD = re.compile(r"[^\W_]+", re.UNICODE)
SENTENCE = re.compile(r"(?<=[.!?])\s+")


def word_repetition(text: str, n: int) -> float:
    words = [w.lower() for w in WORD.findall(text)]
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    total = sum(grams.values())
    return sum(c for c in grams.values() if c > 1) / total if total else 0.0


def sentence_repetition(text: str) -> float:
    sentences = [" ".join(WORD.findall(s.lower())) for s in SENTENCE.split(text.strip())]
    sentences = [s for s in sentences if s]
    if len(sentences) < 2:
        return 0.0
    seen: set[str] = set()
    repeats = 0
    for s in sentences:
        repeats += s in seen
        seen.add(s)
    return repeats / len(sentences)


@dataclass
class TextRepetitionSettings(OpSettings):
    rep_len: int = 10  # data-juicer's default n-gram length


@register_op("text_repetition")
class TextRepetition(Op):
    Settings = TextRepetitionSettings
    primary = "word_rep"

    def compute(self, batch: list[QCRecord]) -> list[Stats]:
        out: list[Stats] = []
        for r in batch:
            texts = [t for t in r.responses if t.strip()]
            out.append({"word_rep": max(word_repetition(t, self.settings.rep_len) for t in texts),
                        "sentence_rep": max(sentence_repetition(t) for t in texts)} if texts else {})
        return out

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        v = [s["word_rep"] for s in stats if "word_rep" in s]
        return {"mean_word_rep": float(np.mean(v))} if v else {}
