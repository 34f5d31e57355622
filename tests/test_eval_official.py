"""Agreement with the official scorers (issue 13): each test follows one official file and function,
with the expected numbers worked out by hand or from that file's formula."""
from __future__ import annotations

import json
import random

import pytest

from allava.evaluate.benchmarks import get_benchmark
from allava.evaluate.cli import cmd_report, main
from allava.evaluate.metrics.choice import _extract_numbers, extract_letter, mmmu_open_correct, parse_mmmu_open
from tests.test_eval_benchmarks import jsonl, png

OPTS = {"A": "a red apple", "B": "a blue car", "C": "green grass", "D": "the sky"}


def test_mme_totals_are_sums_of_unrounded_subtask_scores(tmp_path):
    """MME eval_tool/calculation.py (calculate_metrics): total = sum of the subtask scores as computed.
    Three subtasks of 3 images each, one right answer in each: acc = 100/6, acc+ = 0, so each score is
    16.666..; the total is 50.0 (rounding each to 16.67 first gave 50.01)."""
    for sub in ("existence", "count", "position"):
        for n in "123":
            png(tmp_path / sub / f"{n}.jpg")
            (tmp_path / sub / f"{n}.txt").write_text("Is it? Please answer yes or no.\tYes\nIs it not? Please answer "
                                                     "yes or no.\tNo\n")
    bench = get_benchmark("mme")
    samples = bench.load(tmp_path)
    ans = {s.question_id: "Other" for s in samples}
    for sub in ("existence", "count", "position"):
        ans[f"{sub}/1.jpg/0"] = "Yes"
    m = bench.score(samples, ans)
    assert m["subtasks"]["count"]["score"] == 16.67
    assert m["perception"] == 50.0 and m["headline"]["MME-P"] == 50.0


@pytest.mark.parametrize("answer, now, old", [
    ("The answer is **B** since A is red", "B", None),          # two letters; the CoT rule decides now
    ("B is my answer after thinking about the colour", None, "B"),  # a letter not among the last 4 words
    ("After looking carefully my conclusion is that the picture shows a blue car on a road", None, "B"),  # long
    ("I pick B", "B", "B"), ("a blue car", "B", "B"),
    ("Cannot determine the answer", "Z", "Z"),
])
def test_mmbench_current_and_old_vlmevalkit_rules(answer, now, old):
    """VLMEvalKit vlmeval/utils/matching_util.py can_infer / can_infer_option / can_infer_text: since
    #1175 (Aug 2025) a bare letter counts only among the last 4 words and option text is refused when the
    answer is over twice as long as the option texts together; since #1552 (Jun 2026) "answer is **X**"."""
    assert extract_letter(answer, OPTS) == now
    assert extract_letter(answer, OPTS, "vlmevalkit-2024") == old


def test_mmbench_records_its_rules_and_scores_the_old_ones_beside(tmp_path):
    """Circular scoring (VLMEvalKit multiple_choice.py) under both rule sets on the same answers: one
    question, 4 rotations, each answered "X is my answer after thinking about the colour" with X right;
    current rules extract nothing (0.0), the 2024 rules every letter (100.0)."""
    from tests.test_eval_benchmarks import mmbench_tsv

    bench = get_benchmark("mmbench")
    samples = bench.limit(bench.load(mmbench_tsv(tmp_path / "m.tsv")), 1)
    m = bench.score(samples, {s.question_id: f"{s.target} is my answer after thinking about the colour"
                              for s in samples})
    assert m["letter_rules"] == "vlmevalkit" and m["headline"]["MMBench"] == 0.0
    assert m["conventions"]["vlmevalkit-2024"] == {"MMBench": 100.0}


def test_mmmu_numbers_need_a_word_boundary():
    """MMMU mmmu/utils/eval_utils.py extract_numbers: the simple pattern ends in \\d+\\b, so "5cm" is no number."""
    assert _extract_numbers("5cm") == [] and _extract_numbers("5 cm") == ["5"]
    assert not mmmu_open_correct("5", parse_mmmu_open("the width is 5cm"))


def test_mmmu_empty_tail_gives_way_to_the_next_indicator():
    """eval_utils.py parse_open_response / get_key_subresponses: 'is ' leaves an empty tail in the first
    line, so the tail after 'answer ' ("is") is kept; the response is not used whole, and 42 is not found."""
    assert parse_mmmu_open("the answer is \n42") == ["is"]
    assert not mmmu_open_correct("42", parse_mmmu_open("the answer is \n42"))


def test_mmmu_unparsable_answers_draw_from_one_generator_seeded_42(tmp_path):
    """eval_utils.py parse_multi_choice_response (random.seed(42) at import, random.choice per
    unparsable answer) run by main_parse_and_eval.py subject by subject: the expected picks are the
    first draws of one Random(42), in question order."""
    rows = [{"id": f"validation_Art_{i}", "question": "Which?", "options": "['w', 'x', 'y', 'z']", "answer": "A",
             "question_type": "multiple-choice", "image_1": None} for i in range(1, 5)]
    jsonl(tmp_path / "validation.jsonl", rows)
    bench = get_benchmark("mmmu")
    samples = bench.load(tmp_path)
    draw = random.Random(42)
    expected = [draw.choice(list("ABCD")) for _ in samples]
    m = bench.score(samples, {s.question_id: "no idea" for s in samples})
    assert m["random_guesses"] == 4
    assert m["accuracy"] == round(100 * expected.count("A") / 4, 2)


def test_gqa_trailing_space_is_wrong(tmp_path):
    """LLaVA scripts convert_gqa_for_submission.py (text.rstrip('.').lower()) + GQA eval.py (exact ==)."""
    (tmp_path / "testdev_balanced_questions.json").write_text(json.dumps({
        "q1": {"imageId": "n1", "question": "Is it red?", "answer": "yes"},
        "q2": {"imageId": "n1", "question": "Is it big?", "answer": "no"}}))
    bench = get_benchmark("gqa")
    assert bench.score(bench.load(tmp_path), {"q1": "yes ", "q2": "No."})["accuracy"] == 50.0


def test_scienceqa_missing_prediction_counts_wrong(tmp_path):
    """LLaVA llava/eval/eval_science_qa.py: a problem without prediction is 'FAILED' and counted in the
    total: 1 right of 2 = 50.0 (not 1 of 1)."""
    probs = {str(i): {"question": "Q?", "choices": ["a", "b"], "answer": 0, "image": "image.png", "hint": "",
                      "subject": "natural science"} for i in (1, 2)}
    (tmp_path / "problems.json").write_text(json.dumps(probs))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"test": ["1", "2"]}))
    bench = get_benchmark("scienceqa-img")
    m = bench.score(bench.load(tmp_path), {"1": "A"})
    assert m["accuracy"] == 50.0 and m["n_missing"] == 1 and m["n"] == 2


# --- foreign answer files ------------------------------------------------------------------------
def pope_fixture(root, with_llava_questions=True):
    png(root / "val2014" / "a.jpg")
    for split in ("adversarial", "popular", "random"):
        jsonl(root / "coco" / f"coco_pope_{split}.json",
              [{"question_id": i, "image": "a.jpg", "text": f"Is there a {o}?", "label": lab}
               for i, (o, lab) in enumerate([("cat", "yes"), ("dog", "no")], 1)])
    if with_llava_questions:
        rows, n = [], 0
        for split in ("adversarial", "popular", "random"):
            for o in ("cat", "dog"):
                n += 1
                rows.append({"question_id": n, "image": "a.jpg", "category": split,
                             "text": f"Is there a {o}?\nAnswer the question using a single word or phrase."})
        jsonl(root / "llava_pope_test.jsonl", rows)
    return root


def test_pope_llava_integer_ids(tmp_path, capsys):
    """LLaVA llava/eval/eval_pope.py: answers carry llava_pope_test.jsonl's integer ids; a category's
    answers pair with coco_pope_<category>.json by position. All right: F1 100 in every split."""
    root = pope_fixture(tmp_path / "pope")
    preds = jsonl(tmp_path / "answers.jsonl", [{"question_id": n, "prompt": "x", "text": t, "model_id": "m"}
                                               for n, t in zip(range(1, 7), ["Yes", "No"] * 3)])
    assert main(["score", "--benchmark", "pope", "--data", str(root), "--predictions", str(preds)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answers_matched"] == 6 and out["mean_f1"] == 100.0 and out["answer_format"] == "llava"


def test_pope_vlmevalkit_tsv_and_conventions(tmp_path, capsys):
    """VLMEvalKit POPE predictions (.tsv, prediction + category columns) and yorn.py POPE_rating's pooled
    F1 with YOrN_Extraction: "Sure, there is a cat" is neither yes nor no there (a miss), yes for LLaVA's rule."""
    root = pope_fixture(tmp_path / "pope", with_llava_questions=False)
    lines = ["index\tquestion\tanswer\tcategory\tprediction"]
    for split in ("adversarial", "popular", "random"):
        lines += [f"1\tIs there a cat?\tyes\t{split}\tSure, there is a cat", f"2\tIs there a dog?\tno\t{split}\tNo"]
    (tmp_path / "pred.tsv").write_text("\n".join(lines) + "\n")
    assert main(["score", "--benchmark", "pope", "--data", str(root), "--predictions", str(tmp_path / "pred.tsv")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer_format"] == "vlmevalkit" and out["mean_f1"] == 100.0
    assert out["conventions"]["vlmevalkit"] == {"POPE-F1": 0.0} and out["conventions"]["lmms-eval"]["POPE-F1"] == 100.0


def test_mme_llava_subtask_image_ids(tmp_path):
    """LLaVA's llava_mme.jsonl answers: question_id '<subtask>/<image>' shared by the image's two
    questions, told apart by the prompt (convert_answer_to_mme.py matches on question text)."""
    png(tmp_path / "mme" / "color" / "x.jpg")
    (tmp_path / "mme" / "color" / "x.txt").write_text("Is it red? Please answer yes or no.\tYes\n"
                                                      "Is it blue? Please answer yes or no.\tNo\n")
    bench = get_benchmark("mme")
    samples = bench.load(tmp_path / "mme")
    from allava.evaluate.answers import read_answers

    rows = jsonl(tmp_path / "a.jsonl", [
        {"question_id": "color/x.jpg", "prompt": "Is it blue? Please answer yes or no.\nAnswer the question using a "
         "single word or phrase.", "text": "No"},
        {"question_id": "color/x.jpg", "prompt": "Is it red? Please answer yes or no.", "text": "Yes"}])
    answers = bench.match(samples, read_answers(rows)[0])
    assert answers == {"color/x.jpg/0": "Yes", "color/x.jpg/1": "No"}
    assert bench.score(samples, answers)["subtasks"]["color"]["score"] == 200.0


def test_mme_lmms_eval_log_samples(tmp_path):
    """lmms-eval lmms_eval/loggers/evaluation_tracker.py save_results_samples: one JSON line per doc with
    doc_id, doc (question_id '<subtask>/<image>', question, category), filtered_resps."""
    png(tmp_path / "mme" / "OCR" / "y.png")
    (tmp_path / "mme" / "OCR" / "y.txt").write_text("Is the word A? Please answer yes or no.\tYes\n"
                                                   "Is the word B? Please answer yes or no.\tNo\n")
    bench = get_benchmark("mme")
    samples = bench.load(tmp_path / "mme")
    from allava.evaluate.answers import read_answers

    f = jsonl(tmp_path / "20260101_samples_mme.jsonl", [
        {"doc_id": i, "doc": {"question_id": "OCR/y.png", "question": q, "category": "OCR"}, "target": t,
         "filtered_resps": [r], "input": q} for i, (q, t, r) in enumerate(
            [("Is the word A? Please answer yes or no.", "Yes", "Yes"), ("Is the word B?", "No", "Yes")])])
    rows, fmt = read_answers(f)
    assert fmt == "lmms-eval"
    assert bench.match(samples, rows) == {"OCR/y.png/0": "Yes", "OCR/y.png/1": "Yes"}


def test_textvqa_llava_answers_by_image_id_and_ocr_guard(tmp_path):
    """LLaVA llava/eval/eval_textvqa.py: answers and the OCR question file are keyed by image id +
    question (prompt_processor). A with-OCR run whose OCR file matches no question fails loudly."""
    (tmp_path / "TextVQA_0.5.1_val.json").write_text(json.dumps({"data": [
        {"question_id": 7, "question": "what brand?", "image_id": "im1", "answers": ["kodak"] * 10},
        {"question_id": 8, "question": "what year?", "image_id": "im1", "answers": ["1999"] * 10}]}))
    jsonl(tmp_path / "llava_textvqa_val_v051_ocr.jsonl", [
        {"question_id": "im1", "text": f"{q}\nReference OCR token: KODAK, 1999\nAnswer the question using a single "
         "word or phrase."} for q in ("what brand?", "what year?")])
    bench = get_benchmark("textvqa")
    samples = bench.load(tmp_path)
    assert all("Reference OCR token: KODAK" in s.prompt for s in samples)
    from allava.evaluate.answers import Answer

    got = bench.match(samples, [Answer("Kodak", "im1", {"prompt": samples[0].prompt}),
                                Answer("1998", "im1", {"prompt": samples[1].prompt})])
    assert got == {"7": "Kodak", "8": "1998"} and bench.score(samples, got)["accuracy"] == 50.0

    jsonl(tmp_path / "llava_textvqa_val_v051_ocr.jsonl", [{"question_id": 7, "text": "what brand?\nReference OCR "
                                                           "token: KODAK\nAnswer the question using a single word."}])
    from allava.evaluate.benchmarks import BenchmarkError

    with pytest.raises(BenchmarkError, match="only 0 of 2 questions got OCR tokens"):
        bench.load(tmp_path)


def test_mmbench_vlmevalkit_xlsx(tmp_path, capsys):
    """VLMEvalKit's <model>_MMBench_DEV_EN.xlsx: the TSV's columns plus 'prediction', one row per index."""
    openpyxl = pytest.importorskip("openpyxl")
    from tests.test_eval_benchmarks import mmbench_tsv

    tsv = mmbench_tsv(tmp_path / "MMBench_DEV_EN.tsv")
    samples = get_benchmark("mmbench").load(tsv)
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["index", "question", "answer", "prediction"])
    for s in samples:
        ws.append([int(s.question_id), s.meta["question"], s.target, f"{s.target}"])
    wb.save(tmp_path / "model_MMBench_DEV_EN.xlsx")
    assert main(["score", "--benchmark", "mmbench", "--data", str(tsv), "--predictions",
                 str(tmp_path / "model_MMBench_DEV_EN.xlsx")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer_format"] == "vlmevalkit" and out["circular_accuracy"] == 100.0


def test_gqa_lmms_eval_log_samples(tmp_path, capsys):
    """lmms-eval --log_samples for GQA: doc keeps the question's 'id'; filtered_resps flattened to a string."""
    (tmp_path / "testdev_balanced_questions.json").write_text(json.dumps({
        "q1": {"imageId": "n1", "question": "Is it red?", "answer": "yes"}}))
    f = jsonl(tmp_path / "samples_gqa.jsonl", [{"doc_id": 0, "doc": {"id": "q1", "question": "Is it red?"},
                                                "target": "yes", "filtered_resps": "Yes", "exact_match": 1.0}])
    assert main(["score", "--benchmark", "gqa", "--data", str(tmp_path), "--predictions", str(f)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer_format"] == "lmms-eval" and out["accuracy"] == 100.0


def test_report_conventions_columns(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.json").write_text(json.dumps({
        "benchmark": "pope", "model": "/m/x", "headline": {"POPE-F1": 85.27}, "convention": "mean F1",
        "conventions": {"lmms-eval": {"POPE-F1": 85.9}}}))
    assert "POPE-F1 (lmms-eval)" not in cmd_report([tmp_path / "r"])
    table = cmd_report([tmp_path / "r"], conventions=True)
    assert "| model | POPE-F1 | POPE-F1 (lmms-eval) |" in table and "| x | 85.3 | 85.9 |" in table


def test_unknown_letter_rules_is_a_one_line_error(tmp_path, capsys):
    from tests.test_eval_benchmarks import mmbench_tsv

    tsv = mmbench_tsv(tmp_path / "m.tsv")
    preds = jsonl(tmp_path / "p.jsonl", [{"question_id": 0, "text": "A"}])
    assert main(["score", "--benchmark", "mmbench", "--data", str(tsv), "--predictions", str(preds),
                 "--letter-rules", "nope"]) == 2
    assert "unknown letter rules 'nope'" in capsys.readouterr().err
