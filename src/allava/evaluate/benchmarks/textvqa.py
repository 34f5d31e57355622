"""TextVQA val: EvalAI normalization + 10-annotator accuracy; OCR tokens in the prompt or not.

LLaVA-1.5's 58.2 is measured *with* Rosetta OCR tokens in the prompt ("Reference OCR token: ...");
lmms-eval's default is without. Both are registered (``textvqa``, ``textvqa-noocr``) and the
metrics say which ran and where the tokens came from.
"""
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
    read_jsonl,
)
from allava.evaluate.metrics.vqa import vqa_accuracy

ROSETTA = "TextVQA_Rosetta_OCR_v0.2_val.json"
LLAVA_QUESTIONS = "llava_textvqa_val_v051_ocr.jsonl"  # LLaVA-1.5's own prompts, OCR tokens included


@register_benchmark("textvqa")
class TextVQA(Benchmark):
    use_ocr = True
    convention = ("TextVQA val: EvalAI answer normalization, accuracy = min(#matching annotators/3, 1) averaged "
                  "over the 10 leave-one-out annotator subsets (LLaVA m4c_evaluator)")
    data_help = ("the TextVQA folder with TextVQA_0.5.1_val.json, train_images/ (val images live there) and, for "
                 "OCR tokens, LLaVA's llava_textvqa_val_v051_ocr.jsonl or TextVQA_Rosetta_OCR_v0.2_val.json")

    def load(self, path: Path) -> list[Sample]:
        ann = path if path.is_file() else path / "TextVQA_0.5.1_val.json"
        raw = read_json(ann, self.name)
        rows = raw.get("data") if isinstance(raw, dict) else None
        if not isinstance(rows, list):
            raise self.missing(f"{ann} with a 'data' list")
        root = ann.parent
        images = first_existing(root / "train_images", root / "images") or root
        ocr: dict[str, list[str]] = {}
        llava: dict[str, str] = {}
        self.ocr_source = "none"
        if self.use_ocr and (root / LLAVA_QUESTIONS).is_file():
            llava = {str(q["question_id"]): q["text"] for q in read_jsonl(root / LLAVA_QUESTIONS, self.name)}
            self.ocr_source = LLAVA_QUESTIONS
        elif self.use_ocr and (root / ROSETTA).is_file():
            ocr_rows = read_json(root / ROSETTA, self.name)
            ocr = {r["image_id"]: r.get("ocr_tokens", []) for r in (ocr_rows.get("data") or [])}
            self.ocr_source = ROSETTA
        elif self.use_ocr and rows and "ocr_tokens" in rows[0]:
            self.ocr_source = "ocr_tokens field of the question file"
        samples = []
        for r in rows:
            if not {"question_id", "question", "image_id", "answers"} <= set(r):
                raise self.missing(f"{ann} entries with question_id, question, image_id, answers")
            prompt = r["question"]
            if str(r["question_id"]) in llava:
                text = llava[str(r["question_id"])].replace("<image>\n", "")
                samples.append(Sample(str(r["question_id"]), text if text.endswith(SHORT_ANSWER) else
                                      f"{text}\n{SHORT_ANSWER}", images / f"{r['image_id']}.jpg", list(r["answers"]), {}))
                continue
            if self.use_ocr:
                tokens = r.get("ocr_tokens", ocr.get(r["image_id"]))
                if tokens is not None:
                    prompt += "\nReference OCR token: " + ", ".join(tokens)
            samples.append(Sample(str(r["question_id"]), f"{prompt}\n{SHORT_ANSWER}", images / f"{r['image_id']}.jpg",
                                  list(r["answers"]), {}))
        return samples

    def score(self, samples, answers, judge=None):
        samples, n_missing = only_answered(samples, answers)
        scores = [vqa_accuracy(answers[s.question_id], s.target) for s in samples]
        acc = sum(scores) / max(1, len(scores))
        used = "with OCR tokens in the prompt" if self.use_ocr else "without OCR tokens"
        return {"headline": {"TextVQA": pct(acc)}, "accuracy": pct(acc), "n": len(scores), "n_missing": n_missing,
                "ocr_tokens": getattr(self, "ocr_source", "none") if self.use_ocr else "off",
                "convention": f"{self.convention}; {used}"}


@register_benchmark("textvqa-noocr")
class TextVQANoOCR(TextVQA):
    use_ocr = False
