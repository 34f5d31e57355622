"""The exact McNemar test used to compare two models on the same benchmark questions."""
from __future__ import annotations

import pytest

from allava.evaluate.paired import exact_mcnemar, paired_compare
from allava.studies.report import compare


def test_exact_mcnemar_matches_the_binomial_test():
    assert exact_mcnemar(0, 0) == 1.0
    assert exact_mcnemar(0, 10) == pytest.approx(2 / 1024)
    assert exact_mcnemar(34, 38) == pytest.approx(0.72395, abs=1e-4)  # scipy.stats.binomtest(38, 72).pvalue
    assert exact_mcnemar(5, 5) == 1.0 and exact_mcnemar(3, 9) == exact_mcnemar(9, 3)


def test_only_the_questions_the_models_disagree_on_count():
    res = paired_compare({"q1", "q2", "q3"}, {"q2", "q3", "q4", "q5"}, n=6)
    assert (res.n, res.only_a, res.only_b) == (6, 1, 2)


def test_a_study_says_whether_the_papers_direction_held():
    ids = [f"q{i}" for i in range(40)]
    strong = {"n": 40, "overall": 0.5, "correct_ids": ids[:20]}
    weak = {"n": 40, "overall": 0.05, "correct_ids": ids[:2]}
    held = compare("full", strong, "alone", weak, "stage 1 + 2 vs stage 2 alone", expected="a")
    assert held["direction_held"] and held["p_value"] < 0.05 and "held" in held["verdict"]
    reversed_ = compare("alone", weak, "full", strong, "x", expected="a")
    assert not reversed_["direction_held"] and "opposite" in reversed_["verdict"]
    same = compare("a", strong, "b", dict(strong), "x", expected="a")
    assert not same["direction_held"] and same["p_value"] == 1.0 and "not shown" in same["verdict"]
    assert compare("a", strong, "b", {"n": 40, "overall": 0.1}, "x", expected="a") is None  # an older run: no ids
