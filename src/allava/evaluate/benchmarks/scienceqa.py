"""ScienceQA-IMG: test problems that have an image, LLaVA-1.5's CQM-A prompt and answer parser."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from allava.evaluate.benchmarks import register_benchmark
from allava.evaluate.benchmarks.base import (
    LETTER_ANSWER,
    Benchmark,
    Sample,
    choice_key,
    choices_block,
    first_existing,
    match_by_choice_key,
    pct,
    read_json,
)
from allava.evaluate.benchmarks.llava_questions import overlay, read_llava_questions
from allava.evaluate.metrics.choice import parse_scienceqa


def lmms_eval_sqa_correct(text: str, target: int) -> bool:
    """lmms-eval ``tasks/scienceqa/utils.py`` ``sqa_process_results``: the stripped answer is the letter
    (any case), or starts with an upper-case letter and a period; nothing else counts."""
    letter, pred = "ABCDEFGHIJ"[target], text.strip()
    if pred.lower() == letter.lower():
        return True
    return len(pred) >= 2 and pred[0].isupper() and pred[1] == "." and pred[0] == letter


@register_benchmark("scienceqa-img")
class ScienceQAImg(Benchmark):
    image_only = True
    split = "test"
    convention = ("ScienceQA test, questions with an image (IMG column of LLaVA-1.5); prompt 'Context: {hint}\\n"
                  "{question}\\nA. ...' + letter suffix; parsed as LLaVA eval_science_qa.py (letter, 'A. ...', "
                  "'The answer is X.'); unparsable answers are wrong; accuracy over all questions, a missing "
                  "prediction counted wrong (n_missing beside it)")
    data_help = ("the ScienceQA folder with problems.json, pid_splits.json and test/<pid>/image.png (or "
                 "images/test/...), or LLaVA's llava_test_CQM-A.json in that folder")

    def load(self, path: Path) -> list[Sample]:
        questions = read_llava_questions(path)
        if questions is None:
            return self._load(path)
        # --data llava_test_CQM-A.json (model_vqa_science.py): problems.json beside it, images in images/test/
        base = path.parent
        if self.image_only:
            questions = [q for q in questions if q.image]
        return overlay(self, self._load(base), questions, path, lambda s: s.question_id, lambda q: q.qid,
                       prompt=lambda q: f"{q.text}\n{LETTER_ANSWER}")  # sqa.sh: --single-pred-prompt

    def _load(self, path: Path) -> list[Sample]:
        problems = read_json(path / "problems.json", self.name)
        splits = read_json(path / "pid_splits.json", self.name)
        if self.split not in splits:
            raise self.missing(f"split {self.split!r} in pid_splits.json")
        images = first_existing(path / "images" / self.split) or path / self.split  # LLaVA's layout, or ours
        samples = []
        for pid in splits[self.split]:
            p = problems.get(pid)
            if p is None:
                raise self.missing(f"problem {pid} (listed in pid_splits.json) in problems.json")
            if self.image_only and not p.get("image"):
                continue
            context = (p.get("hint") or "").strip() or "N/A"
            prompt = f"Context: {context}\n{p['question']}\n{choices_block(p['choices'])}".replace("  ", " ").strip()
            image = images / pid / p["image"] if p.get("image") else None
            samples.append(Sample(str(pid), f"{prompt}\n{LETTER_ANSWER}", image, int(p["answer"]),
                                  {"n_choices": len(p["choices"]), "subject": p.get("subject", ""),
                                   "question": p["question"], "choices": [str(c) for c in p["choices"]],
                                   "hint": (p.get("hint") or "").strip()}))
        return samples

    def match(self, samples, answers):
        """LLaVA's answers carry the problem id; lmms-eval's ScienceQA docs and VLMEvalKit's ScienceQA
        rows do not (VLMEvalKit's ``index`` counts rows, and would hit the wrong problem), so theirs
        are matched by question, hint and choices."""
        own = [a for a in answers if not {"doc_id", "prediction"} & set(a.fields)]
        return match_by_choice_key(samples, answers, super().match(samples, own),
                                   lambda s: choice_key(s.meta["question"], s.meta["hint"], s.meta["choices"]))

    def score(self, samples, answers, judge=None):
        n_missing = sum(s.question_id not in answers for s in samples)
        per_subject: dict[str, list[bool]] = defaultdict(list)
        failed = 0
        for s in samples:  # eval_science_qa.py: a missing prediction is 'FAILED', wrong, out of all questions
            if s.question_id not in answers:
                per_subject[s.meta["subject"]].append(False)
                continue
            idx = parse_scienceqa(answers[s.question_id], s.meta["n_choices"])
            failed += idx == -1
            per_subject[s.meta["subject"]].append(idx == s.target)
        hits = [ok for v in per_subject.values() for ok in v]
        acc = sum(hits) / max(1, len(hits))
        label = "SQA-IMG" if self.image_only else "SQA"
        lmms = sum(lmms_eval_sqa_correct(answers[s.question_id], s.target) for s in samples if s.question_id in answers)
        return {"headline": {label: pct(acc)}, "accuracy": pct(acc), "n": len(hits),
                "conventions": {"lmms-eval": {label: pct(lmms / max(1, len(samples)))}},
                "n_missing": n_missing, "unparsed_answers": failed,
                "per_subject": {k: pct(sum(v) / len(v)) for k, v in sorted(per_subject.items())},
                "convention": self.convention}


@register_benchmark("scienceqa")
class ScienceQA(ScienceQAImg):
    image_only = False
    convention = ScienceQAImg.convention.replace("questions with an image (IMG column of LLaVA-1.5)", "all questions")
