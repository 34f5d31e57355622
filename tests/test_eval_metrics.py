"""The answer rules users trip on, each pinned to its anchor's behaviour on hand-built cases."""
from __future__ import annotations

import random

import pytest

from allava.evaluate.judge import parse_pair_score, parse_unit_score, parse_verdict
from allava.evaluate.metrics.choice import (
    extract_letter,
    mmmu_gold,
    mmmu_open_correct,
    parse_mme,
    parse_mmmu_choice,
    parse_mmmu_open,
    parse_pope,
    parse_scienceqa,
)
from allava.evaluate.metrics.vqa import normalize_vqa, vqa_accuracy

OPTS = {"A": "a red apple", "B": "a blue car", "C": "green grass", "D": "the sky"}


@pytest.mark.parametrize("answer, letter", [
    ("A", "A"), ("B.", "B"), ("(C)", "C"), ("The answer is D.", "D"), ("Answer: B", "B"),
    ("[A] a red apple", "A"),
    ("a blue car", "B"),            # no letter: the option text decides
    ("I think it is a blue car, not a red apple", None),  # two option texts: undecidable
    ("A or B", None),               # two letters
    ("b", None),                    # lowercase is not a letter (VLMEvalKit matches case)
    ("Cannot determine the answer", "Z"),
])
def test_mmbench_letter_extraction(answer, letter):
    assert extract_letter(answer, OPTS) == letter


@pytest.mark.parametrize("raw, norm", [
    ("The Cat", "cat"), ("an apple", "apple"), ("A dog.", "dog"),          # articles, case, final period
    ("two", "2"), ("Ten apples", "10 apples"), ("none", "0"),             # number words
    ("dont", "don't"), ("isnt", "isn't"), ("whats up", "what's up"),       # contractions restored
    ("hello, world!", "hello world"), ("coca-cola", "coca cola"),         # punctuation spaced
    ("1,000", "1000"),                                                    # digit commas removed
    ("3.5", "3.5"), ("yes.", "yes"),                                      # decimal point kept
    ("(left)", "left"), ("  Multiple   Spaces ", "multiple spaces"),
])
def test_vqa_normalization(raw, norm):
    assert normalize_vqa(raw) == norm


def test_vqa_accuracy_is_the_leave_one_out_average():
    assert vqa_accuracy("Two", ["2"] * 10) == 1.0
    assert vqa_accuracy("two", ["2"] * 3 + ["x"] * 7) == pytest.approx(0.9)   # 3 of 10 subsets see only 2 matches
    assert vqa_accuracy("2", ["two"] * 2 + ["x"] * 8) == pytest.approx(0.6)
    assert vqa_accuracy("2", ["two"] + ["x"] * 9) == pytest.approx(0.3)
    assert vqa_accuracy("the dog", ["dog"] * 4 + ["cat"] * 6) == 1.0
    assert vqa_accuracy("cat", ["dog"] * 10) == 0.0


@pytest.mark.parametrize("text, label", [
    ("Yes", "yes"), ("No", "no"), ("No, there is no dog.", "no"), ("There is not a dog.", "no"),
    ("Yes. No other animals.", "yes"),   # only the first sentence counts
    ("no.", "no"), ("Nope", "yes"),      # LLaVA's rule: anything without no/not/No is yes
    ("I do not know", "no"),
])
def test_pope_answer_parsing(text, label):
    assert parse_pope(text) == label


@pytest.mark.parametrize("text, label", [("Yes", "yes"), ("no", "no"), ("Yes, it is.", "yes"),
                                         ("No.", "no"), ("There is no cat", "other"), ("nope", "no")])
def test_mme_answer_parsing(text, label):
    assert parse_mme(text) == label


@pytest.mark.parametrize("text, idx", [
    ("A", 0), ("C", 2), ("B. blue", 1), ("The answer is B.", 1), ("The answer is B. The answer is C.", -1),
    ("E", -1),              # not an option of a 3-choice question
    ("b", -1), ("Answer: A", -1),
])
def test_scienceqa_answer_parsing(text, idx):
    assert parse_scienceqa(text, 3) == idx


def test_mmmu_multiple_choice_parser():
    letters = ["A", "B", "C", "D"]
    ans = {"A": "mitochondria", "B": "nucleus", "C": "ribosome", "D": "golgi apparatus"}
    assert parse_mmmu_choice("(B)", letters, ans) == ("B", False)
    assert parse_mmmu_choice("B.", letters, ans) == ("B", False)
    assert parse_mmmu_choice("The answer is (A) not (C)", letters, ans) == ("C", False)  # last bracket wins
    assert parse_mmmu_choice("I believe that the organelle is the ribosome here", letters, ans) == ("C", False)
    pick, guessed = parse_mmmu_choice("no idea", letters, ans, random.Random(1))
    assert guessed and pick in letters
    assert parse_mmmu_choice("no idea", letters, ans, random.Random(1)) == (pick, True)  # seeded: reproducible


def test_mmmu_open_parser():
    preds = parse_mmmu_open("The total mass is 3.14159 kg")
    assert 3.14 in preds
    assert mmmu_open_correct("3.14", preds)
    assert mmmu_open_correct("1000", parse_mmmu_open("so the answer is 1,000"))
    assert mmmu_open_correct("Paris", parse_mmmu_open("Therefore the capital is paris."))
    assert not mmmu_open_correct("42", parse_mmmu_open("it is 41"))
    assert mmmu_gold("['24/7', '3.429']") == ["24/7", "3.429"]
    assert mmmu_open_correct(mmmu_gold("['24/7', '3.429']"), parse_mmmu_open("3.429"))


@pytest.mark.parametrize("review, pair", [
    ("8 7\nAssistant 1 is better because...", (8.0, 7.0)),
    ("9, 6\nexplanation", (9.0, 6.0)),
    ("7.5 8\n", (7.5, 8.0)),
    ("Assistant 1: 8/10\nAssistant 2: 6/10\nBoth...", (8.0, 6.0)),
    ("Both answers are fine.", None), ("", None), (None, None), ("8\n", None),
])
def test_pair_score_parsing_counts_failures(review, pair):
    assert parse_pair_score(review) == pair


@pytest.mark.parametrize("text, score", [("0.5", 0.5), ("1.0", 1.0), ("0.0 because", 0.0), ("0.7.", 0.7),
                                         ("1.5", None), ("correct", None), (None, None)])
def test_unit_score_parsing(text, score):
    assert parse_unit_score(text) == score


@pytest.mark.parametrize("text, verdict", [("Answer1", 1), ("Answer2", 2), ("answer 2 is better", 2),
                                           ("Answer1 and Answer2 are equal", None), ("Neither", None)])
def test_vicuna_verdict_parsing(text, verdict):
    assert parse_verdict(text) == verdict
