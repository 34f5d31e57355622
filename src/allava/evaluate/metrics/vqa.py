"""VQA answer normalization and accuracy exactly as EvalAI / LLaVA's ``m4c_evaluator.py`` do it.

Kept rule for rule, quirks included, because TextVQA numbers move by tenths when any one is
changed: the contraction table (with its ``somebody'd -> somebodyd`` typo), punctuation removed
or spaced depending on context, ``none`` as ``0``, and the period regex called with
``re.UNICODE`` in the *count* position (so at most 32 periods are stripped).
"""
from __future__ import annotations

import re
from itertools import combinations

NUMBER_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
              "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ("a", "an", "the")
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")
PUNCTUATIONS = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
                "?", "!"]
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}


def _word_tokenize(word: str) -> str:
    word = word.lower()
    word = word.replace(",", "").replace("?", "").replace("'s", " 's")
    return word.strip()


def _process_punctuation(in_text: str) -> str:
    out_text = in_text
    for p in PUNCTUATIONS:
        if (p + " " in in_text or " " + p in in_text) or (re.search(COMMA_STRIP, in_text) is not None):
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    return PERIOD_STRIP.sub("", out_text, re.UNICODE)  # sic: re.UNICODE lands in `count` upstream


def _process_digit_article(in_text: str) -> str:
    words = [NUMBER_MAP.get(w, w) for w in in_text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_vqa(answer: str) -> str:
    """EvalAIAnswerProcessor.__call__: the normalization applied to predictions and ground truth."""
    item = _word_tokenize(answer)
    item = item.replace("\n", " ").replace("\t", " ").strip()
    item = _process_punctuation(item)
    return _process_digit_article(item)


def vqa_accuracy(prediction: str, gt_answers: list[str]) -> float:
    """TextVQA accuracy: min(#matching annotators / 3, 1) averaged over the 10 leave-one-out subsets
    of 9 annotators (``TextVQAAccuracyEvaluator._compute_answer_scores``)."""
    pred = normalize_vqa(prediction)
    gts = [normalize_vqa(a) for a in gt_answers]
    if not gts:
        return 0.0
    subsets = list(combinations(range(len(gts)), len(gts) - 1)) if len(gts) > 1 else [(0,)]
    return sum(min(1.0, sum(gts[i] == pred for i in sub) / 3) for sub in subsets) / len(subsets)


def vqa_official_accuracy(prediction: str, gt_answers: list[str]) -> float:
    """The VQA challenge's ``vqaEval.py`` (``VQAEval.evaluate``, what EvalAI runs for VQAv2): the
    prediction gets punctuation and digit/article processing; the 10 ground-truth answers only
    punctuation processing, and only when they disagree; accuracy = min(#other annotators matching / 3,
    1) averaged over the leave-one-out sets."""
    res = prediction.replace("\n", " ").replace("\t", " ").strip()
    res = _process_digit_article(_process_punctuation(res))
    gts = [str(a).replace("\n", " ").replace("\t", " ").strip() for a in gt_answers]
    if not gts:
        return 0.0
    if len(set(gts)) > 1:
        gts = [_process_punctuation(g) for g in gts]
    return sum(min(1.0, sum(g == res for j, g in enumerate(gts) if j != i) / 3) for i in range(len(gts))) / len(gts)


def vqa_lmms_eval_accuracy(prediction: str, gt_answers: list[str]) -> float:
    """lmms-eval's ``vqav2_process_results`` (tasks/vqav2/utils.py): the raw prediction gets punctuation
    and digit/article processing (no EvalAI word tokenizing first), and so does *every* ground-truth
    answer, always (vqaEval.py: punctuation only, only when annotators disagree); same leave-one-out mean."""
    res = _process_digit_article(_process_punctuation(prediction.replace("\n", " ").replace("\t", " ").strip()))
    gts = [_process_digit_article(_process_punctuation(str(a).replace("\n", " ").replace("\t", " ").strip()))
           for a in gt_answers]
    if not gts:
        return 0.0
    return sum(min(1.0, sum(g == res for j, g in enumerate(gts) if j != i) / 3) for i in range(len(gts))) / len(gts)
