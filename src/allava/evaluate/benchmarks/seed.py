"""SEED-Bench v1, image set: ``SEED-Bench.json`` + ``SEED-Bench-image/``; accuracy over the image
dimensions (question_type_id 1-9), which is the SEED_img column of ALLaVA's Table 4."""
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
    need,
    only_answered,
    pct,
    read_json,
)
from allava.evaluate.benchmarks.llava_questions import overlay, read_llava_questions
from allava.evaluate.metrics.choice import DEFAULT_LETTER_RULES, extract_letter


@register_benchmark("seed")
class SeedBench(Benchmark):
    convention = ("SEED-Bench v1 image split (data_type == image, dimensions 1-9): accuracy over all image "
                  "questions (not the mean of dimensions); LLaVA's prompt; letter by VLMEvalKit rules")
    data_help = ("the SEED-Bench folder holding SEED-Bench.json and SEED-Bench-image/, or LLaVA's "
                 "llava-seed-bench.jsonl in it")
    letter_rules = DEFAULT_LETTER_RULES

    def load(self, path: Path) -> list[Sample]:
        questions = read_llava_questions(path)
        if questions is None:
            return self._load(path)
        # seed.sh: --data llava-seed-bench.jsonl, SEED-Bench.json beside it, images relative to that folder;
        # its video questions (frames) are not part of the image split scored here
        samples = self._load(path.parent / "SEED-Bench.json")
        questions = [q for q in questions if q.qid not in self.video_ids]
        return overlay(self, samples, questions, path, lambda s: s.question_id, lambda q: q.qid,
                       image=lambda q, s: path.parent / q.image if q.image else s.image)

    def _load(self, path: Path) -> list[Sample]:
        ann = path if path.is_file() else path / "SEED-Bench.json"
        root = ann.parent
        raw = read_json(ann, self.name)
        if not isinstance(raw, dict) or "questions" not in raw:
            raise self.missing(f"{ann} with a 'questions' list")
        names = {v: k for k, v in raw.get("question_type", {}).items()}
        images = first_existing(root / "SEED-Bench-image", root / "images") or root
        samples = []
        self.video_ids: set[str] = set()
        for q in raw["questions"]:
            need(q, ("question_id", "question", "choice_a", "answer", "data_id"), f"question {q.get('question_id')}",
                 self.name)
            if q.get("data_type", "image") != "image":
                self.video_ids.add(str(q["question_id"]))
                continue
            opts = [q[f"choice_{c}"] for c in "abcd" if f"choice_{c}" in q]
            img = images / q["data_id"]
            if not img.exists():
                raise self.missing(img)
            samples.append(Sample(str(q["question_id"]), f"{q['question']}\n{choices_block(opts)}\n{LETTER_ANSWER}",
                                  img, q["answer"].strip(),
                                  {"options": dict(zip("ABCD", opts)), "question": q["question"],
                                   "dimension": names.get(q.get("question_type_id"), str(q.get("question_type_id")))}))
        return samples

    def match(self, samples, answers):
        """LLaVA's and lmms-eval's answers keep SEED's question_id; a VLMEvalKit SEEDBench_IMG row whose
        index is not one is matched by question and options."""
        return match_by_choice_key(samples, answers, super().match(samples, answers),
                                   lambda s: choice_key(s.meta["question"], None, list(s.meta["options"].values())))

    def score(self, samples, answers, judge=None):
        samples, n_missing = only_answered(samples, answers)
        per_dim: dict[str, list[bool]] = defaultdict(list)
        fails = 0
        for s in samples:
            letter = extract_letter(answers[s.question_id], s.meta["options"], self.letter_rules)
            fails += letter is None
            per_dim[s.meta["dimension"]].append(letter == s.target)
        hits = [ok for v in per_dim.values() for ok in v]
        acc = sum(hits) / max(1, len(hits))
        n = max(1, len(samples))
        # LLaVA convert_seed_for_submission.py: the answer text must equal the letter; lmms-eval
        # seedbench/utils.py seed_process_result: its first character, case-insensitive
        llava = sum(answers[s.question_id] == s.target for s in samples) / n
        lmms = sum(answers[s.question_id].strip()[:1].lower() == s.target.lower() for s in samples) / n
        return {"headline": {"SEED-img": pct(acc)}, "accuracy": pct(acc), "n": len(hits), "n_missing": n_missing,
                "conventions": {"llava": {"SEED-img": pct(llava)}, "lmms-eval": {"SEED-img": pct(lmms)}},
                "extraction_failures": fails, "letter_rules": self.letter_rules,
                "per_dimension": {k: pct(sum(v) / len(v)) for k, v in sorted(per_dim.items())},
                "convention": self.convention}
