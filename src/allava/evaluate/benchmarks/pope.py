"""POPE (COCO adversarial / popular / random): per-split precision, recall, F1, accuracy and
yes-ratio; the headline is the mean of the three F1s (LLaVA-1.5's table), the pooled F1 over all
questions (lmms-eval's) is reported beside it."""
from __future__ import annotations

from pathlib import Path

from allava.evaluate.benchmarks import register_benchmark
from allava.evaluate.benchmarks.base import (
    SHORT_ANSWER,
    Benchmark,
    Sample,
    first_existing,
    need,
    only_answered,
    pct,
    read_jsonl,
)
from allava.evaluate.metrics.choice import parse_pope

SPLITS = ("adversarial", "popular", "random")


def binary_metrics(preds: list[str], labels: list[str]) -> dict[str, float]:
    """LLaVA ``eval_pope.py``: 'yes' is the positive class."""
    tp = sum(p == "yes" and l == "yes" for p, l in zip(preds, labels))
    fp = sum(p == "yes" and l == "no" for p, l in zip(preds, labels))
    tn = sum(p == "no" and l == "no" for p, l in zip(preds, labels))
    fn = sum(p == "no" and l == "yes" for p, l in zip(preds, labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = max(1, len(preds))
    return {"accuracy": pct((tp + tn) / n), "precision": pct(precision), "recall": pct(recall), "f1": pct(f1),
            "yes_ratio": pct(preds.count("yes") / n), "n": len(preds)}


@register_benchmark("pope")
class Pope(Benchmark):
    convention = ("POPE, LLaVA eval_pope.py: answer parsed from its first sentence (no/not -> no, else yes); "
                  "headline = mean F1 over the adversarial/popular/random splits (LLaVA-1.5); pooled_f1 = F1 "
                  "over all questions together (lmms-eval)")
    data_help = ("a folder with coco_pope_{adversarial,popular,random}.json (jsonl lines: question_id, image, "
                 "text, label) and the COCO val2014 images (in val2014/, images/ or beside them)")

    def load(self, path: Path) -> list[Sample]:
        if not path.is_dir():
            raise self.missing(path)
        samples = []
        for split in SPLITS:
            files = sorted(path.rglob(f"*pope_{split}.json*"))
            if not files:
                continue
            f = files[0]
            images = first_existing(path / "val2014", path / "images", f.parent / "val2014", f.parent / "images") or path
            for row in read_jsonl(f, self.name):
                need(row, ("question_id", "image", "text", "label"), f"{f.name} question {row.get('question_id')}",
                     self.name)
                samples.append(Sample(f"{split}/{row['question_id']}", f"{row['text']}\n{SHORT_ANSWER}",
                                      images / row["image"], str(row["label"]).strip().lower(), {"split": split}))
        if not samples:
            raise self.missing(f"coco_pope_*.json under {path}")
        return samples

    def score(self, samples, answers, judge=None):
        samples, n_missing = only_answered(samples, answers)
        splits = {}
        allp, alll = [], []
        for split in SPLITS:
            rows = [s for s in samples if s.meta["split"] == split]
            if rows:
                preds = [parse_pope(answers[s.question_id]) for s in rows]
                labels = [s.target for s in rows]
                splits[split] = binary_metrics(preds, labels)
                allp += preds
                alll += labels
        mean_f1 = round(sum(v["f1"] for v in splits.values()) / max(1, len(splits)), 2)
        return {"headline": {"POPE-F1": mean_f1}, "mean_f1": mean_f1, "pooled": binary_metrics(allp, alll),
                "pooled_f1": binary_metrics(allp, alll)["f1"], "splits": splits, "n_missing": n_missing,
                "convention": self.convention}
