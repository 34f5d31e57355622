"""VizWiz-VQA test as LLaVA-1.5 runs it (``scripts/v1_5/eval/vizwiz.sh``): LLaVA's ``llava_test.jsonl``.

The test split's answers are not public, so nothing is scored here: the questions are asked with
LLaVA's prompts (which carry its "respond with 'Unanswerable'" instruction) about ``test/`` images, and
the answers become the upload file exactly as ``scripts/convert_vizwiz_for_submission.py`` writes it
(``[{image, answer}]`` in question order, each answer through ``EvalAIAnswerProcessor``), for EvalAI.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from allava.evaluate.benchmarks import register_benchmark
from allava.evaluate.benchmarks.base import Benchmark, BenchmarkError, Sample, first_existing
from allava.evaluate.benchmarks.llava_questions import read_llava_questions
from allava.evaluate.metrics.vqa import normalize_vqa

QUESTIONS = "llava_test.jsonl"
SUBMISSION = "vizwiz_submission.json"
NOT_PUBLIC = (f"no public answers for VizWiz test: upload {SUBMISSION} (convert_vizwiz_for_submission.py's "
              "format) to the VizWiz VQA challenge on EvalAI")


@register_benchmark("vizwiz")
class VizWiz(Benchmark):
    convention = ("VizWiz-VQA test as LLaVA-1.5 reports it: LLaVA's llava_test.jsonl prompts; answers put "
                  "through EvalAIAnswerProcessor into convert_vizwiz_for_submission.py's upload file and scored "
                  "by EvalAI (not here: no public answers)")
    data_help = f"LLaVA's {QUESTIONS} (the folder holding it and the test/ images, or the file)"

    def load(self, path: Path) -> list[Sample]:
        qfile = path / QUESTIONS if path.is_dir() else path
        if not qfile.is_file():
            raise self.missing(qfile)
        questions = read_llava_questions(qfile)
        if questions is None:
            raise BenchmarkError(f"{self.name}: {qfile}: not a LLaVA question file (JSONL lines with question_id, "
                                 "image, text)")
        root = qfile.parent
        images = first_existing(root / "test", root / "images") or root  # vizwiz.sh: --image-folder .../test
        out = []
        for q in questions:
            if not q.image:
                raise BenchmarkError(f"{self.name}: {qfile.name}: question {q.qid} has no image")
            out.append(Sample(q.qid, q.text, images / q.image, None, {"image_name": q.image}))
        return out

    def score(self, samples, answers, judge=None):
        n_missing = sum(s.question_id not in answers for s in samples)
        note = NOT_PUBLIC if not n_missing else (
            f"{NOT_PUBLIC}; {n_missing} of {len(samples)} questions unanswered, so no upload file was written "
            "(convert_vizwiz_for_submission.py requires every question's answer)")
        return {"headline": {}, "n": len(samples), "n_missing": n_missing, "note": note,
                "convention": self.convention}

    def submission(self, samples: list[Sample], answers: dict[str, str]) -> tuple[str, Any] | None:
        if any(s.question_id not in answers for s in samples):
            return None
        return SUBMISSION, [{"image": s.meta["image_name"], "answer": normalize_vqa(answers[s.question_id])}
                            for s in samples]
