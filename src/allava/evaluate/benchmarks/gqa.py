"""GQA testdev-balanced: exact match, as LLaVA's convert_gqa_for_submission + the official eval.py."""
from __future__ import annotations

from pathlib import Path

from allava.evaluate.benchmarks import register_benchmark
from allava.evaluate.benchmarks.base import (
    SHORT_ANSWER,
    Benchmark,
    Sample,
    first_existing,
    only_answered,
    pct,
    read_json,
)
from allava.evaluate.benchmarks.llava_questions import overlay, read_llava_questions


def gqa_clean(text: str) -> str:
    """LLaVA ``convert_gqa_for_submission.py``: ``text.rstrip('.').lower()`` and nothing else (no
    whitespace strip: "yes " stays wrong); the official ``eval.py`` then compares exactly."""
    return text.rstrip(".").lower()


@register_benchmark("gqa")
class GQA(Benchmark):
    convention = ("GQA testdev-balanced accuracy: exact match with the gold answer after rstrip('.') and lowercasing, "
                  "nothing else (LLaVA convert_gqa_for_submission + official eval.py)")
    data_help = ("the GQA folder with testdev_balanced_questions.json and images/, or LLaVA's "
                 "llava_gqa_testdev_balanced.jsonl with data/ (those files) beside it")

    def load(self, path: Path) -> list[Sample]:
        questions = read_llava_questions(path)
        if questions is not None:  # --data llava_gqa_testdev_balanced.jsonl; gqa.sh keeps the data in data/
            ann = first_existing(path.parent / "data" / "testdev_balanced_questions.json",
                                 path.parent / "testdev_balanced_questions.json")
            if ann is None:
                raise self.missing(f"testdev_balanced_questions.json in {path.parent / 'data'} (LLaVA's layout)")
            return overlay(self, self._load(ann), questions, path, lambda s: s.question_id, lambda q: q.qid,
                           image=lambda q, s: s.image.parent / q.image if q.image else s.image)
        return self._load(path)

    def _load(self, path: Path) -> list[Sample]:
        ann = path if path.is_file() else path / "testdev_balanced_questions.json"
        raw = read_json(ann, self.name)
        if not isinstance(raw, dict):
            raise self.missing(f"{ann} as a dict question_id -> question")
        images = first_existing(ann.parent / "allImages" / "images") or ann.parent / "images"
        samples = []
        for qid, q in raw.items():
            if not isinstance(q, dict) or not {"imageId", "question", "answer"} <= set(q):
                raise self.missing(f"{ann} entries with imageId, question, answer")
            samples.append(Sample(str(qid), f"{q['question']}\n{SHORT_ANSWER}", images / f"{q['imageId']}.jpg",
                                  str(q["answer"]), {}))  # eval.py compares with the gold as written
        return samples

    def score(self, samples, answers, judge=None):
        samples, n_missing = only_answered(samples, answers)
        hits = [gqa_clean(answers[s.question_id]) == s.target for s in samples]
        acc = sum(hits) / max(1, len(hits))
        return {"headline": {"GQA": pct(acc)}, "accuracy": pct(acc), "n": len(hits), "n_missing": n_missing,
                "convention": self.convention}
