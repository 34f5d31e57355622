"""The quickstart's held-out ability benchmark (``world/bench.jsonl`` + ``bench_meta.json``):
exact match after `allava.evaluate.synthetic.normalize`, accuracy per ability beside its chance."""
from __future__ import annotations

from pathlib import Path

from allava.evaluate.benchmarks import register_benchmark
from allava.evaluate.benchmarks.base import SHORT_ANSWER, Benchmark, Sample, only_answered, read_json, read_jsonl
from allava.evaluate.synthetic import normalize


@register_benchmark("synthetic")
class Synthetic(Benchmark):
    convention = "exact match after lowercasing, article/punctuation removal, number words as digits"
    data_help = "the quickstart world folder (bench.jsonl, bench_meta.json, images/)"
    max_new_tokens = 8  # what evaluate_bench uses, so both paths give the same answers

    def load(self, path: Path) -> list[Sample]:
        self.abilities = read_json(path / "bench_meta.json", self.name).get("abilities", {})
        return [Sample(str(it["id"]), f"{it['question']}\n{SHORT_ANSWER}", path / "images" / it["image"],
                       it["answer"], {"ability": it["ability"], "seed": it.get("seed")}) for it in read_jsonl(path / "bench.jsonl", self.name)]

    def score(self, samples, answers, judge=None):
        samples, n_missing = only_answered(samples, answers)
        correct = {s.question_id: normalize(answers[s.question_id]) == normalize(s.target) for s in samples}
        abilities = {}
        for name, info in getattr(self, "abilities", {}).items():
            rows = [s for s in samples if s.meta["ability"] == name]
            if rows:
                abilities[name] = {"accuracy": sum(correct[s.question_id] for s in rows) / len(rows), "n": len(rows),
                                   "chance": info.get("chance")}
        overall = sum(correct.values()) / max(1, len(correct))
        return {"headline": {"synthetic": round(100 * overall, 2)}, "overall": overall, "n": len(correct),
                "n_missing": n_missing, "abilities": abilities, "convention": self.convention}
