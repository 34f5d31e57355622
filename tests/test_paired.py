"""The exact McNemar test used to compare two models on the same benchmark questions."""
from __future__ import annotations

import pytest

from allava.evaluate.paired import exact_mcnemar, paired_compare
from allava.report import paired_comparisons


def test_exact_mcnemar_matches_the_binomial_test():
    assert exact_mcnemar(0, 0) == 1.0
    assert exact_mcnemar(0, 10) == pytest.approx(2 / 1024)
    assert exact_mcnemar(34, 38) == pytest.approx(0.72395, abs=1e-4)  # scipy.stats.binomtest(38, 72).pvalue
    assert exact_mcnemar(5, 5) == 1.0 and exact_mcnemar(3, 9) == exact_mcnemar(9, 3)


def test_only_the_questions_the_models_disagree_on_count():
    res = paired_compare({"q1", "q2", "q3"}, {"q2", "q3", "q4", "q5"}, n=6)
    assert (res.n, res.only_a, res.only_b) == (6, 1, 2)


def test_report_compares_the_pairs_it_has_and_skips_the_rest():
    evals = {"full/stage2": {"n": 4, "correct_ids": ["a", "b", "c"]},
             "stage2-only/stage2": {"n": 4, "correct_ids": ["a"]},
             "noisy/stage2": {"n": 4}}  # an older run without ids: no comparison, no crash
    out = paired_comparisons(evals)
    assert list(out) == ["full/stage2 vs stage2-only/stage2"]
    assert out["full/stage2 vs stage2-only/stage2"]["only_a"] == 2
