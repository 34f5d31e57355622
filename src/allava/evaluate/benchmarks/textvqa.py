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
    BenchmarkError,
    Sample,
    blank,
    first_existing,
    only_answered,
    question_key,
    pct,
    read_json,
    read_jsonl,
)
from allava.evaluate.benchmarks.llava_questions import overlay, read_llava_questions
from allava.evaluate.metrics.vqa import vqa_accuracy

ROSETTA = "TextVQA_Rosetta_OCR_v0.2_val.json"
LLAVA_QUESTIONS = "llava_textvqa_val_v051_ocr.jsonl"  # LLaVA-1.5's own prompts, OCR tokens included


MIN_OCR_SHARE = 0.5  # below this, a with-OCR convention is not what ran: fail instead of scoring


def llava_question(prompt: str) -> str:
    """The question in a LLaVA TextVQA prompt (``eval_textvqa.py`` ``prompt_processor``): the line that
    is not the OCR line or the answer-format suffix; lowercased."""
    lines = str(prompt).replace("<image>\n", "").split("\n")
    if len(lines) >= 2 and lines[0].startswith("Reference OCR token:"):
        return lines[1].lower()
    return lines[0].lower()


def _answer_list(cell) -> list[str]:
    """A VLMEvalKit ``answer`` cell: the annotators' answers as a list literal (``str(list)``), or one answer."""
    if blank(cell):
        return []
    if isinstance(cell, (list, tuple)):
        return [str(x) for x in cell]
    text = str(cell).strip()
    if text.startswith("["):
        import ast

        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, (list, tuple)):
            return [str(x) for x in value]
    return [text]


def _content_key(question, gold) -> tuple:
    """A TextVQA question as a tool that keeps no id shows it: its text and its (unordered) answers."""
    return (question_key(question), tuple(sorted(" ".join(str(a).split()).lower() for a in gold or [])))


@register_benchmark("textvqa")
class TextVQA(Benchmark):
    use_ocr = True
    convention = ("TextVQA val: EvalAI answer normalization, accuracy = min(#matching annotators/3, 1) averaged "
                  "over the 10 leave-one-out annotator subsets (LLaVA m4c_evaluator)")
    data_help = ("the TextVQA folder with TextVQA_0.5.1_val.json, train_images/ (val images live there) and, for "
                 "OCR tokens, LLaVA's llava_textvqa_val_v051_ocr.jsonl or TextVQA_Rosetta_OCR_v0.2_val.json")

    def load(self, path: Path) -> list[Sample]:
        questions = read_llava_questions(path)
        if questions is not None and not self.use_ocr:
            raise BenchmarkError(f"{self.name}: {path.name} is LLaVA's question file, whose prompts carry OCR tokens; "
                                 "use --benchmark textvqa with it, or --data the TextVQA folder")
        if questions is not None:  # --data llava_textvqa_val_v051_ocr.jsonl, the annotations beside it
            samples = self._load(path.parent / "TextVQA_0.5.1_val.json", path)
            return overlay(self, samples, questions, path, lambda s: (s.meta["image_id"], s.meta["question"]),
                           lambda q: (q.qid, llava_question(q.text)))
        return self._load(path)

    def _load(self, path: Path, llava_file: Path | None = None) -> list[Sample]:
        ann = path if path.is_file() else path / "TextVQA_0.5.1_val.json"
        raw = read_json(ann, self.name)
        rows = raw.get("data") if isinstance(raw, dict) else None
        if not isinstance(rows, list):
            raise self.missing(f"{ann} with a 'data' list")
        root = ann.parent
        images = first_existing(root / "train_images", root / "images") or root
        ocr: dict[str, list[str]] = {}
        llava: dict[tuple[str, str], str] = {}
        self.ocr_source = "none"
        llava_file = llava_file or (root / LLAVA_QUESTIONS if (root / LLAVA_QUESTIONS).is_file() else None)
        if self.use_ocr and llava_file is not None:
            # eval_textvqa.py: LLaVA's question_id is the *image* id; image id + question name a question
            llava = {(str(q["question_id"]), llava_question(q["text"])): q["text"]
                     for q in read_jsonl(llava_file, self.name)}
            self.ocr_source = llava_file.name
        elif self.use_ocr and (root / ROSETTA).is_file():
            ocr_rows = read_json(root / ROSETTA, self.name)
            ocr = {str(r["image_id"]): r.get("ocr_tokens", []) for r in (ocr_rows.get("data") or [])}
            self.ocr_source = ROSETTA
        elif self.use_ocr and rows and "ocr_tokens" in rows[0]:
            self.ocr_source = "ocr_tokens field of the question file"
        samples = []
        for r in rows:
            if not {"question_id", "question", "image_id", "answers"} <= set(r):
                raise self.missing(f"{ann} entries with question_id, question, image_id, answers")
            meta = {"image_id": str(r["image_id"]), "question": str(r["question"]).lower()}
            prompt = r["question"]
            text = llava.get((meta["image_id"], meta["question"]))
            if text is not None:
                text = text.replace("<image>\n", "")
                samples.append(Sample(str(r["question_id"]), text if text.endswith(SHORT_ANSWER) else
                                      f"{text}\n{SHORT_ANSWER}", images / f"{r['image_id']}.jpg", list(r["answers"]),
                                      meta))
                continue
            if self.use_ocr:
                tokens = r.get("ocr_tokens", ocr.get(str(r["image_id"])))
                if tokens:
                    prompt += "\nReference OCR token: " + ", ".join(tokens)
            samples.append(Sample(str(r["question_id"]), f"{prompt}\n{SHORT_ANSWER}", images / f"{r['image_id']}.jpg",
                                  list(r["answers"]), meta))
        if self.use_ocr:
            got = sum("Reference OCR token:" in s.prompt for s in samples)
            if got < MIN_OCR_SHARE * max(1, len(samples)):
                raise BenchmarkError(
                    f"{self.name}: only {got} of {len(samples)} questions got OCR tokens from {self.ocr_source} (its "
                    f"image/question ids do not match {ann.name}?); the score would not be the with-OCR number. Put "
                    f"{LLAVA_QUESTIONS} or {ROSETTA} beside {ann.name}, or use textvqa-noocr")
        return samples

    def match(self, samples, answers):
        """Ours and lmms-eval's ids are question ids; LLaVA's answers carry the image id and their
        prompt holds the question (``eval_textvqa.py`` looks them up by both). VLMEvalKit's
        ``<model>_TextVQA_VAL.xlsx`` rows (``inference.py``: TextVQA_VAL.tsv's index, question, answer,
        with the image column dropped and ``prediction`` added) carry neither id: their ``index`` counts
        rows, so they are matched by content, question + the row's 10 answers (a list literal)."""
        foreign = [a for a in answers if "prediction" in a.fields and not blank(a.fields.get("question"))]
        out = super().match(samples, [a for a in answers if not ("prediction" in a.fields
                                                                 and not blank(a.fields.get("question")))])
        free: dict[tuple, list[str]] = {}
        for s in samples:
            if s.question_id not in out:
                free.setdefault(_content_key(s.meta["question"], s.target), []).append(s.question_id)
                free.setdefault((question_key(s.meta["question"]),), []).append(s.question_id)
        for a in foreign:
            gold = _answer_list(a.fields.get("answer"))
            key = _content_key(a.fields["question"], gold) if gold else (question_key(a.fields["question"]),)
            cands = [q for q in free.get(key, []) if q not in out]
            if cands and (gold or len(cands) == 1):  # question alone only when no other question reads alike
                out[cands[0]] = a.text
            elif a.fields.get("question_id") is not None:  # a spreadsheet that does keep TextVQA's question id
                for qid, text in super().match(samples, [a]).items():
                    out.setdefault(qid, text)
        by_key = {(s.meta["image_id"], s.meta["question"]): s.question_id for s in samples}
        for a in answers:
            if a.qid is None or a.qid in out:
                continue
            prompt = a.fields.get("prompt")
            qid = by_key.get((a.qid, llava_question(prompt))) if prompt else None
            if qid is not None and qid not in out:
                out[qid] = a.text
        return out

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
    convention = ("TextVQA val without OCR tokens in the prompt (lmms-eval's default prompt): EvalAI answer "
                  "normalization, accuracy = min(#matching annotators/3, 1) averaged over the 10 leave-one-out "
                  "annotator subsets")
    data_help = "the TextVQA folder with TextVQA_0.5.1_val.json and train_images/ (val images live there)"
