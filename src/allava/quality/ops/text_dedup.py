"""De-duplication, texts: MinHash (numpy) over word n-grams, LSH bands for candidates.

The stat `similarity` is the estimated Jaccard similarity to the most similar *earlier* record, so
the first copy is kept and the cut-off (`max`) is a threshold. With `per_image` (default) two
records are only compared when they share the same image (or both have none): one instruction
asked about two different pictures is not a duplicate sample.
"""
from __future__ import annotations

import re
import zlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from allava.quality.base import DatasetOp, OpSettings, QCRecord, Stats, register_op

PRIME = np.uint64(4294967311)  # > 2**32, so (a * h + b) fits in uint64 for 32-bit a, h, b
WORD = re.compile(r"\w+", re.UNICODE)


def shingles(text: str, n: int) -> set[str]:
    words = WORD.findall(text.lower())
    if len(words) <= n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def minhash(items: set[str], num_perm: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**32, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint64)
    if not items:
        return np.full(num_perm, np.iinfo(np.uint32).max, dtype=np.uint64)
    h = np.fromiter((zlib.crc32(s.encode()) for s in items), dtype=np.uint64, count=len(items))
    return ((h[:, None] * a[None, :] + b[None, :]) % PRIME).min(axis=0)


@dataclass
class TextDedupSettings(OpSettings):
    field: str = "all"  # all | responses | instructions
    ngram: int = 3
    num_perm: int = 64
    bands: int = 16  # candidates above about (1/bands) ** (bands/num_perm) Jaccard
    per_image: bool = True


@register_op("text_dedup")
class TextDedup(DatasetOp):
    Settings = TextDedupSettings
    VERSION = "2"
    primary = "similarity"

    def _text(self, r: QCRecord) -> str:
        return {"all": r.text, "responses": lambda: "\n".join(r.responses),
                "instructions": lambda: "\n".join(r.instructions)}[self.settings.field]()

    def features(self, batch: list[QCRecord]) -> list[Any]:
        s = self.settings
        return [{"scope": (r.image or "") if s.per_image else "",
                 "sig": minhash(shingles(self._text(r), s.ngram), s.num_perm).astype("<u4").tobytes().hex()}
                for r in batch]

    def finalize(self, features: list[Any]) -> list[Stats]:
        rows = self.settings.num_perm // self.settings.bands
        buckets: dict[tuple, list[int]] = defaultdict(list)
        sigs: list[np.ndarray] = []
        out: list[Stats] = []
        for i, f in enumerate(features):
            sig = np.frombuffer(bytes.fromhex(f["sig"]), dtype="<u4")  # hex: 8x smaller in memory than a list
            keys = [(f["scope"], b, sig[b * rows:(b + 1) * rows].tobytes()) for b in range(self.settings.bands)]
            cands = {j for k in keys for j in buckets.get(k, ())}
            best = max((float(np.mean(sigs[j] == sig)) for j in cands), default=0.0)
            out.append({"similarity": best})
            for k in keys:
                buckets[k].append(i)
            sigs.append(sig)
        return out

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        sims = [s["similarity"] for s in stats if "similarity" in s]
        return {"duplicate_texts": float(np.mean([x >= 0.9 for x in sims]))} if sims else {}
