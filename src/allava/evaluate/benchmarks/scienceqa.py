"""ScienceQA-IMG: test problems that have an image, LLaVA-1.5's CQM-A prompt and answer parser."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from allava.evaluate.benchmarks import register_benchmark
from allava.evaluate.benchmarks.base import (
    LETTER_ANSWER,
    Benchmark,
    Sample,
    choices_block,
    pct,
    read_json,
)
from allava.evaluate.metrics.choice import parse_scienceqa


@register_benchmark("scienceqa-img")
class ScienceQAImg(Benchmark):
    image_only = True
    split = "test"
    convention = ("ScienceQA test, questions with an image (IMG column of LLaVA-1.5); prompt 'Context: {hint}\\n"
                  "{question}\\nA. ...' + letter suffix; parsed as LLaVA eval_science_qa.py (letter, 'A. ...', "
                  "'The answer is X.'); unparsable answers are wrong; accuracy over all questions, a missing "
                  "prediction counted wrong (n_missing beside it)")
    data_help = "the ScienceQA folder with problems.json, pid_splits.json and test/<pid>/image.png"

    def load(self, path: Path) -> list[Sample]:
        problems = read_json(path / "problems.json", self.name)
        splits = read_json(path / "pid_splits.json", self.name)
        if self.split not in splits:
            raise self.missing(f"split {self.split!r} in pid_splits.json")
        samples = []
        for pid in splits[self.split]:
            p = problems.get(pid)
            if p is None:
                raise self.missing(f"problem {pid} (listed in pid_splits.json) in problems.json")
            if self.image_only and not p.get("image"):
                continue
            context = (p.get("hint") or "").strip() or "N/A"
            prompt = f"Context: {context}\n{p['question']}\n{choices_block(p['choices'])}".replace("  ", " ").strip()
            image = path / self.split / pid / p["image"] if p.get("image") else None
            samples.append(Sample(str(pid), f"{prompt}\n{LETTER_ANSWER}", image, int(p["answer"]),
                                  {"n_choices": len(p["choices"]), "subject": p.get("subject", "")}))
        return samples

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
        return {"headline": {"SQA-IMG" if self.image_only else "SQA": pct(acc)}, "accuracy": pct(acc), "n": len(hits),
                "n_missing": n_missing, "unparsed_answers": failed,
                "per_subject": {k: pct(sum(v) / len(v)) for k, v in sorted(per_subject.items())},
                "convention": self.convention}


@register_benchmark("scienceqa")
class ScienceQA(ScienceQAImg):
    image_only = False
    convention = ScienceQAImg.convention.replace("questions with an image (IMG column of LLaVA-1.5)", "all questions")
