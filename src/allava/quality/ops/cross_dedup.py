"""Near-duplicate text across images: one record's text reused (or reworded) for another picture.

`text_dedup` compares records about the same image; a teacher that recycles an answer, or a
crawler that pairs one caption with two pictures, makes records whose texts are near-identical but
whose images differ, and at most one of them is about its own picture. Word-shingle MinHash
signatures (`text_dedup`'s) go into a datasketch `MinHashLSH` index at `threshold` (estimated
Jaccard); records of different images that it pairs are one group (union-find), and of each group
one record is kept by a stated rule, not simply the first:

1. the most **support from its own image**: the share of the words in the other records about the
   same image (their answers name what is in the picture) that this record's text also uses; the
   copy on the wrong picture disagrees with its siblings, the original agrees with its own;
2. then the longer text (more detail); 3. then the earlier record.

Stats: `similarity` (highest estimated Jaccard to a record of another image), `support`, and
`duplicate` (1 for the records the rule drops; the primary stat, threshold it with `max: 0`).
Texts under `min_words` words are not compared: a short answer ("red", "2") to a common question
is legitimately the same for many pictures.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from allava.quality.base import DatasetOp, OpSettings, QCRecord, Stats, register_op
from allava.quality.ops.text_dedup import minhash, shingles

WORD = re.compile(r"[a-z0-9]+")


def _minhash(cls: Any, num_perm: int, values: np.ndarray) -> Any:
    """A datasketch MinHash holding text_dedup's signature: the index only bands and compares the
    values, so any one consistent scheme works ("legacy" = plain values, no re-hashing)."""
    return cls(num_perm=num_perm, hashvalues=values, scheme="legacy")


@dataclass
class CrossDedupSettings(OpSettings):
    field: str = "responses"  # responses | all
    ngram: int = 3
    num_perm: int = 128
    threshold: float = 0.7  # estimated Jaccard at which two texts about different images are one group
    min_words: int = 12


@register_op("cross_image_dedup")
class CrossImageDedup(DatasetOp):
    Settings = CrossDedupSettings
    primary = "duplicate"

    def _text(self, r: QCRecord) -> str:
        return "\n".join(r.responses) if self.settings.field == "responses" else r.text()

    def features(self, batch: list[QCRecord]) -> list[Any]:
        s = self.settings
        out: list[Any] = []
        for r in batch:
            text = self._text(r)
            words = sorted(set(WORD.findall(text.lower())))
            f: dict[str, Any] = {"scope": r.image or "", "words": words, "n": len(text.split())}
            if r.image and f["n"] >= s.min_words:
                f["sig"] = minhash(shingles(text, s.ngram), s.num_perm).astype("<u4").tobytes().hex()
            out.append(f)
        return out

    def finalize(self, features: list[Any]) -> list[Stats]:
        from datasketch import MinHash, MinHashLSH

        s = self.settings
        lsh = MinHashLSH(threshold=s.threshold, num_perm=s.num_perm)
        sigs: dict[int, np.ndarray] = {}
        for i, f in enumerate(features):
            if "sig" in f:
                sigs[i] = np.frombuffer(bytes.fromhex(f["sig"]), dtype="<u4").astype(np.uint64)
                lsh.insert(i, _minhash(MinHash, s.num_perm, sigs[i]))
        parent = {i: i for i in sigs}

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        best: dict[int, float] = {}
        for i, sig in sigs.items():
            for j in lsh.query(_minhash(MinHash, s.num_perm, sig)):
                if j == i or features[j]["scope"] == features[i]["scope"]:
                    continue
                sim = float(np.mean(sigs[j] == sig))
                if sim >= s.threshold:
                    best[i] = max(best.get(i, 0.0), sim)
                    parent[root(i)] = root(j)
        support = self._support(features, set(best))
        groups: dict[int, list[int]] = defaultdict(list)
        for i in best:
            groups[root(i)].append(i)
        dropped: set[int] = set()
        for members in groups.values():
            keep = max(members, key=lambda i: (support[i], features[i]["n"], -i))
            scope = features[keep]["scope"]  # the winner's image keeps all its records (same image: text_dedup's call)
            dropped |= {i for i in members if features[i]["scope"] != scope}
        out: list[Stats] = []
        for i, f in enumerate(features):
            if "sig" not in f:
                out.append({})
                continue
            st: Stats = {"similarity": best.get(i, 0.0), "duplicate": int(i in dropped)}
            if i in support:
                st["support"] = support[i]
            out.append(st)
        return out

    @staticmethod
    def _support(features: list[Any], which: set[int]) -> dict[int, float]:
        """For the records in `which`: the share of the words of the other records about the same
        image that the record also uses (0 when it is alone with its image)."""
        by_image: dict[str, list[int]] = defaultdict(list)
        for i, f in enumerate(features):
            if f["scope"]:
                by_image[f["scope"]].append(i)
        out: dict[int, float] = {}
        for i in which:
            others: set[str] = set()
            for j in by_image[features[i]["scope"]]:
                if j != i:
                    others.update(features[j]["words"])
            mine = set(features[i]["words"])
            out[i] = len(others & mine) / len(others) if others else 0.0
        return out

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        d = [s["duplicate"] for s in stats if "duplicate" in s]
        return {"cross_image_duplicates": float(np.mean(d))} if d else {}
