"""POPE (COCO adversarial / popular / random): per-split precision, recall, F1, accuracy and
yes-ratio; the headline is the mean of the three F1s (LLaVA-1.5's table), the pooled F1 over all
questions (lmms-eval's) is reported beside it."""
from __future__ import annotations

from pathlib import Path

from allava.evaluate.benchmarks import register_benchmark
from allava.evaluate.benchmarks.base import (
    SHORT_ANSWER,
    Benchmark,
    BenchmarkError,
    Sample,
    first_existing,
    need,
    only_answered,
    pct,
    read_jsonl,
)
from allava.evaluate.benchmarks.llava_questions import LlavaQuestion, overlay, read_llava_questions
from allava.evaluate.metrics.choice import parse_pope, parse_yorn_vlmevalkit

SPLITS = ("adversarial", "popular", "random")


def binary_counts(preds: list[str], labels: list[str]) -> tuple[float, float, float, float, float]:
    """Unrounded (accuracy, precision, recall, f1, yes_ratio), 'yes' the positive class."""
    tp = sum(p == "yes" and l == "yes" for p, l in zip(preds, labels))
    fp = sum(p == "yes" and l == "no" for p, l in zip(preds, labels))
    tn = sum(p == "no" and l == "no" for p, l in zip(preds, labels))
    fn = sum(p != "yes" and l == "yes" for p, l in zip(preds, labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = max(1, len(preds))
    return (tp + tn) / n, precision, recall, f1, preds.count("yes") / n


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
        questions = read_llava_questions(path)  # --data llava_pope_test.jsonl: its folder holds coco/ and val2014/
        root = path.parent if questions is not None else path
        if not root.is_dir():
            raise self.missing(path)
        samples = []
        for split in SPLITS:
            files = sorted(root.rglob(f"*pope_{split}.json*"))
            if not files:
                continue
            f = files[0]
            images = first_existing(root / "val2014", root / "images", f.parent / "val2014", f.parent / "images") or root
            for row in read_jsonl(f, self.name):
                need(row, ("question_id", "image", "text", "label"), f"{f.name} question {row.get('question_id')}",
                     self.name)
                samples.append(Sample(f"{split}/{row['question_id']}", f"{row['text']}\n{SHORT_ANSWER}",
                                      images / row["image"], str(row["label"]).strip().lower(), {"split": split}))
        if not samples:
            raise self.missing(f"coco_pope_*.json under {root}")
        if questions is not None:
            ids = self._llava_ids(path, questions, samples)
            return overlay(self, samples, questions, path, lambda s: s.question_id, lambda q: ids.get(q.qid))
        qfile = next(iter(sorted(root.rglob("llava_pope_test.jsonl"))), None)
        found = read_llava_questions(qfile) if qfile else None
        self.llava_ids = self._llava_ids(qfile, found, samples) if found else {}
        return samples

    def _llava_ids(self, qfile: Path, questions: list[LlavaQuestion], samples: list[Sample]) -> dict[str, str]:
        """LLaVA question id -> ours, from ``llava_pope_test.jsonl`` (question_id, image, text, category):
        the k-th question of a category is the k-th line of its coco_pope file (as eval_pope.py zips them)."""
        per_split: dict[str, list[Sample]] = {}
        for s in samples:
            per_split.setdefault(s.meta["split"], []).append(s)
        seen: dict[str, int] = {}
        out = {}
        for q in questions:
            if q.category is None:
                raise BenchmarkError(f"{self.name}: {qfile.name}: question {q.qid} has no category (adversarial, "
                                     "popular or random)")
            cat = str(q.category)
            k = seen.get(cat, 0)
            seen[cat] = k + 1
            rows = per_split.get(cat, [])
            if k < len(rows):
                if q.image and Path(str(rows[k].image)).name != Path(str(q.image)).name:
                    raise BenchmarkError(f"{self.name}: {qfile.name}: question {q.qid} is about "
                                         f"{q.image}, but line {k + 1} of coco_pope_{cat}.json is not")
                out[q.qid] = rows[k].question_id
        return out

    def match(self, samples, answers):
        """LLaVA's ``llava_pope_test.jsonl`` numbers questions with integers across the three splits
        and ``eval_pope.py`` pairs the answers of a category with ``coco_pope_<category>.json`` by
        position; lmms-eval and VLMEvalKit give a ``category``. With LLaVA's question file in --data
        its ids are mapped by that position (`Benchmark.match`); without it an id found in only one
        split is taken."""
        out = super().match(samples, answers)
        ids = {s.question_id for s in samples}
        by_plain: dict[str, list[str]] = {}
        for s in samples:
            by_plain.setdefault(s.question_id.split("/", 1)[1], []).append(s.question_id)
        for a in answers:
            if a.qid is None or a.qid in out:
                continue
            cat = str(a.fields.get("category") or "").strip().lower()
            if cat:
                cand = f"{cat}/{a.qid}"
            else:
                cand = by_plain[a.qid][0] if len(by_plain.get(a.qid, [])) == 1 else None
            if cand in ids and cand not in out:
                out[cand] = a.text
        return out

    def score(self, samples, answers, judge=None):
        samples, n_missing = only_answered(samples, answers)
        splits, raw_f1 = {}, []
        allp, alll, vk_p = [], [], []
        for split in SPLITS:
            rows = [s for s in samples if s.meta["split"] == split]
            if rows:
                preds = [parse_pope(answers[s.question_id]) for s in rows]
                labels = [s.target for s in rows]
                splits[split] = binary_metrics(preds, labels)
                raw_f1.append(binary_counts(preds, labels)[3])
                allp += preds
                alll += labels
                vk_p += [parse_yorn_vlmevalkit(answers[s.question_id]) for s in rows]
        mean_f1 = pct(sum(raw_f1) / max(1, len(raw_f1)))  # mean of unrounded F1s, rounded once
        pooled = binary_metrics(allp, alll)
        return {"headline": {"POPE-F1": mean_f1}, "mean_f1": mean_f1, "pooled": pooled,
                "pooled_f1": pooled["f1"], "splits": splits, "n_missing": n_missing,
                "conventions": {"lmms-eval": {"POPE-F1": pooled["f1"]},
                                "vlmevalkit": {"POPE-F1": pct(binary_counts(vk_p, alll)[3])}},
                "convention": self.convention}
