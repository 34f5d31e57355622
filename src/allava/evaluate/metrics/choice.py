"""Answer parsers for multiple-choice and yes/no benchmarks, each a copy of its anchor's rule.

Users compare numbers across toolkits; a "smarter" parser here would silently shift scores, so
every function names the upstream code it follows and keeps its edge cases.
"""
from __future__ import annotations

import ast
import random
import re

REJECTIONS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
              "I'm sorry, but without the image provided", "Cannot determine the answer")


def _count_choice(splits: list[str], choices, prefix: str = "", suffix: str = "") -> int:
    return sum(prefix + c + suffix in splits for c in choices)


def infer_option(answer: str, choices: dict[str, str]) -> str | None:
    """VLMEvalKit ``can_infer_option``: the answer names exactly one option letter as a word
    (after turning ``.()[],:;!*#{}`` into spaces). 'Z' means the model declined."""
    for err in REJECTIONS:
        if err in answer:
            return "Z"
    answer_mod = answer
    for c in ".()[],:;!*#{}":
        answer_mod = answer_mod.replace(c, " ")
    splits = [x.strip() for x in answer_mod.split()]
    count = _count_choice(splits, choices)
    if count == 1:
        for ch in choices:
            if ch in splits:
                return ch
    elif count == 0 and _count_choice(splits, {"Z", ""}) == 1:
        return "Z"
    return None


def infer_text(answer: str, choices: dict[str, str]) -> str | None:
    """VLMEvalKit ``can_infer_text``: exactly one option's text occurs in the answer."""
    answer = answer.lower()
    cands = [k for k, v in choices.items() if str(v).lower() in answer]
    return cands[0] if len(cands) == 1 else None


def extract_letter(answer: str, choices: dict[str, str]) -> str | None:
    """VLMEvalKit ``can_infer``: letter first, then option text; None when the rules cannot tell
    (VLMEvalKit would then ask an LLM; without one it counts as wrong)."""
    return infer_option(str(answer), choices) or infer_text(str(answer), choices)


# --- ScienceQA (LLaVA llava/eval/eval_science_qa.py) --------------------------------------------
SQA_OPTIONS = ["A", "B", "C", "D", "E"]
SQA_PATTERN = re.compile(r"The answer is ([A-Z]).")


def parse_scienceqa(text: str, n_choices: int) -> int:
    """Index of the chosen option, or -1 (counted wrong: LLaVA's random fallback is dead code)."""
    if text in SQA_OPTIONS:
        answer = text
    elif len(text) >= 3 and text[0] in SQA_OPTIONS and text[1:3] == ". ":
        answer = text[0]
    else:
        res = SQA_PATTERN.findall(text)
        answer = res[0] if len(res) == 1 else "FAILED"
    return SQA_OPTIONS.index(answer) if answer in SQA_OPTIONS[:n_choices] else -1


# --- POPE (LLaVA llava/eval/eval_pope.py) -------------------------------------------------------
def parse_pope(text: str) -> str:
    """First sentence only, commas dropped; 'no' if the words No/not/no occur, else 'yes'."""
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


# --- MME (eval_tool/calculation.py) -------------------------------------------------------------
def parse_mme(text: str) -> str:
    """'yes'/'no' exactly, else whichever of them occurs in the first 4 characters, else 'other'."""
    pred = text.lower()
    if pred in ("yes", "no"):
        return pred
    head = pred[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


# --- MMMU (MMMU-Benchmark/MMMU eval/utils/eval_utils.py) ---------------------------------------
def parse_mmmu_choice(response: str, all_choices: list[str], index2ans: dict[str, str],
                      rng: random.Random | None = None) -> tuple[str, bool]:
    """Official ``parse_multi_choice_response``. Returns (letter, guessed): the official parser
    picks a random letter when nothing matches; we seed it per question and report the count."""
    for char in [",", ".", "!", "?", ";", ":", "'"]:
        response = response.strip(char)
    response = " " + response + " "
    index_ans, ans_with_brack, candidates = True, False, []
    for choice in all_choices:
        if f"({choice})" in response:
            candidates.append(choice)
            ans_with_brack = True
    if not candidates:
        candidates = [c for c in all_choices if f" {c} " in response]
    if not candidates and len(response.split()) > 5:
        for index, ans in index2ans.items():
            if ans.lower() in response.lower():
                candidates.append(index)
                index_ans = False
    if not candidates:
        return (rng or random.Random(0)).choice(all_choices), True
    if len(candidates) == 1:
        return candidates[0], False
    if index_ans:
        pat = "({})" if ans_with_brack else " {} "
        starts = [response.rfind(pat.format(c)) for c in candidates]
    else:
        starts = [response.lower().rfind(index2ans[c].lower()) for c in candidates]
    return candidates[max(range(len(starts)), key=lambda i: (starts[i], -i))], False


def _is_number(s: str) -> bool:
    try:
        float(s.replace(",", ""))
        return True
    except ValueError:
        return False


def mmmu_normalize_str(string: str) -> list:
    string = string.strip()
    if _is_number(string):
        return [round(float(string.replace(",", "")), 2)]
    string = string.lower()
    return [" " + string, string + " "] if len(string) == 1 else [string]


def _extract_numbers(string: str) -> list[str]:
    commas = re.findall(r"-?\b\d{1,3}(?:,\d{3})+\b", string)
    scientific = re.findall(r"-?\d+(?:\.\d+)?[eE][+-]?\d+", string)
    simple = re.findall(r"-?(?:\d+\.\d+|\.\d+|\d+)(?![eE][+-]?\d+)(?![,\d])", string)
    return commas + scientific + simple


def parse_mmmu_open(response: str) -> list:
    """Official ``parse_open_response``: key sub-responses after 'is', 'so', 'therefore', '=', ...
    plus every number in them, normalized (numbers rounded to 2 decimals)."""
    response = response.strip().strip(".").lower()
    subs = re.split(r"\.\s(?=[A-Z])|\n", response)
    indicators = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
    keys = []
    for i, resp in enumerate(subs):
        if i == len(subs) - 1:
            indicators = indicators + ["="]
        shortest = None
        for ind in indicators:
            if ind in resp:
                tail = resp.split(ind)[-1].strip()
                if shortest is None or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in [":", ",", ".", "!", "?", ";", ":", "'"]:
            keys.append(shortest)
    if not keys:
        keys = [response]
    preds = list(keys)
    for resp in keys:
        preds.extend(_extract_numbers(resp))
    out = []
    for p in preds:
        out.extend(mmmu_normalize_str(p))
    return list(dict.fromkeys(out))


def mmmu_open_correct(gold: str | list[str], preds: list) -> bool:
    """Official ``eval_open``: a string gold counts if it is a substring of a string prediction, a
    numeric gold if it equals a numeric prediction."""
    golds = gold if isinstance(gold, list) else [gold]
    norm = [n for g in golds for n in mmmu_normalize_str(str(g))]
    for pred in preds:
        if isinstance(pred, str):
            if any(isinstance(n, str) and n in pred for n in norm):
                return True
        elif pred in norm:
            return True
    return False


def mmmu_gold(answer: str) -> str | list[str]:
    """Open answers are sometimes a Python list literal ("['24/7', '3.429']")."""
    s = str(answer).strip()
    if s.startswith("[") and s.endswith("]"):
        try:
            val = ast.literal_eval(s)
            if isinstance(val, list):
                return [str(v) for v in val]
        except (ValueError, SyntaxError):
            pass
    return s
