"""Answer parsers for multiple-choice and yes/no benchmarks, each a copy of its anchor's rule.

Users compare numbers across toolkits; a "smarter" parser here would silently shift scores, so
every function names the upstream code it follows and keeps its edge cases.
"""
from __future__ import annotations

import ast
import random
import re
from collections.abc import Callable

REJECTIONS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
              "I'm sorry, but without the image provided", "Cannot determine the answer")


def _count_choice(splits: list[str], choices, prefix: str = "", suffix: str = "") -> int:
    return sum(prefix + c + suffix in splits for c in choices)


def _words(answer: str) -> list[str]:
    for c in ".()[],:;!*#{}":
        answer = answer.replace(c, " ")
    return [x.strip() for x in answer.split()]


# "the (correct) answer is **B**" in a chain-of-thought answer (VLMEvalKit, June 2026). Case-insensitive
# as upstream, so "the answer is because ..." reads as B: kept, since the point is the same number.
VERBOSE_ANSWER = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def infer_option(answer: str, choices: dict[str, str], last_words: bool = True, verbose: bool = True) -> str | None:
    """VLMEvalKit ``matching_util.can_infer_option``: the answer names exactly one option letter as a
    word (after turning ``.()[],:;!*#{}`` into spaces); since August 2025 only when that letter is
    among the last 4 words (`last_words`), and since June 2026 "answer is X" decides otherwise
    (`verbose`). 'Z' means the model declined."""
    if "Failed to obtain answer via API" in answer:
        return None
    for err in REJECTIONS:
        if err in answer:
            return "Z"
    splits = _words(answer)
    count = _count_choice(splits, choices)
    if count == 1:
        for ch in choices:
            if ch in splits and (not last_words or splits.index(ch) > len(splits) - 5):
                return ch
    elif count == 0 and _count_choice(splits, {"Z", ""}) == 1:
        return "Z"
    if verbose:
        m = VERBOSE_ANSWER.search(answer or "")
        if m and m.group(1).upper() in choices:
            return m.group(1).upper()
    return None


def infer_text(answer: str, choices: dict[str, str], length_guard: bool = True) -> str | None:
    """VLMEvalKit ``can_infer_text``: exactly one option's text occurs in the answer; since August
    2025 not at all when the answer is over twice as long as all option texts together."""
    answer = answer.lower()
    if length_guard and len(answer) > 2 * sum(len(str(v)) for v in choices.values()):
        return None
    cands = [k for k, v in choices.items() if str(v).lower() in answer]
    return cands[0] if len(cands) == 1 else None


LetterRule = Callable[[str, dict[str, str]], "str | None"]
LETTER_RULES: dict[str, LetterRule] = {}
DEFAULT_LETTER_RULES = "vlmevalkit"


def register_letter_rules(name: str) -> Callable[[LetterRule], LetterRule]:
    """Add a named letter-extraction rule set (``--letter-rules NAME``); ``metrics.json`` records it."""
    def wrap(fn: LetterRule) -> LetterRule:
        LETTER_RULES[name] = fn
        return fn
    return wrap


@register_letter_rules("vlmevalkit")
def _vlmevalkit_now(answer: str, choices: dict[str, str]) -> str | None:
    """VLMEvalKit ``can_infer`` as of #1552 (June 2026): last-words letter, length-guarded text, "answer is X"."""
    return infer_option(answer, choices) or infer_text(answer, choices)


@register_letter_rules("vlmevalkit-2025-08")
def _vlmevalkit_2025(answer: str, choices: dict[str, str]) -> str | None:
    """VLMEvalKit ``can_infer`` after #1175 (August 2025), before the "answer is X" rule."""
    return infer_option(answer, choices, verbose=False) or infer_text(answer, choices)


@register_letter_rules("vlmevalkit-2024")
def _vlmevalkit_2024(answer: str, choices: dict[str, str]) -> str | None:
    """VLMEvalKit ``can_infer`` before August 2025 (the rules of the 2023-2025 papers' MMBench numbers)."""
    return (infer_option(answer, choices, last_words=False, verbose=False)
            or infer_text(answer, choices, length_guard=False))


def letter_rules(name: str) -> LetterRule:
    try:
        return LETTER_RULES[name]
    except KeyError:
        from allava.config import ConfigError

        raise ConfigError(f"unknown letter rules {name!r}; known: {', '.join(sorted(LETTER_RULES))}") from None


def extract_letter(answer: str, choices: dict[str, str], rules: str = DEFAULT_LETTER_RULES) -> str | None:
    """VLMEvalKit ``can_infer``: letter first, then option text; None when the rules cannot tell
    (VLMEvalKit would then ask an LLM; without one it counts as wrong)."""
    return letter_rules(rules)(str(answer), dict(choices))


# --- MMBench as lmms-eval scores it without a judge (mmbench_en_dev_static) -------------------
_LMMS_AFFIXES = [("", "."), ("", ","), ("", ":"), ("", ")"), ("", ")."), ("(", ")"), ("(", ")."), (":", ""),
                 (":", ","), (":", "."), (":", ")"), (":", ").")]


def _lmms_infer_option(answer: str) -> str | None:
    """lmms-eval ``tasks/mmbench/mmbench_evals.py`` ``MMBench_Evaluator.can_infer_option``: words split
    on white space only, letters A-E whatever the options; one bare letter wins unless 'A' is among
    more than 3 words (a quantifier), then one letter with a fixed prefix/suffix ('B.', '(C)', ...)."""
    if "Failed to obtain answer via API" in answer:
        return None
    letters = "ABCDE"
    words = [w.strip() for w in answer.split()]
    if sum(c in words for c in letters) == 1 and not ("A" in words and len(words) > 3):
        return next(c for c in letters if c in words)
    for pre, suf in _LMMS_AFFIXES:
        hits = [c for c in letters if pre + c + suf in words]
        if len(hits) == 1:
            return hits[0]
    return None


def _lmms_infer_text(answer: str, choices: dict[str, str]) -> str | None:
    """``can_infer_text``: exactly one option text (A-D) occurs in the answer, no length guard."""
    answer = answer.lower()
    hits = [k for k, v in choices.items() if str(v).lower() in answer]
    return hits[0] if len(hits) == 1 else None


_MCQ_PHRASES = ["the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
                "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
                "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select",
                "i pick", "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは"]
_MCQ_RANK = {"start": 10, "end": 9, "phrase": 7, "parentheses": 6, "period": 5, "colon": 4, "right_paren": 3,
             "space": 2, "fallback": 0}


def lmms_extract_mcq(response: str, letters: list[str]) -> str:
    """lmms-eval ``tasks/_task_utils/mcq_extract.py`` ``extract_mcq_answer``: every letter found in one
    of several forms ('(B)', 'B.', 'B:', 'B)', 'B ', after "the answer is", at the start, at the end;
    else anywhere), the best-ranked form winning, then the last position; '' when none."""
    if not response or not response.strip():
        return ""
    text = response.strip()
    for ch in ",.!?;:'\"":
        text = text.strip(ch)
    text = f" {text} "
    found: list[tuple[str, int, str]] = []
    for form, pattern in (("parentheses", "({})"), ("period", "{}."), ("colon", "{}:"), ("right_paren", "{})"),
                          ("space", "{} ")):
        found += [(c, text.rfind(pattern.format(c)), form) for c in letters if pattern.format(c) in text]
    lower = text.lower()
    for phrase in _MCQ_PHRASES:
        at = lower.find(phrase)
        if at != -1:
            found += [(c, text.find(c, at + len(phrase)), "phrase") for c in letters
                      if text.find(c, at + len(phrase)) != -1]
    bare = text.strip()
    found += [(c, 0, "start") for c in letters if bare.startswith(c) and (len(bare) == 1 or not bare[1].isalpha())]
    found += [(c, len(text) - 1, "end") for c in letters
              if bare.endswith(c) and (len(bare) == 1 or not bare[-2].isalpha())]
    if not found:
        found = [(c, text.rfind(c), "fallback") for c in letters if c in text]
    if not found:
        return ""
    return sorted(found, key=lambda f: (_MCQ_RANK[f[2]], f[1]), reverse=True)[0][0]


def lmms_eval_mmbench_letter(answer: str, choices: dict[str, str]) -> str | None:
    """The letter lmms-eval's static MMBench aggregation (``mmbench_evals.py`` ``eval_sub_data`` with
    ``static_only``) settles on: its ``can_infer`` (option letter, then option text, over A-D), else
    ``extract_mcq_answer`` over the question's letters. None when both find nothing."""
    opts = {k: v for k, v in choices.items() if k in "ABCD"}
    return (_lmms_infer_option(str(answer)) or _lmms_infer_text(str(answer), opts)
            or lmms_extract_mcq(str(answer), sorted(opts)) or None)


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


_VK_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_VK_COMMA = re.compile(r"(\d)(,)(\d)")
_VK_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")  # unlike EvalAI's "(?!<=\d)" typo: a period after a digit stays


def _vlmevalkit_punctuation(text: str) -> str:
    """VLMEvalKit ``smp/misc.py`` ``process_punctuation``."""
    out = text
    for p in _VK_PUNCT:
        if (p + " " in text or " " + p in text) or _VK_COMMA.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _VK_PERIOD.sub("", out, re.UNICODE)  # sic: count=re.UNICODE upstream


def parse_yorn_vlmevalkit(text: str) -> str:
    """VLMEvalKit ``dataset/utils/yorn.py`` ``YOrN_Extraction`` (MME, POPE without a judge): 'yes'
    when the word yes occurs and no does not, 'no' the other way round, else 'other'."""
    words = _vlmevalkit_punctuation(str(text).lower()).split()
    if "yes" in words and "no" not in words:
        return "yes"
    if "no" in words and "yes" not in words:
        return "no"
    return "other"


# --- MMMU (MMMU-Benchmark/MMMU mmmu/utils/eval_utils.py) --------------------------------------
MMMU_SEED = 42  # eval_utils.py calls random.seed(42) once, at import
def parse_mmmu_choice(response: str, all_choices: list[str], index2ans: dict[str, str],
                      rng: random.Random | None = None) -> tuple[str, bool]:
    """Official ``parse_multi_choice_response``. Returns (letter, guessed): when nothing matches, the
    official parser draws ``random.choice`` from one generator seeded 42 at import, in question
    order; pass that one generator (`MMMU_SEED`) for every question to get the official draw."""
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
        return (rng or random.Random(MMMU_SEED)).choice(all_choices), True
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
    simple = re.findall(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])", string)  # \b: "5cm" is no number
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
                if not shortest or len(tail) < len(shortest):  # an empty tail gives way to the next one
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
