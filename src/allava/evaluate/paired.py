"""Paired comparison of two models on the same questions (exact McNemar test).

Two models answering the same benchmark are not independent samples: most questions are easy or
hard for both. Only the questions where they disagree carry evidence, so comparing their two
binomial intervals wastes power; the exact McNemar test uses just the discordant pairs.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class PairedResult:
    n: int  # questions both models answered
    only_a: int  # answered correctly by model A only
    only_b: int  # answered correctly by model B only
    p_value: float  # two-sided exact McNemar (binomial test on the discordant pairs at 1/2)

    def to_dict(self) -> dict:
        return asdict(self)


def exact_mcnemar(only_a: int, only_b: int) -> float:
    """Two-sided exact p-value: P(a split at least this uneven | both models equally good)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_compare(correct_a: set[str], correct_b: set[str], n: int) -> PairedResult:
    """Compare two models on the same n questions, given the ids each answered correctly."""
    only_a, only_b = len(correct_a - correct_b), len(correct_b - correct_a)
    return PairedResult(n, only_a, only_b, exact_mcnemar(only_a, only_b))
