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


def test_textvqa_vlmevalkit_predictions_match_by_question_and_answers(tmp_path, capsys):
    """VLMEvalKit vlmeval/inference.py writes <model>_TextVQA_VAL.xlsx as TextVQA_VAL.tsv's rows (index,
    question, answer = str(list of the 10 answers); image popped) plus 'prediction'; its index counts rows
    and is no question id. Two 'what brand?' questions on different images: matched by question + answers,
    the row order differing from ours; by index they would swap (33.33). vqa_eval.py process_line
    'vqa_score' is the same leave-one-out accuracy: Canon right, nikon wrong, 1999 right -> 66.67."""
    openpyxl = pytest.importorskip("openpyxl")
    (tmp_path / "TextVQA_0.5.1_val.json").write_text(json.dumps({"data": [
        {"question_id": 0, "question": "what brand?", "image_id": "im1", "answers": ["kodak"] * 10},
        {"question_id": 1, "question": "what brand?", "image_id": "im2", "answers": ["canon"] * 9 + ["cannon"]},
        {"question_id": 2, "question": "what year?", "image_id": "im1", "answers": ["1999"] * 10}]}))
    rows = [(0, "what brand?", str(["cannon"] + ["canon"] * 9), "Canon"),
            (1, "what brand?", str(["kodak"] * 10), "nikon"), (2, "what year?", str(["1999"] * 10), "1999")]
    wb = openpyxl.Workbook()
    wb.active.append(["index", "question", "answer", "prediction"])
    for r in rows:
        wb.active.append(list(r))
    wb.save(tmp_path / "llava_TextVQA_VAL.xlsx")
    (tmp_path / "llava_TextVQA_VAL.tsv").write_text("index\tquestion\tanswer\tprediction\n" +
                                                    "".join("\t".join(map(str, r)) + "\n" for r in rows))
    for name in ("llava_TextVQA_VAL.xlsx", "llava_TextVQA_VAL.tsv"):
        assert main(["score", "--benchmark", "textvqa-noocr", "--data", str(tmp_path), "--predictions",
                     str(tmp_path / name)]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["answer_format"] == "vlmevalkit" and out["accuracy"] == 66.67 and out["n_missing"] == 0
    from allava.evaluate.answers import read_answers

    bench = get_benchmark("textvqa-noocr")
    got = bench.match(bench.load(tmp_path), read_answers(tmp_path / "llava_TextVQA_VAL.tsv")[0])
    assert got == {"1": "Canon", "0": "nikon", "2": "1999"}
    (tmp_path / "ids.tsv").write_text("question_id\tquestion\tprediction\n1\twhat brand?\tCanon\n")
    assert bench.match(bench.load(tmp_path), read_answers(tmp_path / "ids.tsv")[0]) == {"1": "Canon"}


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


# --- LLaVA's question files as --data (playground/data/eval/<bench>/, detected by content) -------
SHORT = "Answer the question using a single word or phrase."


def test_pope_llava_question_file_as_data(tmp_path, capsys):
    """scripts/v1_5/eval/pope.sh: model_vqa_loader.py asks llava_pope_test.jsonl's text about
    val2014/<image>; eval_pope.py scores the answers against coco/coco_pope_<category>.json. --data
    the question file: LLaVA's prompts, its integer ids, all 6 right -> F1 100."""
    root = pope_fixture(tmp_path / "pope")
    bench = get_benchmark("pope")
    samples = bench.load(root / "llava_pope_test.jsonl")
    assert [s.meta["llava_id"] for s in samples] == [str(n) for n in range(1, 7)]
    assert samples[0].prompt == f"Is there a cat?\n{SHORT}" and samples[0].image == root / "val2014" / "a.jpg"
    preds = jsonl(tmp_path / "answers.jsonl", [{"question_id": n, "prompt": "x", "text": t, "answer_id": "a",
                                                "model_id": "m"} for n, t in zip(range(1, 7), ["Yes", "No"] * 3)])
    assert main(["score", "--benchmark", "pope", "--data", str(root / "llava_pope_test.jsonl"),
                 "--predictions", str(preds)]) == 0
    assert json.loads(capsys.readouterr().out)["mean_f1"] == 100.0


def test_mme_llava_question_file_as_data(tmp_path):
    """scripts/v1_5/eval/mme.sh: llava_mme.jsonl (question_id '<subtask>/<image>', image relative to
    MME_Benchmark_release_version/, LLaVA's text without 'Please answer yes or no.' where it dropped it);
    convert_answer_to_mme.py finds the gold by subtask, image and question."""
    rel = tmp_path / "MME" / "MME_Benchmark_release_version"
    png(rel / "artwork" / "images" / "1.jpg")
    (rel / "artwork" / "questions_answers_YN").mkdir(parents=True)
    (rel / "artwork" / "questions_answers_YN" / "1.txt").write_text(
        "Is this by Monet? Please answer yes or no.\tYes\nIs this by Dali? Please answer yes or no.\tNo\n")
    qfile = jsonl(tmp_path / "MME" / "llava_mme.jsonl", [
        {"question_id": "artwork/1.jpg", "image": "artwork/images/1.jpg", "category": "artwork",
         "text": f"Is this by Dali?\n{SHORT}"},
        {"question_id": "artwork/1.jpg", "image": "artwork/images/1.jpg", "category": "artwork",
         "text": f"Is this by Monet? Please answer yes or no.\n{SHORT}"}])
    bench = get_benchmark("mme")
    samples = bench.load(qfile)
    assert [s.question_id for s in samples] == ["artwork/1.jpg/1", "artwork/1.jpg/0"]  # LLaVA's order
    assert samples[0].prompt == f"Is this by Dali?\n{SHORT}" and samples[0].image == rel / "artwork/images/1.jpg"
    from allava.evaluate.answers import Answer

    got = bench.match(samples, [Answer("No", "artwork/1.jpg", {"prompt": samples[0].prompt}),
                                Answer("Yes", "artwork/1.jpg", {"prompt": samples[1].prompt})])
    assert bench.score(samples, got)["subtasks"]["artwork"]["score"] == 200.0


def test_textvqa_llava_question_file_as_data(tmp_path):
    """scripts/v1_5/eval/textvqa.sh: llava_textvqa_val_v051_ocr.jsonl (question_id = image id, text =
    question + 'Reference OCR token: ...' + suffix) with TextVQA_0.5.1_val.json beside it, as
    eval_textvqa.py pairs them (image id + prompt_processor's question)."""
    (tmp_path / "TextVQA_0.5.1_val.json").write_text(json.dumps({"data": [
        {"question_id": 7, "question": "what brand?", "image_id": "im1", "answers": ["kodak"] * 10},
        {"question_id": 8, "question": "what year?", "image_id": "im1", "answers": ["1999"] * 10}]}))
    qfile = jsonl(tmp_path / "llava_textvqa_val_v051_ocr.jsonl", [
        {"question_id": "im1", "image": "im1.jpg", "text": f"{q}\nReference OCR token: KODAK, 1999\n{SHORT}"}
        for q in ("what year?", "what brand?")])
    samples = get_benchmark("textvqa").load(qfile)
    assert [s.question_id for s in samples] == ["8", "7"]
    assert samples[1].prompt == f"what brand?\nReference OCR token: KODAK, 1999\n{SHORT}"
    from allava.evaluate.benchmarks import BenchmarkError

    with pytest.raises(BenchmarkError, match="use --benchmark textvqa"):
        get_benchmark("textvqa-noocr").load(qfile)


def test_gqa_llava_question_file_as_data(tmp_path, capsys):
    """scripts/v1_5/eval/gqa.sh: llava_gqa_testdev_balanced.jsonl beside data/ (testdev_balanced_questions.json,
    images/); convert_gqa_for_eval.py keeps question_id as the GQA questionId. A one-line answer file is
    LLaVA JSONL, not MMMU's {id: response} JSON (it was read as that and matched nothing)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "testdev_balanced_questions.json").write_text(json.dumps({
        "201": {"imageId": "n1", "question": "Is it red?", "answer": "yes"},
        "202": {"imageId": "n1", "question": "Is it big?", "answer": "no"}}))
    qfile = jsonl(tmp_path / "llava_gqa_testdev_balanced.jsonl", [
        {"question_id": "202", "image": "n1.jpg", "text": f"Is it big?\n{SHORT}"}])
    samples = get_benchmark("gqa").load(qfile)
    assert [(s.question_id, s.prompt, s.image) for s in samples] == [
        ("202", f"Is it big?\n{SHORT}", tmp_path / "data" / "images" / "n1.jpg")]
    preds = jsonl(tmp_path / "merge.jsonl", [{"question_id": "202", "prompt": "p", "text": "No"}])
    assert main(["score", "--benchmark", "gqa", "--data", str(qfile), "--predictions", str(preds)]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 100.0


def sqa_fixture(root):
    png(root / "images" / "test" / "10" / "image.png")
    (root / "problems.json").write_text(json.dumps({
        "10": {"question": "Which is a mammal?", "choices": ["frog", "whale"], "answer": 1, "hint": "",
               "image": "image.png", "subject": "natural science"},
        "11": {"question": "2+2?", "choices": ["4", "5"], "answer": 0, "hint": "Math.", "image": None,
               "subject": "language science"}}))
    (root / "pid_splits.json").write_text(json.dumps({"test": ["10", "11"]}))
    return root


def test_scienceqa_llava_question_file_as_data(tmp_path):
    """scripts/v1_5/eval/sqa.sh: model_vqa_science.py reads llava_test_CQM-A.json (a JSON list of
    {id, image '<pid>/image.png', conversations}; human turn with '<image>' removed, the letter suffix
    added by --single-pred-prompt), images from images/test/; eval_science_qa.py reads problems.json."""
    root = sqa_fixture(tmp_path)
    (root / "llava_test_CQM-A.json").write_text(json.dumps([
        {"id": "10", "image": "10/image.png", "conversations": [
            {"from": "human", "value": "Context: N/A\nWhich is a mammal?\nA. frog\nB. whale\n<image>"},
            {"from": "gpt", "value": "The answer is B."}]},
        {"id": "11", "conversations": [{"from": "human", "value": "Context: Math.\n2+2?\nA. 4\nB. 5"},
                                       {"from": "gpt", "value": "The answer is A."}]}]))
    img = get_benchmark("scienceqa-img").load(root / "llava_test_CQM-A.json")
    assert [(s.question_id, s.image) for s in img] == [("10", root / "images" / "test" / "10" / "image.png")]
    assert img[0].prompt == ("Context: N/A\nWhich is a mammal?\nA. frog\nB. whale\n"
                             "Answer with the option's letter from the given choices directly.")
    assert [s.question_id for s in get_benchmark("scienceqa").load(root / "llava_test_CQM-A.json")] == ["10", "11"]


def test_llava_bench_and_mmvet_question_files_as_data(tmp_path):
    """scripts/v1_5/eval/llavabench.sh (--question-file questions.jsonl) and mmvet.sh (llava-mm-vet.jsonl,
    integer ids that convert_mmvet_for_eval.py turns into mm-vet.json's v1_<id>)."""
    lb = tmp_path / "llava-bench-in-the-wild"
    jsonl(lb / "questions.jsonl", [{"question_id": 0, "image": "001.jpg", "text": "What is this?", "category": "conv"}])
    jsonl(lb / "context.jsonl", [{"id": "001", "image": "001.jpg", "caption": "A tower."}])
    (lb / "answers_gpt4.jsonl").write_text(json.dumps({"question_id": 0, "prompt": "What is this?", "text": "A tower.",
                                                       "answer_id": "x", "model_id": "gpt-4-0314"}) + "\n")
    s = get_benchmark("llava-bench").load(lb / "questions.jsonl")
    assert [(x.question_id, x.target, x.meta["caption"]) for x in s] == [("0", "A tower.", "A tower.")]

    mv = tmp_path / "mm-vet"
    (mv / "mm-vet.json").parent.mkdir()
    (mv / "mm-vet.json").write_text(json.dumps({
        "v1_0": {"imagename": "v1_0.png", "capability": ["ocr"], "question": "x?", "answer": "3"},
        "v1_1": {"imagename": "v1_1.png", "capability": ["rec"], "question": "y?", "answer": "cat"}}))
    jsonl(mv / "llava-mm-vet.jsonl", [{"question_id": 1, "image": "v1_1.png", "text": "y?"}])
    (mv / "images").mkdir()
    bench = get_benchmark("mm-vet")
    samples = bench.load(mv / "llava-mm-vet.jsonl")
    assert [(x.question_id, x.image) for x in samples] == [("v1_1", mv / "images" / "v1_1.png")]
    from allava.evaluate.answers import Answer

    assert bench.match(samples, [Answer("a cat", "1", {"question_id": 1, "prompt": "y?"})]) == {"v1_1": "a cat"}
    full = get_benchmark("mm-vet")  # the mm-vet folder as --data: LLaVA's integer ids still map to v1_<id>
    assert full.match(full.load(mv), [Answer("3", "0", {})]) == {"v1_0": "3"}


def test_seed_llava_question_file_as_data_and_conventions(tmp_path):
    """scripts/v1_5/eval/seed.sh: llava-seed-bench.jsonl (image paths relative to the seed_bench folder,
    video questions too) with SEED-Bench.json beside it. convert_seed_for_submission.py counts an answer
    right only if its text equals the letter; lmms-eval seedbench/utils.py seed_process_result takes the
    first character, any case. Answers 'B', 'B. dog', 'b': ours (VLMEvalKit can_infer, letters upper-case
    only) 2/3, LLaVA's 1/3, lmms-eval's 3/3."""
    for n in "123":
        png(tmp_path / "SEED-Bench-image" / f"{n}.jpg")
    q = {"answer": "B", "choice_a": "cat", "choice_b": "dog", "choice_c": "cow", "choice_d": "hen",
         "question": "Which animal?", "question_type_id": 1, "data_type": "image"}
    (tmp_path / "SEED-Bench.json").write_text(json.dumps({"question_type": {"Instance Identity": 1}, "questions": [
        {**q, "question_id": n, "data_id": f"{n}.jpg"} for n in "123"] + [
        {**q, "question_id": "v9", "data_id": "v.mp4", "data_type": "video"}]}))
    text = ("Which animal?\nA. cat\nB. dog\nC. cow\nD. hen\n"
            "Answer with the option's letter from the given choices directly.")
    jsonl(tmp_path / "llava-seed-bench.jsonl", [
        {"question_id": n, "image": f"SEED-Bench-image/{n}.jpg", "text": text, "category": "Instance Identity"}
        for n in "123"] + [{"question_id": "v9", "image": "SEED-Bench-video-image/v9.png", "text": text}])
    bench = get_benchmark("seed")
    samples = bench.load(tmp_path / "llava-seed-bench.jsonl")
    assert [s.question_id for s in samples] == ["1", "2", "3"] and samples[0].prompt == text
    m = bench.score(samples, {"1": "B", "2": "B. dog", "3": "b"})
    assert m["accuracy"] == 66.67
    assert m["conventions"] == {"llava": {"SEED-img": 33.33}, "lmms-eval": {"SEED-img": 100.0}}


def test_a_question_the_gold_lacks_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "testdev_balanced_questions.json").write_text(json.dumps({
        "201": {"imageId": "n1", "question": "Is it red?", "answer": "yes"}}))
    qfile = jsonl(tmp_path / "llava_gqa_testdev_balanced.jsonl", [{"question_id": "999", "image": "n9.jpg",
                                                                  "text": "Is it?"}])
    preds = jsonl(tmp_path / "p.jsonl", [{"question_id": "999", "text": "yes"}])
    assert main(["score", "--benchmark", "gqa", "--data", str(qfile), "--predictions", str(preds)]) == 2
    err = capsys.readouterr().err
    assert "question 999" in err and "llava_gqa_testdev_balanced.jsonl" in err and "Traceback" not in err


def test_mmbench_legacy_llava_tsv_as_data(tmp_path):
    """scripts/v1_5/eval/mmbench.sh: --question-file mmbench_dev_20230712.tsv (the legacy TSV, rotated
    copies at index + k * 1e6, as model_vqa_mmbench.py reads it)."""
    from tests.test_eval_benchmarks import png as _png

    import base64

    img = base64.b64encode(_png()).decode()
    header = "index\tquestion\thint\tA\tB\tanswer\tcategory\tl2-category\timage\tsource\n"
    rows = [f"0\tWhich?\tnan\tx\ty\tA\tc\tl2\t{img}\ts\n", "1000000\tWhich?\tnan\ty\tx\tB\tc\tl2\t0\ts\n"]
    (tmp_path / "mmbench_dev_20230712.tsv").write_text(header + "".join(rows))
    bench = get_benchmark("mmbench")
    samples = bench.load(tmp_path / "mmbench_dev_20230712.tsv")
    assert [(s.question_id, s.target) for s in samples] == [("0", "A"), ("1000000", "B")]
    assert bench.score(samples, {"0": "A", "1000000": "B"})["circular_accuracy"] == 100.0


def test_mmbench_cn_tsv_loads_and_scores_as_mmbench(tmp_path, capsys):
    """scripts/v1_5/eval/mmbench_cn.sh: model_vqa_mmbench.py --lang cn --single-pred-prompt on
    mmbench_dev_cn_20231003.tsv (index, question, hint, A-D, answer, category, image, source, l2-category,
    comment, split; the rotated copy at index + 1e6 points at the original's image by index), no
    --all-rounds, so each row is answered once with round_id 0 and the prompt ends in '请直接回答选项字母。'.
    CircularEval: question 0 right in both copies (100.0); a wrong copy fails it (0.0)."""
    import base64

    img = base64.b64encode(png()).decode()
    header = "index\tquestion\thint\tA\tB\tC\tD\tanswer\tcategory\timage\tsource\tl2-category\tcomment\tsplit\n"
    rows = [f"0\t图中是什么动物？\tnan\t猫\t狗\t\t\tA\tobject\t{img}\tsrc\tperception\tnan\tdev\n",
            "1000000\t图中是什么动物？\tnan\t狗\t猫\t\t\tB\tobject\t0\tsrc\tperception\tnan\tdev\n"]
    tsv = tmp_path / "mmbench_dev_cn_20231003.tsv"
    tsv.write_text(header + "".join(rows), encoding="utf-8")
    samples = get_benchmark("mmbench").load(tsv)
    assert [(s.question_id, s.target) for s in samples] == [("0", "A"), ("1000000", "B")]
    assert samples[1].prompt == "图中是什么动物？\nA. 狗\nB. 猫\n请直接回答选项字母。"
    for second, want in (("B", 100.0), ("A", 0.0)):
        preds = jsonl(tmp_path / "llava-v1.5-13b.jsonl", [
            {"question_id": idx, "round_id": 0, "prompt": "p", "text": text, "options": ["x", "y"],
             "option_char": ["A", "B"], "answer_id": "a", "model_id": "m", "metadata": {}}
            for idx, text in ((0, "A"), (1000000, second))])
        assert main(["score", "--benchmark", "mmbench", "--data", str(tsv), "--predictions", str(preds)]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["circular_accuracy"] == want and out["n_missing"] == 0 and out["language"] == "cn"


# --- lmms-eval and VLMEvalKit answers for ScienceQA and MMMU; lmms-eval's MMBench ------------------
def test_scienceqa_lmms_eval_and_vlmevalkit_answers_match_by_question(tmp_path):
    """lmms-eval scienceqa_img docs (lmms-lab/ScienceQA: question, hint, choices; no problem id) and
    VLMEvalKit ScienceQA_TEST rows (index counts rows, question/hint/A/B/answer): matched by question,
    hint and choices. lmms-eval tasks/scienceqa/utils.py sqa_process_results: 'B' or 'B. ...' only, so
    'The answer is B.' is right for LLaVA's eval_science_qa.py and wrong for lmms-eval."""
    root = sqa_fixture(tmp_path)
    bench = get_benchmark("scienceqa")
    samples = bench.load(root)
    from allava.evaluate.answers import read_answers

    f = jsonl(tmp_path / "samples_scienceqa.jsonl", [
        {"doc_id": 0, "doc": {"question": "2+2?", "hint": "Math.", "choices": ["4", "5"], "answer": 0},
         "filtered_resps": ["The answer is A."]},
        {"doc_id": 1, "doc": {"question": "Which is a mammal?", "hint": "", "choices": ["frog", "whale"], "answer": 1},
         "filtered_resps": ["B"]}])
    rows, fmt = read_answers(f)
    answers = bench.match(samples, rows)
    assert fmt == "lmms-eval" and answers == {"11": "The answer is A.", "10": "B"}
    m = bench.score(samples, answers)
    assert m["accuracy"] == 100.0 and m["conventions"]["lmms-eval"] == {"SQA": 50.0}

    (tmp_path / "ScienceQA_TEST.tsv").write_text(
        "index\tquestion\thint\tA\tB\tanswer\tprediction\n"
        "0\tWhich is a mammal?\tnan\tfrog\twhale\tB\tB\n10\t2+2?\tMath.\t4\t5\tA\tB\n")
    rows, fmt = read_answers(tmp_path / "ScienceQA_TEST.tsv")
    assert fmt == "vlmevalkit" and bench.match(samples, rows) == {"10": "B", "11": "B"}  # not index 10 -> pid 10


def test_mmmu_lmms_eval_and_vlmevalkit_answers(tmp_path):
    """lmms-eval mmmu_val logged docs keep MMMU's id (validation_Art_1); VLMEvalKit's MMMU_DEV_VAL rows
    are matched by their id column, or by question and options (A, B, ...) without one."""
    rows = [{"id": "validation_Art_1", "question": "<image 1> Which style?", "options": "['Baroque', 'Cubism']",
             "answer": "B", "question_type": "multiple-choice", "image_1": None},
            {"id": "validation_Art_2", "question": "Which era?", "options": "['Gothic', 'Modern']",
             "answer": "A", "question_type": "multiple-choice", "image_1": None}]
    jsonl(tmp_path / "mmmu" / "validation.jsonl", rows)
    bench = get_benchmark("mmmu")
    samples = bench.load(tmp_path / "mmmu")
    from allava.evaluate.answers import read_answers

    f = jsonl(tmp_path / "samples_mmmu_val.jsonl", [
        {"doc_id": i, "doc": {"id": r["id"], "question": r["question"], "options": r["options"]},
         "filtered_resps": [a]} for i, (r, a) in enumerate(zip(rows, ["(B)", "A"]))])
    got = bench.match(samples, read_answers(f)[0])
    assert got == {"validation_Art_1": "(B)", "validation_Art_2": "A"} and bench.score(samples, got)["accuracy"] == 100.0
    (tmp_path / "MMMU_DEV_VAL.tsv").write_text("index\tquestion\tA\tB\tanswer\tprediction\n"
                                               "5\tWhich era?\tGothic\tModern\tA\tA\n")
    assert bench.match(samples, read_answers(tmp_path / "MMMU_DEV_VAL.tsv")[0]) == {"validation_Art_2": "A"}


@pytest.mark.parametrize("answer, letter", [
    ("The answer is B because A is wrong", "A"),   # mcq_extract: 'phrase' candidates, the later one wins
    ("I think it is (C)", "C"),                     # can_infer_option: one '(X)' word
    ("After looking carefully my conclusion is that the picture shows a blue car on a road", "B"),  # option text
    ("A cat", "A"), ("E", "E"), ("no idea", None), ("B.", "B"),
])
def test_lmms_eval_mmbench_letter(answer, letter):
    """lmms-eval tasks/mmbench/mmbench_evals.py MMBench_Evaluator.can_infer (prefetch) and, for what it
    cannot tell, tasks/_task_utils/mcq_extract.py extract_mcq_answer (mmbench_en_dev_static)."""
    from allava.evaluate.metrics.choice import lmms_eval_mmbench_letter

    assert lmms_eval_mmbench_letter(answer, OPTS) == letter


def test_mmbench_lmms_eval_convention_column(tmp_path):
    """Circular scoring under each rule set on one fixture (question 0: 4 options, 4 rotations; question 1:
    2 options, 2 rotations). Question 0 answered by a long sentence naming the right option's text,
    question 1 by 'The answer is X because Y is wrong' (X right). Current VLMEvalKit: 0 refused (too
    long), 1 right -> 50; 2024 rules: 0 right, 1 two letters -> 50; 2025-08: 0; lmms-eval static: 0 right
    (option text, no length guard), 1 wrong (the later 'phrase' letter Y) -> 50."""
    from tests.test_eval_benchmarks import mmbench_tsv

    bench = get_benchmark("mmbench")
    samples = bench.load(mmbench_tsv(tmp_path / "m.tsv"))
    answers = {}
    for s in samples:
        if s.meta["group"] == 0:
            answers[s.question_id] = f"After looking at it for a long while I am quite sure it is {s.meta['options'][s.target]}"
        else:
            other = next(k for k in s.meta["options"] if k != s.target)
            answers[s.question_id] = f"The answer is {s.target} because {other} is wrong"
    m = bench.score(samples, answers)
    assert m["headline"]["MMBench"] == 50.0
    assert m["conventions"] == {"vlmevalkit-2024": {"MMBench": 50.0}, "vlmevalkit-2025-08": {"MMBench": 0.0},
                                "lmms-eval": {"MMBench": 50.0}}
    assert m["per_category"] == {"colour": 0.0, "count": 100.0}
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.json").write_text(json.dumps({"benchmark": "mmbench", "model": "/m/x", **m}))
    assert "MMBench (lmms-eval)" in cmd_report([tmp_path / "r"], conventions=True)


# --- every benchmark the two toolkits cover: their answers score as they are ----------------------
def lmms_rows(docs_and_answers):
    """lmms-eval loggers/evaluation_tracker.py: one line per doc (images left out), filtered_resps a list."""
    return [{"doc_id": i, "doc": d, "target": "", "filtered_resps": [a]} for i, (d, a) in enumerate(docs_and_answers)]


def test_lmms_eval_samples_for_pope_textvqa_mmbench_seed_mmvet(tmp_path):
    """lmms-eval's logged docs as its tasks define them: pope (question_id, category: per-split ids),
    textvqa_val (question_id), mmbench_en_dev (index, rotated copies at index + k * 1e6), seedbench
    (question_id), mmvet (question_id v1_<n>); each maps onto our question ids."""
    from allava.evaluate.answers import read_answers
    from tests.test_eval_benchmarks import mmbench_tsv

    def matched(name, data, docs):
        bench = get_benchmark(name)
        samples = bench.load(data)
        rows, fmt = read_answers(jsonl(tmp_path / f"samples_{name}.jsonl", lmms_rows(docs)))
        assert fmt == "lmms-eval"
        return bench.match(samples, rows)

    pope = pope_fixture(tmp_path / "pope", with_llava_questions=False)
    assert matched("pope", pope, [({"question_id": "2", "category": "random", "question": "Is there a dog?"}, "No")]) \
        == {"random/2": "No"}
    (tmp_path / "tv").mkdir()
    (tmp_path / "tv" / "TextVQA_0.5.1_val.json").write_text(json.dumps({"data": [
        {"question_id": 7, "question": "what brand?", "image_id": "im1", "answers": ["kodak"] * 10}]}))
    assert matched("textvqa-noocr", tmp_path / "tv", [({"question_id": 7, "question": "what brand?"}, "kodak")]) \
        == {"7": "kodak"}
    tsv = mmbench_tsv(tmp_path / "MMBench_DEV_EN.tsv")
    assert matched("mmbench", tsv, [({"index": 1000000, "question": "What colour?"}, "D")]) == {"1000000": "D"}
    png(tmp_path / "seed" / "SEED-Bench-image" / "a.jpg")
    (tmp_path / "seed" / "SEED-Bench.json").write_text(json.dumps({"question_type": {"x": 1}, "questions": [
        {"question_id": "101", "question": "Which?", "choice_a": "cat", "choice_b": "dog", "choice_c": "cow",
         "choice_d": "hen", "answer": "B", "data_id": "a.jpg", "data_type": "image", "question_type_id": 1}]}))
    assert matched("seed", tmp_path / "seed", [({"question_id": "101", "question": "Which?"}, "B")]) == {"101": "B"}
    (tmp_path / "mv").mkdir()
    (tmp_path / "mv" / "mm-vet.json").write_text(json.dumps({
        "v1_0": {"imagename": "v1_0.png", "capability": ["ocr"], "question": "x?", "answer": "3"}}))
    assert matched("mm-vet", tmp_path / "mv", [({"question_id": "v1_0", "question": "x?"}, "3")]) == {"v1_0": "3"}


def test_vlmevalkit_predictions_for_mme_seed_mmvet(tmp_path):
    """VLMEvalKit prediction TSVs: MME (category + image_path, two rows an image), SEEDBench_IMG (index a
    row counter here, so matched by question and options, never by index), MMVet (index n = v1_<n>)."""
    from allava.evaluate.answers import read_answers

    png(tmp_path / "mme" / "color" / "x.jpg")
    (tmp_path / "mme" / "color" / "x.txt").write_text("Is it red? Please answer yes or no.\tYes\n"
                                                      "Is it blue? Please answer yes or no.\tNo\n")
    (tmp_path / "MME.tsv").write_text("index\tquestion\tanswer\tcategory\timage_path\tprediction\n"
                                      "0\tIs it red? Please answer yes or no.\tYes\tcolor\tcolor/x.jpg\tYes\n"
                                      "1\tIs it blue? Please answer yes or no.\tNo\tcolor\tcolor/x.jpg\tYes\n")
    mme = get_benchmark("mme")
    got = mme.match(mme.load(tmp_path / "mme"), read_answers(tmp_path / "MME.tsv")[0])
    assert got == {"color/x.jpg/0": "Yes", "color/x.jpg/1": "Yes"}

    png(tmp_path / "seed" / "SEED-Bench-image" / "a.jpg")
    q = {"choice_a": "cat", "choice_b": "dog", "choice_c": "cow", "choice_d": "hen", "answer": "B", "data_id": "a.jpg",
         "data_type": "image", "question_type_id": 1}
    (tmp_path / "seed" / "SEED-Bench.json").write_text(json.dumps({"question_type": {"x": 1}, "questions": [
        {**q, "question_id": "0", "question": "Which pet?"}, {**q, "question_id": "1", "question": "Which farm animal?"}]}))
    (tmp_path / "SEEDBench_IMG.tsv").write_text("index\tquestion\tA\tB\tC\tD\tanswer\tprediction\n"
                                                "0\tWhich farm animal?\tcat\tdog\tcow\then\tB\tC\n")
    seed = get_benchmark("seed")
    assert seed.match(seed.load(tmp_path / "seed"), read_answers(tmp_path / "SEEDBench_IMG.tsv")[0]) == {"1": "C"}

    (tmp_path / "mv").mkdir()
    (tmp_path / "mv" / "mm-vet.json").write_text(json.dumps({
        "v1_0": {"imagename": "v1_0.png", "capability": ["ocr"], "question": "x?", "answer": "3"}}))
    (tmp_path / "MMVet.tsv").write_text("index\tquestion\tanswer\tcategory\tprediction\n0\tx?\t3\tocr\t3\n")
    mv = get_benchmark("mm-vet")
    assert mv.match(mv.load(tmp_path / "mv"), read_answers(tmp_path / "MMVet.tsv")[0]) == {"v1_0": "3"}


# --- VQAv2 (scripts/v1_5/eval/vqav2.sh) ------------------------------------------------------------
def vqav2_fixture(root, answers_by_q):
    root.mkdir(parents=True, exist_ok=True)
    qs = [{"image_id": 1, "question": q, "question_id": 1000 + i} for i, q in enumerate(answers_by_q)]
    (root / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps(
        {"data_subtype": "val2014", "questions": qs}))
    (root / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": [
        {"question_id": 1000 + i, "image_id": 1, "answer_type": t,
         "answers": [{"answer": a, "answer_id": j + 1} for j, a in enumerate(ans)]}
        for i, (q, (t, ans)) in enumerate(answers_by_q.items())]}))
    return root


def test_vqav2_official_accuracy_and_llava_question_file(tmp_path, capsys):
    """VQA challenge vqaEval.py VQAEval.evaluate on answers put through m4c_evaluator.py's
    EvalAIAnswerProcessor (LLaVA convert_vqav2_for_submission.py). Q1: 10 x 'yes', answer 'Yes.' -> 1.
    Q2: 4 x '2', 6 x '3', answer 'two' -> '2': 4 leave-one-out sets drop a '2' (3 others agree: 1),
    6 keep all four (1) -> 1.0. Q3: 2 x 'red', 8 x 'blue', answer 'red': sets dropping a 'red' see 1 (1/3),
    the 8 others see 2 (2/3) -> (2/3 + 16/3) / 10 = 0.6. Mean (1 + 1 + 0.6) / 3 = 86.67."""
    root = vqav2_fixture(tmp_path / "vqav2", {
        "Is it sunny?": ("yes/no", ["yes"] * 10), "How many?": ("number", ["2"] * 4 + ["3"] * 6),
        "What colour?": ("other", ["red"] * 2 + ["blue"] * 8)})
    bench = get_benchmark("vqav2")
    samples = bench.load(root)
    assert samples[0].image == root / "COCO_val2014_000000000001.jpg"
    m = bench.score(samples, {"1000": "Yes.", "1001": "two", "1002": "red"})
    assert m["accuracy"] == 86.67 and m["per_answer_type"] == {"number": 100.0, "other": 60.0, "yes/no": 100.0}
    assert bench.score(samples, {"1000": "Yes."})["accuracy"] == 33.33  # missing answers are '' (wrong)

    jsonl(root / "llava_vqav2_mscoco_val2014.jsonl", [
        {"question_id": 1001, "image": "COCO_val2014_000000000001.jpg", "category": "default",
         "text": f"How many?\n{SHORT}"}])
    preds = jsonl(tmp_path / "merge.jsonl", [{"question_id": 1001, "prompt": "p", "text": "Two"}])
    assert main(["score", "--benchmark", "vqav2", "--data", str(root / "llava_vqav2_mscoco_val2014.jsonl"),
                 "--predictions", str(preds)]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 100.0


def test_vqav2_test_dev_question_file_is_answered_not_scored(tmp_path):
    """LLaVA's llava_vqav2_mscoco_test-dev2015.jsonl with no annotations (test-dev's are not public):
    questions load with LLaVA's prompts and test2015/ images; the score says why there is none."""
    jsonl(tmp_path / "llava_vqav2_mscoco_test-dev2015.jsonl", [
        {"question_id": 262144000, "image": "COCO_test2015_000000262144.jpg", "category": "default",
         "text": f"Is the ball flying towards the batter?\n{SHORT}"}])
    bench = get_benchmark("vqav2")
    samples = bench.load(tmp_path / "llava_vqav2_mscoco_test-dev2015.jsonl")
    assert [(s.question_id, s.image) for s in samples] == [("262144000", tmp_path / "COCO_test2015_000000262144.jpg")]
    m = bench.score(samples, {"262144000": "yes"})
    assert m["headline"] == {} and "convert_vqav2_for_submission.py" in m["note"]
    from allava.evaluate.cli import headline_line

    assert "vqav2: not scored: no public answers" in headline_line({"benchmark": "vqav2", **m}, tmp_path / "m.json")


def test_vqav2_lmms_eval_convention(tmp_path):
    """lmms-eval lmms_eval/tasks/vqav2/utils.py vqav2_process_results: process_punctuation +
    process_digit_article on the raw prediction and on every gold answer; vqaEval.py VQAEval.evaluate
    processes gold answers by punctuation only, and only when they disagree (after LLaVA's
    EvalAIAnswerProcessor on the prediction). Q1: 3 x 'two', 7 x '3', answer '2': official 0 ('two'
    stays); lmms-eval reads 3 x '2': sets dropping a '2' see 2 (2/3), the 7 others 3 (1) -> 0.9. Q2:
    10 x "man's", answer "man's": LLaVA's word_tokenize makes "man 's", gold untouched -> 0; lmms-eval 1.
    Headline 0.0, lmms-eval (0.9 + 1) / 2 = 95.0; report --conventions shows it as a column."""
    root = vqav2_fixture(tmp_path / "vqav2", {"How many?": ("number", ["two"] * 3 + ["3"] * 7),
                                              "Whose?": ("other", ["man's"] * 10)})
    bench = get_benchmark("vqav2")
    m = bench.score(bench.load(root), {"1000": "2", "1001": "man's"})
    assert m["headline"] == {"VQAv2": 0.0} and m["conventions"] == {"lmms-eval": {"VQAv2": 95.0}}
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.json").write_text(json.dumps({"benchmark": "vqav2", "model": "/m/x", **m}))
    assert "| x | 0.0 | 95.0 |" in cmd_report([tmp_path / "r"], conventions=True)


# --- VizWiz (scripts/v1_5/eval/vizwiz.sh) ----------------------------------------------------------
def test_vizwiz_test_is_answered_and_written_for_evalai_not_scored(tmp_path, capsys):
    """LLaVA scripts/convert_vizwiz_for_submission.py: for every line of llava_test.jsonl in order,
    {image, answer: EvalAIAnswerProcessor(text)} ('Unanswerable.' -> 'unanswerable', 'Two dogs' -> '2 dogs',
    "It's red, I think" -> "it 's red i think"); it asserts every question has an answer, so with one
    missing no upload file is written and the note says why. Test answers are not public: no headline."""
    unans = "When the provided information is insufficient, respond with 'Unanswerable'."
    qfile = jsonl(tmp_path / "llava_test.jsonl", [
        {"question_id": i, "image": f"VizWiz_test_{i:08d}.jpg", "category": "default",
         "text": f"{q}\n{unans}\n{SHORT}"} for i, q in enumerate(("What is this?", "How many?", "What colour?"))])
    bench = get_benchmark("vizwiz")
    samples = bench.load(tmp_path)
    assert samples[1].prompt == f"How many?\n{unans}\n{SHORT}"
    assert samples[1].image == tmp_path / "VizWiz_test_00000001.jpg"  # no test/ folder here: beside the file
    preds = jsonl(tmp_path / "answers.jsonl", [{"question_id": i, "prompt": "p", "text": t} for i, t in
                                               enumerate(("Unanswerable.", "Two dogs", "It's red, I think"))])
    assert main(["score", "--benchmark", "vizwiz", "--data", str(qfile), "--predictions", str(preds)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["headline"] == {} and "EvalAI" in out["note"] and out["n_missing"] == 0
    assert json.loads((tmp_path / "answers.vizwiz_submission.json").read_text()) == [
        {"image": "VizWiz_test_00000000.jpg", "answer": "unanswerable"},
        {"image": "VizWiz_test_00000001.jpg", "answer": "2 dogs"},
        {"image": "VizWiz_test_00000002.jpg", "answer": "it 's red i think"}]
    (tmp_path / "answers.vizwiz_submission.json").unlink()
    jsonl(preds, [{"question_id": 0, "prompt": "p", "text": "yes"}])
    assert main(["score", "--benchmark", "vizwiz", "--data", str(qfile), "--predictions", str(preds)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "submission_file" not in out and "2 of 3 questions unanswered" in out["note"]
    assert not (tmp_path / "answers.vizwiz_submission.json").exists()
