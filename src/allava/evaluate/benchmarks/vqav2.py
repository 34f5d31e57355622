"""VQAv2 (COCO): the official question + annotation files, or LLaVA's ``llava_vqav2_mscoco_*.jsonl``.

LLaVA-1.5's VQAv2 number is test-dev, whose answers are not public: LLaVA's
``convert_vqav2_for_submission.py`` runs ``EvalAIAnswerProcessor`` over each answer and EvalAI scores
the upload with the challenge's ``vqaEval.py``. Here the same two steps score any split whose
annotations are at hand (val2014); test-dev is answered (``predictions.jsonl`` is what LLaVA's
converter reads) but not scored.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from allava.evaluate.benchmarks import register_benchmark
from allava.evaluate.benchmarks.base import SHORT_ANSWER, Benchmark, Sample, first_existing, pct, read_json
from allava.evaluate.benchmarks.llava_questions import overlay, read_llava_questions
from allava.evaluate.metrics.vqa import normalize_vqa, vqa_lmms_eval_accuracy, vqa_official_accuracy

NOT_PUBLIC = ("no public answers for these questions (test-dev/test): upload predictions.jsonl through LLaVA's "
              "scripts/convert_vqav2_for_submission.py to EvalAI, or --data val2014's questions + annotations")


@register_benchmark("vqav2")
class VQAv2(Benchmark):
    convention = ("VQAv2 as LLaVA-1.5 is scored: EvalAIAnswerProcessor on each answer (convert_vqav2_for_submission.py), "
                  "then the challenge's vqaEval.py: min(#other annotators agreeing / 3, 1) over the 10 leave-one-out "
                  "sets; accuracy over all questions (a missing answer is '', wrong), per answer type beside it; "
                  "conventions.lmms-eval = vqav2_process_results (digit/article processing of every gold answer too)")
    data_help = ("a folder with v2_OpenEnded_mscoco_<split>_questions.json, v2_mscoco_<split>_annotations.json and "
                 "<split>/ images, or LLaVA's llava_vqav2_mscoco_<split>.jsonl in it")

    def load(self, path: Path) -> list[Sample]:
        questions = read_llava_questions(path)
        root = path.parent if questions is not None else path
        if not root.is_dir():
            raise self.missing(path)
        samples = self._official(root)
        if questions is None:
            if samples is None:
                raise self.missing(f"v2_OpenEnded_mscoco_*_questions.json in {root}")
            return samples
        images = first_existing(root / "test2015", root / "val2014", root / "images") or root  # vqav2.sh: test2015
        if samples is None:  # LLaVA's test-dev file alone: answered, not scored
            self.gold = False
            return [Sample(q.qid, q.text, images / q.image if q.image else None, None, {}) for q in questions]
        return overlay(self, samples, questions, path, lambda s: s.question_id, lambda q: q.qid,
                       image=lambda q, s: images / q.image if q.image else s.image)

    def _official(self, root: Path) -> list[Sample] | None:
        qfile = next(iter(sorted(root.glob("v2_OpenEnded_mscoco_*_questions.json"))), None)
        if qfile is None:
            return None
        qs = read_json(qfile, self.name)
        subtype = str(qs.get("data_subtype", "val2014"))
        afile = root / qfile.name.replace("v2_OpenEnded_mscoco_", "v2_mscoco_").replace("_questions", "_annotations")
        ann = {a["question_id"]: a for a in read_json(afile, self.name)["annotations"]} if afile.is_file() else {}
        self.gold = bool(ann)
        images = first_existing(root / subtype, root / "images") or root
        out = []
        for q in qs["questions"]:
            a = ann.get(q["question_id"], {})
            out.append(Sample(str(q["question_id"]), f"{q['question']}\n{SHORT_ANSWER}",
                              images / f"COCO_{subtype}_{int(q['image_id']):012d}.jpg",
                              [x["answer"] for x in a.get("answers", [])] if a else None,
                              {"answer_type": a.get("answer_type", ""), "question": q["question"]}))
        return out

    def score(self, samples, answers, judge=None):
        n_missing = sum(s.question_id not in answers for s in samples)
        if not getattr(self, "gold", True) or all(s.target is None for s in samples):
            return {"headline": {}, "n": len(samples), "n_missing": n_missing, "note": NOT_PUBLIC,
                    "convention": self.convention}
        per_type: dict[str, list[float]] = defaultdict(list)
        for s in samples:
            pred = normalize_vqa(answers.get(s.question_id, ""))  # LLaVA's upload holds '' for a missing one
            per_type[s.meta["answer_type"]].append(vqa_official_accuracy(pred, s.target))
        accs = [a for v in per_type.values() for a in v]
        acc = sum(accs) / max(1, len(accs))
        lmms = [vqa_lmms_eval_accuracy(answers.get(s.question_id, ""), s.target or []) for s in samples]
        return {"headline": {"VQAv2": pct(acc)}, "accuracy": pct(acc), "n": len(accs), "n_missing": n_missing,
                "per_answer_type": {k: pct(sum(v) / len(v)) for k, v in sorted(per_type.items())},
                "conventions": {"lmms-eval": {"VQAv2": pct(sum(lmms) / max(1, len(lmms)))}},
                "convention": self.convention}
