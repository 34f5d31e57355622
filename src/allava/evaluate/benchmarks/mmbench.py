"""MMBench dev (TSV with base64 images): circular evaluation, rule-based letter extraction.

A question counts only if every rotation of its options is answered right (MMBench's
CircularEval). Released TSVs either already hold the rotated copies (index + k * 1e6, as the
legacy ``mmbench_dev_*.tsv``) or only the originals (``MMBench_DEV_EN.tsv``); then the rotations
are made here exactly as LLaVA's ``model_vqa_mmbench.py --all-rounds`` does. MMBench-CN
(``mmbench_dev_cn_20231003.tsv``, ``MMBench_DEV_CN.tsv``: the same columns, Chinese text) is recognised
by its content and asked with LLaVA's ``--lang cn`` suffix, as ``scripts/v1_5/eval/mmbench_cn.sh`` runs it.
"""
from __future__ import annotations

import base64
import binascii
import csv
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from allava.evaluate.benchmarks import register_benchmark
from allava.evaluate.benchmarks.base import (
    LETTER_ANSWER,
    LETTER_ANSWER_CN,
    Benchmark,
    BenchmarkError,
    Sample,
    blank,
    only_answered,
    pct,
)
from allava.evaluate.metrics.choice import DEFAULT_LETTER_RULES, LETTER_RULES, extract_letter, lmms_eval_mmbench_letter

OFFSET = 1_000_000
OPTION_COLUMNS = "ABCDE"
EXTRACT_PROMPT = (
    "You are an AI assistant who will help me to match an answer with several options of a single-choice "
    "question. You are provided with a question, several options, and an answer, and you need to find which "
    "option is most similar to the answer. If the meaning of all options are significantly different from the "
    "answer, output Z. Your should output a single uppercase character in A, B, C, D (if they are valid "
    "options), and Z. \nExample 1: \nQuestion: What is the main object in image?\nOptions: A. teddy bear "
    "B. rabbit C. cat D. dog\nAnswer: a cute teddy bear\nYour output: A\nExample 2: \nQuestion: What is the main "
    "object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\nAnswer: Spider\nYour output: Z\n"
    "Example 3: \nQuestion: {}?\nOptions: {}\nAnswer: {}\nYour output: ")


def read_tsv(path: Path, bench: str) -> list[dict[str, str]]:
    csv.field_size_limit(sys.maxsize)  # base64 images are megabytes per cell
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except FileNotFoundError:
        raise BenchmarkError(f"{bench}: {path}: no such file") from None
    if not rows or not {"index", "question", "A", "B", "answer", "image"} <= set(rows[0]):
        raise BenchmarkError(f"{bench}: {path}: expected an MMBench TSV with columns index, question, A, B, ..., "
                             "answer, image (base64)")
    return rows


@register_benchmark("mmbench")
class MMBench(Benchmark):
    convention = ("CircularEval: a question is right only if all rotations of its options are "
                  "(copies grouped by index % 1e6; rotations made as LLaVA --all-rounds when the TSV has none); "
                  "letters extracted by VLMEvalKit's rules (can_infer; which version: letter_rules), LLM extraction "
                  "only with a judge; conventions.lmms-eval = lmms-eval's judge-free mmbench_en_dev_static rules "
                  "(its can_infer, then extract_mcq_answer)")
    data_help = ("an MMBench TSV (e.g. MMBench_DEV_EN.tsv, mmbench_dev_20230712.tsv, or MMBench-CN's "
                 "mmbench_dev_cn_20231003.tsv)")
    max_new_tokens = 128
    letter_rules = DEFAULT_LETTER_RULES  # `--letter-rules NAME`: vlmevalkit (current), vlmevalkit-2024, ...

    def load(self, path: Path) -> list[Sample]:
        if path.is_dir():
            tsvs = sorted(path.glob("*.tsv"))
            if len(tsvs) != 1:
                raise self.missing(f"exactly one .tsv in {path}")
            path = tsvs[0]
        rows = read_tsv(path, self.name)
        self.lang = "cn" if 2 * sum(is_chinese(r["question"]) for r in rows) > len(rows) else "en"
        images: dict[int, str] = {}
        for r in rows:  # rotated copies may reference the original's image by index
            if len(r["image"]) > 64:
                images[int(r["index"])] = r["image"]
        by_group: dict[int, list[dict[str, str]]] = defaultdict(list)
        for r in rows:
            by_group[int(r["index"]) % OFFSET].append(r)
        samples = []
        for group, copies in by_group.items():
            if len(copies) == 1:
                samples += self._rotations(copies[0], group, images)
            else:
                for k, r in enumerate(sorted(copies, key=lambda r: int(r["index"]))):
                    opts = [r[c] for c in OPTION_COLUMNS if c in r and not blank(r[c])]
                    samples.append(self._sample(r, group, k, opts, r["answer"].strip(), images))
        return samples

    def _rotations(self, r: dict[str, str], group: int, images: dict[int, str]) -> list[Sample]:
        opts = [r[c] for c in OPTION_COLUMNS if c in r and not blank(r[c])]
        gold = OPTION_COLUMNS.index(r["answer"].strip())
        out = []
        for k in range(len(opts)):
            rotated = opts[k:] + opts[:k]
            out.append(self._sample(r, group, k, rotated, OPTION_COLUMNS[(gold - k) % len(opts)], images))
        return out

    def _sample(self, r: dict[str, str], group: int, k: int, opts: list[str], gold: str,
                images: dict[int, str]) -> Sample:
        question = r["question"]
        if not blank(r.get("hint")):
            question = r["hint"] + "\n" + question
        for letter, opt in zip(OPTION_COLUMNS, opts):
            question += f"\n{letter}. {opt}"
        raw = r["image"] if len(r["image"]) > 64 else images.get(int(r["image"]), "")
        try:
            image = base64.b64decode(raw, validate=False)
        except (binascii.Error, ValueError):
            raise BenchmarkError(f"{self.name}: index {r['index']}: image is not base64") from None
        qid = str(group + k * OFFSET)
        suffix = LETTER_ANSWER_CN if getattr(self, "lang", "en") == "cn" else LETTER_ANSWER
        return Sample(qid, f"{question}\n{suffix}", image, gold,
                      {"group": group, "round": k, "options": dict(zip(OPTION_COLUMNS, opts)),
                       "category": r.get("category", ""), "l2_category": r.get("l2-category", ""),
                       "question": r["question"], "lang": getattr(self, "lang", "en")})

    def limit(self, samples: list[Sample], n: int) -> list[Sample]:
        """`--limit N` keeps N questions with all their rotations, so circular scores stay defined."""
        keep = list(dict.fromkeys(s.meta["group"] for s in samples))[:n]
        return [s for s in samples if s.meta["group"] in set(keep)]

    def score(self, samples, answers, judge=None):
        samples, n_missing = only_answered(samples, answers)
        pending = []
        picks: dict[str, str | None] = {}
        for s in samples:
            picks[s.question_id] = extract_letter(answers[s.question_id], s.meta["options"], self.letter_rules)
            if picks[s.question_id] is None:
                pending.append(s)
        llm_extracted = 0
        if judge is not None and pending:
            prompts = [[{"role": "user", "content": EXTRACT_PROMPT.format(
                s.meta["question"], " ".join(f"{k}. {v}" for k, v in s.meta["options"].items()),
                answers[s.question_id])}] for s in pending]
            for s, reply in zip(pending, judge.ask(prompts, max_tokens=16)):
                letter = extract_letter(reply or "", s.meta["options"], self.letter_rules)
                if letter is not None:
                    picks[s.question_id] = letter
                    llm_extracted += 1
        c = circular(samples, picks)
        others = {name: {"MMBench": pct(circular(samples, {s.question_id: extract_letter(
                      answers[s.question_id], s.meta["options"], name) for s in samples})["accuracy"])}
                  for name in LETTER_RULES if name != self.letter_rules and judge is None}
        others["lmms-eval"] = {"MMBench": pct(circular(samples, {s.question_id: lmms_eval_mmbench_letter(
            answers[s.question_id], s.meta["options"]) for s in samples})["accuracy"])}
        return {
            "headline": {"MMBench": pct(c["accuracy"])},
            "circular_accuracy": pct(c["accuracy"]),
            "single_pass_accuracy": pct(c["single_pass"]),
            "n_questions": c["n_questions"], "n_answers": len(samples), "n_missing": n_missing,
            "n_incomplete_groups": c["n_incomplete"],
            "extraction_failures": sum(v is None for v in picks.values()), "llm_extracted": llm_extracted,
            "letter_rules": self.letter_rules,
            "language": samples[0].meta.get("lang", "en") if samples else "en",
            "per_category": c["per_category"], "per_l2_category": c["per_l2_category"],
            "conventions": others,
            "convention": self.convention,
        }


def is_chinese(text: str) -> bool:
    """MMBench-CN's questions are Chinese: any CJK ideograph."""
    return any("\u4e00" <= ch <= "\u9fff" for ch in str(text))


def circular(samples: list[Sample], picks: dict[str, str | None]) -> dict[str, Any]:
    """CircularEval over the complete rotation groups; unrounded accuracy, per-category in percent."""
    groups: dict[int, list[bool]] = defaultdict(list)
    first: dict[int, bool] = {}
    meta: dict[int, dict] = {}
    expected: dict[int, int] = defaultdict(int)
    for s in samples:
        ok = picks[s.question_id] == s.target
        groups[s.meta["group"]].append(ok)
        expected[s.meta["group"]] = len(s.meta["options"])
        meta[s.meta["group"]] = s.meta
        if s.meta["round"] == 0:
            first[s.meta["group"]] = ok
    complete = {g: all(v) for g, v in groups.items() if len(v) == expected[g]}
    per_cat: dict[str, list[bool]] = defaultdict(list)
    per_l2: dict[str, list[bool]] = defaultdict(list)
    for g, ok in complete.items():
        per_cat[meta[g]["category"]].append(ok)
        per_l2[meta[g]["l2_category"]].append(ok)
    return {"accuracy": sum(complete.values()) / max(1, len(complete)),
            "single_pass": sum(first.values()) / max(1, len(first)),
            "n_questions": len(complete), "n_incomplete": len(groups) - len(complete),
            "per_category": {k: pct(sum(v) / len(v)) for k, v in sorted(per_cat.items())},
            "per_l2_category": {k: pct(sum(v) / len(v)) for k, v in sorted(per_l2.items())}}
