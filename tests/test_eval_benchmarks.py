"""Each benchmark reads its released file format (tiny fixtures written here) and scores
hand-written answers with the anchor's rules; the `score` and `report` verbs work from files."""
from __future__ import annotations

import argparse
import base64
import io
import json
import pickle
from pathlib import Path

import pytest
from PIL import Image

from allava.evaluate.benchmarks import BenchmarkError, get_benchmark
from allava.evaluate.cli import add_eval_parser, cmd_report, main, run_eval


def png(path: Path | None = None, colour=(200, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, "PNG")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())
    return buf.getvalue()


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def answers_for(samples, fn) -> dict[str, str]:
    return {s.question_id: fn(s) for s in samples}


# --- MMBench --------------------------------------------------------------------------------
def mmbench_tsv(path: Path) -> Path:
    img = base64.b64encode(png()).decode()
    header = "index\tquestion\thint\tA\tB\tC\tD\tanswer\tcategory\tl2-category\timage\tsource\n"
    rows = ["0\tWhat colour?\tnan\tred\tblue\tgreen\tyellow\tA\tcolour\tperception\t" + img + "\tx\n",
            "1\tHow many?\tCount carefully.\tone\ttwo\t\t\tB\tcount\tperception\t" + img + "\tx\n"]
    path.write_text(header + "".join(rows))
    return path


def test_mmbench_rotations_and_circular_scoring(tmp_path):
    bench = get_benchmark("mmbench")
    samples = bench.load(mmbench_tsv(tmp_path / "MMBench_DEV_EN.tsv"))
    assert len(samples) == 4 + 2                       # one copy per option (2-option question has 2)
    by_id = {s.question_id: s for s in samples}
    assert by_id["0"].target == "A" and by_id["1000000"].target == "D" and by_id["3000000"].target == "B"
    assert by_id["1000000"].prompt.startswith("What colour?\nA. blue\nB. green\nC. yellow\nD. red\n")
    assert by_id["1"].prompt.startswith("Count carefully.\nHow many?\nA. one\nB. two\n")
    assert by_id["1"].prompt.endswith("Answer with the option's letter from the given choices directly.")
    assert Image.open(io.BytesIO(by_id["1"].image)).size == (16, 16)

    right = answers_for(samples, lambda s: f"{s.target}.")
    m = bench.score(samples, right)
    assert m["circular_accuracy"] == 100.0 and m["n_questions"] == 2

    one_wrong = dict(right, **{"2000000": "A"})        # question 0 fails one rotation only
    m = bench.score(samples, one_wrong)
    assert m["circular_accuracy"] == 50.0 and m["single_pass_accuracy"] == 100.0
    assert m["per_category"] == {"colour": 0.0, "count": 100.0}
    by_text = answers_for(samples, lambda s: s.meta["options"][s.target])  # option text, no letter
    assert bench.score(samples, by_text)["circular_accuracy"] == 100.0
    m = bench.score(samples, dict(right, **{"0": "no idea"}))
    assert m["extraction_failures"] == 1 and m["circular_accuracy"] == 50.0
    assert "CircularEval" in m["convention"]


def test_mmbench_tsv_with_rotated_copies_is_grouped_by_index(tmp_path):
    img = base64.b64encode(png()).decode()
    rows = ["index\tquestion\thint\tA\tB\tanswer\tcategory\tl2-category\timage\n",
            f"5\tQ?\tnan\tx\ty\tA\tc\tl\t{img}\n", "1000005\tQ?\tnan\ty\tx\tB\tc\tl\t5\n"]
    (tmp_path / "legacy.tsv").write_text("".join(rows))
    bench = get_benchmark("mmbench")
    samples = bench.load(tmp_path / "legacy.tsv")
    assert [s.question_id for s in samples] == ["5", "1000005"]
    assert samples[1].image == samples[0].image        # the copy borrows the original's image
    assert bench.score(samples, {"5": "A", "1000005": "B"})["circular_accuracy"] == 100.0
    assert bench.score(samples, {"5": "A", "1000005": "A"})["circular_accuracy"] == 0.0


def test_mmbench_rejects_a_non_mmbench_tsv(tmp_path):
    (tmp_path / "x.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(BenchmarkError, match="expected an MMBench TSV"):
        get_benchmark("mmbench").load(tmp_path / "x.tsv")


# --- MME --------------------------------------------------------------------------------------
def test_mme_pairs_questions_per_image_into_acc_plus(tmp_path):
    for sub, names in (("existence", ["1.jpg", "2.jpg"]), ("code_reasoning", ["c.png"])):
        (tmp_path / sub).mkdir()
        for n in names:
            png(tmp_path / sub / n)
            (tmp_path / sub / (Path(n).stem + ".txt")).write_text(
                f"Is there a {n}? Please answer yes or no.\tYes\nIs there no {n}? Please answer yes or no.\tNo\n")
    bench = get_benchmark("mme")
    samples = bench.load(tmp_path)
    assert len(samples) == 6 and samples[0].prompt.endswith("yes or no.\nAnswer the question using a single word or phrase.")
    ans = answers_for(samples, lambda s: s.target.capitalize())
    ans["existence/2.jpg/1"] = "Yes"                    # image 2: one of its two questions wrong
    m = bench.score(samples, ans)
    ex = m["subtasks"]["existence"]
    assert ex["acc"] == 75.0 and ex["acc_plus"] == 50.0 and ex["score"] == 125.0
    assert m["perception"] == 125.0 and m["cognition"] == 200.0 and m["headline"] == {"MME-P": 125.0, "MME-C": 200.0}


def test_mme_eval_tool_layout(tmp_path):
    png(tmp_path / "OCR" / "images" / "a.jpg")
    (tmp_path / "OCR.txt").write_text("a.jpg\tIs it A?\tYes\na.jpg\tIs it B?\tNo\n")
    samples = get_benchmark("mme").load(tmp_path)
    assert [s.target for s in samples] == ["yes", "no"]


# --- POPE -------------------------------------------------------------------------------------
def test_pope_per_split_metrics_and_mean_f1(tmp_path):
    png(tmp_path / "val2014" / "img.jpg")
    for split in ("adversarial", "popular", "random"):
        jsonl(tmp_path / "coco" / f"coco_pope_{split}.json",
              [{"question_id": i, "image": "img.jpg", "text": f"Is there a thing {i} in the image?",
                "label": lab} for i, lab in enumerate(["yes", "yes", "no", "no"], 1)])
    bench = get_benchmark("pope")
    samples = bench.load(tmp_path)
    assert len(samples) == 12 and samples[0].question_id == "adversarial/1"
    ans = {}
    for s in samples:
        i = int(s.question_id.split("/")[1])
        ans[s.question_id] = {1: "Yes", 2: "No, there is not.", 3: "No", 4: "Yes, there is."}[i]
        if s.meta["split"] == "random":
            ans[s.question_id] = {1: "Yes", 2: "Yes", 3: "No", 4: "No"}[i]
    m = bench.score(samples, ans)
    adv = m["splits"]["adversarial"]
    assert (adv["precision"], adv["recall"], adv["f1"], adv["accuracy"], adv["yes_ratio"]) == (50.0, 50.0, 50.0, 50.0, 50.0)
    assert m["splits"]["random"]["f1"] == 100.0
    assert m["mean_f1"] == pytest.approx((50 + 50 + 100) / 3, abs=0.01)
    assert m["pooled_f1"] == pytest.approx(66.67, abs=0.01)
    assert "mean F1" in m["convention"]


# --- GQA / TextVQA ----------------------------------------------------------------------------
def test_gqa_exact_match(tmp_path):
    (tmp_path / "testdev_balanced_questions.json").write_text(json.dumps({
        "q1": {"imageId": "n1", "question": "What is it?", "answer": "table"},
        "q2": {"imageId": "n1", "question": "Is it red?", "answer": "no"}}))
    bench = get_benchmark("gqa")
    samples = bench.load(tmp_path)
    assert samples[0].image == tmp_path / "images" / "n1.jpg"
    assert bench.score(samples, {"q1": "Table.", "q2": "No, it is not"})["accuracy"] == 50.0


def test_textvqa_ocr_tokens_and_accuracy(tmp_path):
    (tmp_path / "TextVQA_0.5.1_val.json").write_text(json.dumps({"data": [
        {"question_id": 7, "question": "what brand?", "image_id": "im1", "answers": ["Dakota"] * 3 + ["kodak"] * 7},
        {"question_id": 8, "question": "what number?", "image_id": "im1", "answers": ["two"] * 10}]}))
    (tmp_path / "TextVQA_Rosetta_OCR_v0.2_val.json").write_text(json.dumps({"data": [
        {"image_id": "im1", "ocr_tokens": ["dakota", "digital"]}]}))
    with_ocr, no_ocr = get_benchmark("textvqa"), get_benchmark("textvqa-noocr")
    samples = with_ocr.load(tmp_path)
    assert samples[0].prompt == ("what brand?\nReference OCR token: dakota, digital\n"
                                 "Answer the question using a single word or phrase.")
    assert "Reference OCR" not in no_ocr.load(tmp_path)[0].prompt
    m = with_ocr.score(samples, {"7": "dakota", "8": "2"})
    assert m["accuracy"] == pytest.approx(95.0) and m["ocr_tokens"] == "TextVQA_Rosetta_OCR_v0.2_val.json"
    assert "without OCR" in no_ocr.score(no_ocr.load(tmp_path), {"7": "x"})["convention"]


# --- SEED / ScienceQA / MMMU / EMT ------------------------------------------------------------
def test_seed_image_split_only(tmp_path):
    png(tmp_path / "SEED-Bench-image" / "a.jpg")
    q = {"answer": "B", "choice_a": "cat", "choice_b": "dog", "choice_c": "cow", "choice_d": "hen", "data_id": "a.jpg",
         "question": "Which animal?", "question_type_id": 1}
    (tmp_path / "SEED-Bench.json").write_text(json.dumps({"question_type": {"Scene Understanding": 1}, "questions": [
        {**q, "question_id": "1", "data_type": "image"}, {**q, "question_id": "2", "data_type": "video"}]}))
    bench = get_benchmark("seed")
    samples = bench.load(tmp_path)
    assert [s.question_id for s in samples] == ["1"]
    assert samples[0].prompt == ("Which animal?\nA. cat\nB. dog\nC. cow\nD. hen\n"
                                 "Answer with the option's letter from the given choices directly.")
    assert bench.score(samples, {"1": "B"})["per_dimension"] == {"Scene Understanding": 100.0}


def test_scienceqa_img_split_prompt_and_parsing(tmp_path):
    png(tmp_path / "test" / "10" / "image.png")
    (tmp_path / "problems.json").write_text(json.dumps({
        "10": {"question": "Which is a mammal?", "choices": ["frog", "whale"], "answer": 1, "hint": "",
               "image": "image.png", "subject": "natural science"},
        "11": {"question": "2+2?", "choices": ["4", "5"], "answer": 0, "hint": "Math.", "image": None,
               "subject": "language science"}}))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"test": ["10", "11"], "train": []}))
    img_bench = get_benchmark("scienceqa-img")
    samples = img_bench.load(tmp_path)
    assert [s.question_id for s in samples] == ["10"]
    assert samples[0].prompt == ("Context: N/A\nWhich is a mammal?\nA. frog\nB. whale\n"
                                 "Answer with the option's letter from the given choices directly.")
    assert img_bench.score(samples, {"10": "The answer is B."})["accuracy"] == 100.0
    m = img_bench.score(samples, {"10": "whale"})
    assert m["accuracy"] == 0.0 and m["unparsed_answers"] == 1
    assert len(get_benchmark("scienceqa").load(tmp_path)) == 2


def test_mmmu_json_export(tmp_path):
    png(tmp_path / "img1.png")
    rows = [{"id": "validation_Art_1", "question": "<image 1> Which style?", "options": "['Baroque', 'Cubism']",
             "answer": "B", "question_type": "multiple-choice", "image_1": "img1.png"},
            {"id": "validation_Math_2", "question": "What is 2/3 as a decimal?", "options": "[]",
             "answer": "0.67", "question_type": "open", "image_1": None}]
    jsonl(tmp_path / "validation.jsonl", rows)
    bench = get_benchmark("mmmu")
    samples = bench.load(tmp_path)
    assert samples[0].prompt == ("<image 1> Which style?\n(A) Baroque\n(B) Cubism\n\n"
                                 "Answer with the option's letter from the given choices directly.")
    assert samples[0].image == tmp_path / "img1.png" and samples[1].image is None
    m = bench.score(samples, {"validation_Art_1": "(B)", "validation_Math_2": "The answer is 0.6667"})
    assert m["accuracy"] == 100.0 and m["per_subject"] == {"Art": 100.0, "Math": 100.0}


def test_mmmu_released_parquet(tmp_path):
    """The released layout: <Subject>/validation-*.parquet with the image as {"bytes", "path"}."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 0, 255)).save(buf, format="PNG")
    (tmp_path / "Art").mkdir()
    rows = [{"id": "validation_Art_1", "question": "<image 1> Which colour?", "options": "['red', 'blue']",
             "answer": "B", "question_type": "multiple-choice", "image_1": {"bytes": buf.getvalue(), "path": "a.png"}}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "Art" / "validation-00000-of-00001.parquet")
    samples = get_benchmark("mmmu").load(tmp_path)
    assert [s.question_id for s in samples] == ["validation_Art_1"]
    assert samples[0].image == buf.getvalue()
    assert get_benchmark("mmmu").score(samples, {"validation_Art_1": "B"})["accuracy"] == 100.0


def test_emt_cifar10_python_batch(tmp_path):
    import numpy as np

    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    data = np.zeros((3, 3072), dtype=np.uint8)
    data[:, :1024] = 255                                 # red channel first: channel-major rows
    with open(root / "test_batch", "wb") as fh:
        pickle.dump({b"data": data, b"labels": [0, 1, 3]}, fh)
    bench = get_benchmark("emt-cifar10")
    samples = bench.load(tmp_path)
    assert samples[0].image.getpixel((0, 0)) == (255, 0, 0)
    assert "airplane, automobile, bird" in samples[0].prompt
    m = bench.score(samples, {"0": "An aeroplane.", "1": "car or truck", "2": "cats"})
    assert m["accuracy"] == pytest.approx(66.67, abs=0.01) and m["no_or_several_classes_named"] == 1


def test_synthetic_bench_matches_quickstart_scoring(tmp_path):
    png(tmp_path / "images" / "0.png")
    jsonl(tmp_path / "bench.jsonl", [{"id": "b0", "image": "0.png", "question": "How many?", "answer": "two",
                                      "ability": "count"}])
    (tmp_path / "bench_meta.json").write_text(json.dumps({"abilities": {"count": {"chance": 0.25}}}))
    bench = get_benchmark("synthetic")
    samples = bench.load(tmp_path)
    m = bench.score(samples, {"b0": "2."})
    assert m["overall"] == 1.0 and m["abilities"]["count"] == {"accuracy": 1.0, "n": 1, "chance": 0.25}


# --- judge-scored benchmarks, with a scripted judge --------------------------------------------
class ScriptedJudge:
    model = "scripted"

    def __init__(self, replies):
        self.replies = replies
        self.prompts = []

    def ask(self, prompts, max_tokens=1024, temperature=None):
        self.prompts += prompts
        self.temperatures = [*getattr(self, "temperatures", []), temperature]
        return [self.replies(p) for p in prompts]


def test_llava_bench_relative_score_counts_failures(tmp_path):
    png(tmp_path / "images" / "a.jpg")
    jsonl(tmp_path / "questions.jsonl", [{"question_id": i, "image": "a.jpg", "text": f"q{i}", "category": c}
                                         for i, c in enumerate(["conv", "detail", "complex"])])
    jsonl(tmp_path / "context.jsonl", [{"id": "a", "image": "a.jpg", "caption": "A red square."}])
    jsonl(tmp_path / "answers_gpt4.jsonl", [{"question_id": i, "text": f"ref{i}"} for i in range(3)])
    bench = get_benchmark("llava-bench")
    samples = bench.load(tmp_path)
    replies = {"q0": "8 6\nok", "q1": "10, 5\nok", "q2": "I cannot rate this."}
    judge = ScriptedJudge(lambda p: next(v for k, v in replies.items() if f"[Question]\n{k}\n" in p[1]["content"]))
    m = bench.score(samples, {"0": "a", "1": "b", "2": "c"}, judge)
    assert m["judge_failures"] == 1
    assert m["per_category"]["conv"]["relative"] == 75.0 and m["per_category"]["detail"]["relative"] == 50.0
    assert m["relative_score"] == pytest.approx(100 * 5.5 / 9, abs=0.1)
    assert "[Context]\nA red square." in judge.prompts[0][1]["content"]


def test_mmvet_grades_per_capability(tmp_path):
    (tmp_path / "mm-vet.json").write_text(json.dumps({
        "v1_0": {"imagename": "v1_0.png", "capability": ["ocr", "math"], "question": "x?", "answer": "-1<AND>-5"},
        "v1_1": {"imagename": "v1_1.png", "capability": ["ocr"], "question": "y?", "answer": "cat"}}))
    bench = get_benchmark("mm-vet")
    samples = bench.load(tmp_path)
    judge = ScriptedJudge(lambda p: "0.5" if "\nx? | -1 <AND> -5 | x = -1 | " in p[0]["content"] else "great")
    m = bench.score(samples, {"v1_0": "x = -1", "v1_1": "cat"}, judge)
    assert m["total"] == 25.0 and m["per_capability"] == {"math": 50.0, "ocr": 25.0} and m["judge_failures"] == 1
    assert judge.temperatures == [None, 0.5, 1.0, 1.5, 2.0]  # an unparsable grade is asked 5 times in all

    replies = iter(["0.5", "great", "1.0"])  # the second question's grade parses on its first retry
    judge = ScriptedJudge(lambda p: next(replies))
    m = bench.score(samples, {"v1_0": "x = -1", "v1_1": "cat"}, judge)
    assert m["total"] == 75.0 and m["judge_failures"] == 0 and judge.temperatures == [None, 0.5]


def test_vicuna80_both_orders_and_win_rate(tmp_path):
    jsonl(tmp_path / "question.jsonl", [{"question_id": i, "text": f"q{i}", "category": "generic"} for i in (1, 2)])
    jsonl(tmp_path / "anchor.jsonl", [{"question_id": i, "text": "anchor"} for i in (1, 2)])
    bench = get_benchmark("vicuna-80")
    samples = bench.load(tmp_path)

    def judge(p):  # prefers the model on q1 in both orders; always says Answer1 on q2 (position bias)
        c = p[0]["content"]
        if "q1" in c:
            return "Answer1" if "Answer1:\nMODEL" in c else "Answer2"
        return "Answer1" if "q2" in c else "??"
    j = ScriptedJudge(judge)
    m = bench.score(samples, {"1": "MODEL", "2": "MODEL"}, j)
    assert len(j.prompts) == 4 and "You are a fair judge." in j.prompts[0][0]["content"]
    assert (m["wins"], m["losses"], m["judge_failures"]) == (3, 1, 0)
    assert m["win_rate"] == 75.0 and m["consistent_win_rate"] == 50.0


def test_judge_benchmark_without_judge_is_a_config_error(tmp_path):
    from allava.config import ConfigError

    with pytest.raises(ConfigError, match="needs a judge"):
        get_benchmark("mm-vet").score([], {}, None)


# --- CLI: score, report, user errors ----------------------------------------------------------
def parse(argv):
    p = argparse.ArgumentParser()
    add_eval_parser(p)
    return p.parse_args(argv)


def test_score_verb_reads_llava_mmbench_rounds(tmp_path, capsys):
    tsv = mmbench_tsv(tmp_path / "mmb.tsv")
    rows = [{"question_id": 0, "round_id": k, "text": "ABCD"[(0 - k) % 4]} for k in range(4)]
    rows += [{"question_id": 1, "round_id": k, "text": "AB"[(1 - k) % 2]} for k in range(2)]
    preds = jsonl(tmp_path / "answers.jsonl", rows)
    assert run_eval(parse(["score", "--benchmark", "mmbench", "--data", str(tsv), "--predictions", str(preds)])) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["circular_accuracy"] == 100.0 and out["benchmark"] == "mmbench"


def test_report_table_across_runs(tmp_path):
    for name, bench, head in (("a", "gqa", {"GQA": 61.25}), ("b", "mme", {"MME-P": 1500.5, "MME-C": 300.0})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(
            {"benchmark": bench, "model": "/ckpt/model-x", "headline": head, "convention": f"{bench} rule"}))
    table = cmd_report([tmp_path / "a", tmp_path / "b"])
    assert "| model | GQA | MME-P | MME-C |" in table
    assert "| model-x | 61.2 | 1500.5 | 300.0 |" in table.replace("61.3", "61.2")
    assert "- **mme**: mme rule" in table


@pytest.mark.parametrize("argv, message", [
    (["score", "--benchmark", "nope", "--data", "x", "--predictions", "p"], "unknown benchmark 'nope'"),
    (["score", "--benchmark", "gqa", "--data", "/no/such/dir", "--predictions", "p"], "not found"),
    (["report", "/no/such/run"], "no metrics.json"),
])
def test_user_mistakes_are_one_line_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_score_with_unmatched_predictions_is_an_error(tmp_path, capsys):
    (tmp_path / "testdev_balanced_questions.json").write_text(json.dumps({"q1": {"imageId": "n", "question": "?",
                                                                                  "answer": "a"}}))
    preds = jsonl(tmp_path / "p.jsonl", [{"question_id": "zzz", "text": "a"}])
    assert main(["score", "--benchmark", "gqa", "--data", str(tmp_path), "--predictions", str(preds)]) == 2
    assert "no question_id matches" in capsys.readouterr().err


def test_mmbench_limit_keeps_whole_rotation_groups(tmp_path):
    bench = get_benchmark("mmbench")
    samples = bench.limit(bench.load(mmbench_tsv(tmp_path / "m.tsv")), 1)
    assert [s.question_id for s in samples] == ["0", "1000000", "2000000", "3000000"]


def test_wrong_format_files_are_one_line_errors(tmp_path, capsys):
    jsonl(tmp_path / "questions.jsonl", [{"id": 1}])          # not LLaVA-Bench's fields
    jsonl(tmp_path / "context.jsonl", [])
    jsonl(tmp_path / "answers_gpt4.jsonl", [])
    preds = jsonl(tmp_path / "p.jsonl", [{"question_id": 1, "text": "x"}])
    assert main(["score", "--benchmark", "llava-bench", "--data", str(tmp_path), "--predictions", str(preds)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not in the released format" in err and len(err.splitlines()) == 1


def test_judge_without_key_or_endpoint_is_a_config_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    jsonl(tmp_path / "question.jsonl", [{"question_id": 1, "text": "q"}])
    jsonl(tmp_path / "anchor.jsonl", [{"question_id": 1, "text": "a"}])
    preds = jsonl(tmp_path / "p.jsonl", [{"question_id": 1, "text": "x"}])
    argv = ["score", "--benchmark", "vicuna-80", "--data", str(tmp_path), "--predictions", str(preds)]
    assert main(argv) == 2 and "--judge-model" in capsys.readouterr().err
    assert main(argv + ["--judge-model", "gpt-4"]) == 2 and "OPENAI_API_KEY" in capsys.readouterr().err


def test_textvqa_prefers_llava_prompts_when_present(tmp_path):
    """LLaVA's llava_textvqa_val_v051_ocr.jsonl keys a line by *image id* (eval_textvqa.py matches on
    image id + question), so the lookup is by (image id, question), not by question id."""
    (tmp_path / "TextVQA_0.5.1_val.json").write_text(json.dumps({"data": [
        {"question_id": 7, "question": "what brand?", "image_id": "im1", "answers": ["kodak"] * 10}]}))
    jsonl(tmp_path / "llava_textvqa_val_v051_ocr.jsonl", [{"question_id": "im1", "image": "im1.jpg", "text":
          "what brand?\nReference OCR token: KODAK\nAnswer the question using a single word or phrase."}])
    bench = get_benchmark("textvqa")
    samples = bench.load(tmp_path)
    assert samples[0].prompt == "what brand?\nReference OCR token: KODAK\nAnswer the question using a single word or phrase."
    assert bench.score(samples, {"7": "Kodak"})["ocr_tokens"] == "llava_textvqa_val_v051_ocr.jsonl"


def test_mmbench_llm_extraction_only_for_rule_failures(tmp_path):
    bench = get_benchmark("mmbench")
    samples = bench.limit(bench.load(mmbench_tsv(tmp_path / "m.tsv")), 1)
    answers = answers_for(samples, lambda s: s.target)
    answers["0"] = "it looks crimson to me"                # no letter, no option text: rules fail
    judge = ScriptedJudge(lambda p: "A")
    m = bench.score(samples, answers, judge)
    assert len(judge.prompts) == 1 and "Answer: it looks crimson to me" in judge.prompts[0][0]["content"]
    assert m["llm_extracted"] == 1 and m["extraction_failures"] == 0 and m["circular_accuracy"] == 100.0


def test_list_names_every_benchmark_with_its_data_and_convention():
    from allava.evaluate.cli import cmd_list

    text = cmd_list()
    for name in ("mmbench", "seed", "mme", "pope", "gqa", "textvqa", "scienceqa-img", "mmmu", "emt-cifar10",
                 "llava-bench (judge)", "mm-vet (judge)", "vicuna-80 (judge)", "synthetic"):
        assert name in text
