"""Issue 12: a new user's mistakes, each made through the CLI, end in one line and the right exit
code, and nothing is dropped or mixed quietly. In-process (`allava.cli.main`) to stay fast."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from allava.cli import main
from tests.test_train import write_recipe


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `allava ARGV`; returns (exit code, stdout, stderr) with SystemExit (argparse) folded in."""
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def one_line(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def recipe(tmp_path, backbones, tiny_data) -> Path:
    return write_recipe(tmp_path / "r.yaml", backbones, tiny_data, tmp_path / "run")


# --- dotted overrides and types (allava.config: train, quickstart, qc) ---------------------------

@pytest.mark.parametrize("override, message", [
    ("stages.stage1.data.9.path=x", "stages.stage1.data: index 9 out of range (2 entries)"),
    ("stages.stage1.data.foo.path=x", "stages.stage1.data: 'foo' is not an index of the list (2 entries"),
    ("stages.stage1.lr.x=1", "stages.stage1.lr: is a value (0.002), not a section; cannot set 'x'"),
    ("stages.stage1.train=projector", "stages.stage1.train: expected a list"),
    ("stages.stage1.train=[projector, vision]", "stages.stage1.train: unknown modules to train ['vision']"),
    ("stages.stage1.gradient_checkpointing=maybe", "stages.stage1.gradient_checkpointing: expected true/false, got 'maybe'"),
    ("stages.stage1.per_device_batch_size=0", "stages.stage1.per_device_batch_size: must be at least 1, got 0"),
    ("stages.stage1.global_batch_size=50", "stages.stage1.global_batch_size: 50 is not a multiple of per_device_batch_size 4"),
    ("stages.stage1.deepspeed=configs/deepspeed/zero1.json", "DeepSpeed is not installed"),
    ("model.template=vicuna", "model.template: unknown template 'vicuna'"),
    ("model.dtype=float33", "model.dtype: 'float33' is not a dtype"),
    ("model.language_model=/no/such/lm", "model.language_model: folder /no/such/lm does not exist"),
])
def test_train_config_mistakes_are_one_line(capsys, recipe, override, message):
    if "deepspeed" in override:
        pytest.importorskip("torch")
        import importlib.util
        if importlib.util.find_spec("deepspeed") is not None:
            pytest.skip("DeepSpeed is installed here")
    code, _, err = cli(capsys, "train", "--config", str(recipe), override)
    assert code == 2 and message in one_line(err) and one_line(err).startswith("allava train: error: ")


def test_quickstart_and_qc_share_the_override_errors(capsys, tmp_path, tiny_data):
    code, _, err = cli(capsys, "quickstart", "--out", str(tmp_path / "q"), "stages.stage1.data.9.path=x")
    assert code == 2 and "stages.stage1.data: index 9 out of range" in one_line(err)
    code, _, err = cli(capsys, "qc", tiny_data["vqa"], "--config", "cheap", "--out", str(tmp_path / "qc"),
                       "--set", "ops.99.min=1")
    assert code == 2 and "ops: index 99 out of range" in one_line(err)
    assert not (tmp_path / "qc").exists()


def test_train_missing_data_file_and_image_folder_fail_before_any_model(capsys, recipe, tmp_path):
    code, _, err = cli(capsys, "train", "--config", str(recipe), f"stages.stage1.data.0.path={tmp_path / 'nope.jsonl'}")
    assert code == 2 and f"stages.stage1.data.0.path: file {tmp_path / 'nope.jsonl'} does not exist" in one_line(err)
    code, _, err = cli(capsys, "train", "--config", str(recipe), f"stages.stage2.data.0.image_folder={tmp_path / 'imgs'}")
    assert code == 2 and "stages.stage2.data.0.image_folder: folder" in one_line(err) and "does not exist" in err
    assert not (tmp_path / "run").exists()


def test_train_refuses_a_source_that_lost_its_images_or_is_an_object(capsys, recipe, tmp_path, tiny_data):
    code, _, err = cli(capsys, "train", "--config", str(recipe), f"stages.stage2.data.0.image_folder={tmp_path}")
    assert code == 2 and "stages.stage2.data.0: none of its 24 images found under" in one_line(err)
    obj = tmp_path / "obj.json"
    obj.write_text(json.dumps({"id": "x", "conversations": []}))
    code, _, err = cli(capsys, "train", "--config", str(recipe), f"stages.stage2.data.1.path={obj}")
    assert code == 2 and "top level is a dict, expected a JSON array" in one_line(err)


def test_train_refuses_a_model_max_length_no_record_fits(capsys, recipe, tmp_path):
    code, _, err = cli(capsys, "train", "--config", str(recipe), "stages.stage1.model_max_length=8")
    assert code == 2 and "none of its first" in one_line(err) and "model_max_length=8" in err
    assert "image block ends at token" in err


def test_configs_by_name_and_version(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "qc", "x.jsonl", "--config", "cheep")
    assert code == 2 and "cheep: no such config file; shipped configs" in one_line(err) and "cheap" in err
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.startswith("allava ")


@pytest.mark.parametrize("verb", ["data", "eval", "synth"])
def test_a_verb_without_its_sub_verb_lists_them(capsys, verb):
    code, _, err = cli(capsys, verb)
    assert code == 2 and f"allava {verb}: choose one of:" in one_line(err)


def test_help_shows_defaults_and_no_progress(capsys):
    code, out, _ = cli(capsys, "train", "-h")
    assert code == 0 and "no progress bars" in out
    code, out, _ = cli(capsys, "chat", "-h")
    assert "(default: 256)" in out


# --- chat and missing model folders --------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(backbones, tmp_path_factory) -> str:
    from allava.model.build import ModelSpec, Recipe, build_model, save_checkpoint

    spec = ModelSpec(vision_tower=backbones["clip"], language_model=backbones["lm"], template="human_assistant")
    model, processor = build_model(spec)
    out = tmp_path_factory.mktemp("ckpt") / "final"
    save_checkpoint(model, processor, Recipe(spec=spec), out)
    return str(out)


@pytest.mark.parametrize("argv, message", [
    (["--model", "/no/such/model"], "--model: folder /no/such/model does not exist"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
])
def test_chat_mistakes_are_one_line(capsys, checkpoint, argv, message):
    argv = argv if "--model" in argv else ["--model", checkpoint, *argv]
    code, _, err = cli(capsys, "chat", *argv)
    assert code == 2 and message in one_line(err)


def test_chat_device_without_cuda(capsys, checkpoint):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = cli(capsys, "chat", "--model", checkpoint, "--device", "cuda")
    assert code == 2 and "--device cuda: this machine has no CUDA device" in one_line(err)


def test_chat_commands_ctrl_c_and_banner(capsys, checkpoint, monkeypatch, tiny_data):
    import io
    import sys

    from allava.evaluate.generate import Answerer

    calls = {"n": 0}
    real = Answerer.answer

    def answer(self, questions, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # Ctrl-C during the first answer
        return real(self, questions, *a, **kw)

    monkeypatch.setattr(Answerer, "answer", answer)
    monkeypatch.setattr(sys, "stdin", io.StringIO("first?\n/image\n/frobnicate\nsecond?\n"))
    image = str(Path(tiny_data["images"]) / "0.png")
    code, out, err = cli(capsys, "chat", "--model", checkpoint, "--image", image, "--max-new-tokens", "2",
                         "--temperature", "0.7", "--system", "Be brief.")
    assert code == 0, err
    assert "(answer stopped; ask again or /quit)" in out and "(usage: /image PATH)" in out
    assert "(unknown command /frobnicate" in out and out.count("assistant>") == 1
    assert f"model {checkpoint} (template human_assistant); image: {image}" in err


# --- qc: image folders, synthesis records, typos ---------------------------------------------------

@pytest.fixture(scope="module")
def synth_run(tmp_path_factory) -> Path:
    from allava.cli import main as allava

    out = tmp_path_factory.mktemp("synth") / "run"
    assert allava(["synth", "allava-laion", "--images", "scenes:4", "--out", str(out), "--teacher", "scene",
                   "--no-progress"]) == 0
    return out


def test_qc_on_synthesis_records_finds_their_images(capsys, synth_run, tmp_path):
    code, out, err = cli(capsys, "qc", str(synth_run / "records.jsonl"), "--config", "cheap", "--out",
                         str(tmp_path / "qc"), "--no-plots", "--no-progress")
    assert code == 0, err
    kept = (tmp_path / "qc" / "kept.jsonl").read_text().splitlines()
    removed = [json.loads(x)["qc"] for x in (tmp_path / "qc" / "removed.jsonl").read_text().splitlines()]
    assert len(kept) >= 4 and not any(r["stat"] == "decodable" for r in removed)


def test_qc_refuses_a_missing_or_wrong_image_folder(capsys, tiny_data, tmp_path):
    code, _, err = cli(capsys, "qc", tiny_data["vqa"], "--config", "cheap", "--out", str(tmp_path / "a"),
                       "--image-folder", str(tmp_path / "nope"))
    assert code == 2 and f"--image-folder {tmp_path / 'nope'}: folder does not exist" in one_line(err)
    code, _, err = cli(capsys, "qc", tiny_data["vqa"], "--config", "cheap", "--out", str(tmp_path / "b"),
                       "--image-folder", str(tmp_path))
    assert code == 2 and "none of the first 24 images found under" in one_line(err) and "check --image-folder" in err
    moved = tmp_path / "elsewhere" / "vqa.jsonl"
    moved.parent.mkdir()
    moved.write_text(Path(tiny_data["vqa"]).read_text())
    code, _, err = cli(capsys, "qc", str(moved), "--config", "cheap", "--out", str(tmp_path / "c"))
    assert code == 2 and "pass --image-folder DIR" in one_line(err)
    assert not any((tmp_path / x).exists() for x in "abc")


def test_qc_counts_a_missing_image_as_its_own_reason(capsys, tiny_data, tmp_path):
    lines = Path(tiny_data["vqa"]).read_text().splitlines()
    gone = json.loads(lines[0]) | {"id": "gone", "image": "no-such.png"}
    data = tmp_path / "vqa.jsonl"
    data.write_text("\n".join(lines + [json.dumps(gone)]) + "\n")
    code, out, _ = cli(capsys, "qc", str(data), "--config", "cheap", "--image-folder", tiny_data["images"],
                       "--out", str(tmp_path / "qc"), "--no-plots", "--no-progress")
    assert code == 0 and "qc: bad input gone (line 25): image not found: no-such.png" in out
    assert "image_not_found" in (tmp_path / "qc" / "problems.jsonl").read_text()


@pytest.mark.parametrize("override, message", [
    ("ops.0.thresholds.sharpnes.min=1", "ops[0] (image_readability): no stat 'sharpnes' to threshold; did you mean 'sharpness'?"),
    ("ops.1.maxx=3", "ops[1] (image_dedup): unknown keys ['maxx'] (did you mean 'maxx' -> 'max'?)"),
])
def test_qc_typos_are_refused(capsys, tiny_data, tmp_path, override, message):
    code, _, err = cli(capsys, "qc", tiny_data["vqa"], "--config", "cheap", "--image-folder", tiny_data["images"],
                       "--out", str(tmp_path / "qc"), "--set", override, "--no-plots", "--no-progress")
    assert code == 2 and message in one_line(err)
    assert not (tmp_path / "qc" / "kept.jsonl").exists()


# --- eval ------------------------------------------------------------------------------------------

@pytest.fixture
def bench(tmp_path) -> Path:
    """A synthetic benchmark of 3 abilities, 10 questions each, sorted by ability (as files often are)."""
    from PIL import Image

    root = tmp_path / "world"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (16, 16), (200, 20, 20)).save(root / "images" / "a.png")
    items = [{"id": f"{ab}{i}", "question": "what colour?", "image": "a.png", "answer": "red", "ability": ab}
             for ab in ("colour", "count", "shape") for i in range(10)]
    (root / "bench.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items))
    (root / "bench_meta.json").write_text(json.dumps({"abilities": {a: {"chance": 0.25} for a in ("colour", "count", "shape")}}))
    return root


def test_eval_score_with_partial_predictions_warns_and_records_coverage(capsys, bench, tmp_path):
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps({"question_id": f"colour{i}", "text": "red"}) + "\n" for i in range(3)))
    code, out, err = cli(capsys, "eval", "score", "--benchmark", "synthetic", "--data", str(bench), "--predictions", str(pred))
    assert code == 0
    assert "allava eval: warning: synthetic: 3 of 30 questions answered (10.0%); the score covers only those" in err
    saved = json.loads((tmp_path / "p.metrics.json").read_text())
    assert saved["coverage"] == {"answered": 3, "questions": 30, "share": 0.1}
    assert json.loads(out)["coverage"]["answered"] == 3


def test_eval_run_limit_is_stratified_and_says_so(capsys, bench, checkpoint, tmp_path):
    code, out, err = cli(capsys, "eval", "run", "--model", checkpoint, "--benchmark", "synthetic", "--data", str(bench),
                         "--out", str(tmp_path / "run"), "--limit", "6", "--no-progress", "--max-new-tokens", "2")
    assert code == 0, err
    assert "--limit 6: 6 of 30 questions, interleaved over ability" in err
    ids = [json.loads(x)["question_id"] for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(ids) == ["colour0", "colour1", "count0", "count1", "shape0", "shape1"]
    assert out.strip().startswith("synthetic: synthetic ") and "on 6 of 6 questions" in out


def test_eval_run_refuses_a_second_run_into_the_same_folder(capsys, bench, checkpoint, tmp_path):
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    holder = open(out / ".lock", "a+")
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    holder.write("pid 4242")
    holder.flush()
    code, _, err = cli(capsys, "eval", "run", "--model", checkpoint, "--benchmark", "synthetic", "--data", str(bench),
                       "--out", str(out), "--no-progress")
    assert code == 2 and "another `allava eval run` is writing there (pid 4242)" in one_line(err)
    holder.close()


def test_eval_run_mistakes(capsys, bench, checkpoint, tmp_path):
    import torch

    code, _, err = cli(capsys, "eval", "run", "--model", str(tmp_path / "nope"), "--benchmark", "synthetic",
                       "--data", str(bench), "--out", str(tmp_path / "r"))
    assert code == 2 and f"--model: folder {tmp_path / 'nope'} does not exist" in one_line(err)
    if not torch.cuda.is_available():
        code, _, err = cli(capsys, "eval", "run", "--model", checkpoint, "--benchmark", "synthetic",
                           "--data", str(bench), "--out", str(tmp_path / "r"), "--device", "cuda")
        assert code == 2 and "--device cuda: this machine has no CUDA device" in one_line(err)


def test_eval_report_keeps_stage1_and_stage2_apart(capsys, tmp_path):
    runs = []
    for stage, value in (("stage1", 20.0), ("stage2", 30.0)):
        run = tmp_path / f"eval-{stage}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"benchmark": "synthetic", "model": f"runs/q/{stage}/final",
                                                      "headline": {"synthetic": value}, "convention": "c"}))
        runs.append(str(run))
    code, out, _ = cli(capsys, "eval", "report", *runs)
    assert code == 0 and "| stage1/final | 20.0 |" in out and "| stage2/final | 30.0 |" in out


def test_textvqa_noocr_lists_its_own_convention(capsys):
    code, out, _ = cli(capsys, "eval", "list")
    block = out.split("textvqa-noocr\n", 1)[1].split("\n\n")[0]
    assert code == 0 and "without OCR tokens" in block.splitlines()[1]


# --- synth -----------------------------------------------------------------------------------------

def synth(capsys, out: Path, *extra: str, task: str = "allava-laion", images: str = "scenes:3"):
    return cli(capsys, "synth", task, "--images", images, "--out", str(out), "--teacher", "scene", "--no-progress", *extra)


def test_synth_refuses_an_out_folder_of_another_run(capsys, tmp_path):
    out = tmp_path / "run"
    assert synth(capsys, out)[0] == 0
    before = (out / "summary.json").read_text()
    code, _, err = synth(capsys, out, task="llava-symbolic")
    assert code == 2 and "holds another synthesis run (task allava-laion -> llava-symbolic)" in one_line(err)
    code, _, err = synth(capsys, out, images="scenes:3@7")
    assert code == 2 and "source scenes:seed 0 -> scenes:seed 7" in one_line(err)
    assert (out / "summary.json").read_text() == before
    assert synth(capsys, out, images="scenes:5")[0] == 0  # more of the same source resumes


def test_synth_refuses_a_qc_or_training_folder(capsys, tmp_path):
    qc = tmp_path / "qc"
    qc.mkdir()
    (qc / "kept.jsonl").write_text("")
    code, _, err = synth(capsys, qc)
    assert code == 2 and f"--out {qc} holds a qc run (kept.jsonl)" in one_line(err)
    train = tmp_path / "train"
    (train / "stage1").mkdir(parents=True)
    (train / "stage1" / "summary.json").write_text("{}")
    code, _, err = synth(capsys, train)
    assert code == 2 and "holds a training run" in one_line(err)


@pytest.mark.parametrize("task, images, message", [
    ("allava-vflan", "scenes:3", "task allava-vflan cannot use --images scenes:3: its items need a 'question' field"),
    ("stablellava", "FOLDER", "task stablellava cannot use --images"),
])
def test_synth_task_that_cannot_use_its_source_is_one_usage_error(capsys, tmp_path, tiny_data, task, images, message):
    images = tiny_data["images"] if images == "FOLDER" else images
    code, _, err = synth(capsys, tmp_path / "run", task=task, images=images)
    assert code == 2 and message in one_line(err)
    assert not (tmp_path / "run" / "rejects.jsonl").exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--budget-usd", "-5", "--budget-usd must be not negative, got -5"),
    ("--limit", "-1", "--limit must be at least 1, got -1"),
    ("--rpm", "0", "--rpm must be positive, got 0"),
])
def test_synth_out_of_range_numbers(capsys, tmp_path, flag, value, message):
    code, _, err = synth(capsys, tmp_path / "run", flag, value)
    assert code == 2 and message in one_line(err)


def test_synth_unreachable_base_url_leaves_items_pending(capsys, tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    out = tmp_path / "run"
    code, _, err = cli(capsys, "synth", "allava-laion", "--images", "scenes:3", "--out", str(out), "--no-progress",
                       "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "m", "--max-retries", "6")
    assert code == 2
    line = [x for x in err.splitlines() if "error:" in x][0]
    assert f"cannot reach the endpoint http://127.0.0.1:{port}/v1 (connection error" in line and "items stay pending" in line
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["pending"] == 3 and summary["rejected"] == 0


def test_synth_merge_takes_the_images_and_writes_nothing_on_failure(capsys, tmp_path):
    shards = [tmp_path / f"s{i}" for i in range(2)]
    for i, d in enumerate(shards):
        assert synth(capsys, d, "--shard", f"{i}/2", images="scenes:6")[0] == 0
    code, out, _ = cli(capsys, "synth", "merge", str(tmp_path / "m"), *map(str, shards))
    assert code == 0 and "6 images" in out
    code, _, _ = cli(capsys, "synth", "export", str(tmp_path / "m"))
    assert code == 0
    code, out, _ = cli(capsys, "data", "validate", str(tmp_path / "m" / "llava" / "instructions.jsonl"),
                       "--image-folder", str(tmp_path / "m"))
    assert code == 0, out
    code, out, _ = cli(capsys, "synth", "merge", str(tmp_path / "bad"), str(shards[0]))
    assert code == 1 and "merge failed" in out and not (tmp_path / "bad").exists()


# --- data validate ---------------------------------------------------------------------------------

def test_data_validate_names_the_right_column_and_says_at_once(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"id": "a"\n{"id": "b\x01"}\n')
    code, out, _ = cli(capsys, "data", "validate", str(bad), "--no-image-check")
    assert code == 1
    assert "line:1: invalid JSON: Expecting ',' delimiter at column 11" in out
    assert "line:2: invalid JSON: Invalid control character at column 10" in out and "at at" not in out


# --- qc report -------------------------------------------------------------------------------------

def test_qc_report_plots_every_thresholded_stat_links_removed_and_compare_writes_a_file(capsys, tiny_data, tmp_path):
    from PIL import Image

    base = ["qc", tiny_data["vqa"], "--config", "cheap", "--image-folder", tiny_data["images"], "--no-progress"]
    assert cli(capsys, *base, "--out", str(tmp_path / "a"))[0] == 0
    assert cli(capsys, *base, "--out", str(tmp_path / "b"), "--set", "ops.0.thresholds.sharpness.min=0")[0] == 0
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    readability = next(op for op in report["ops"] if op["name"] == "image_readability")
    with Image.open(tmp_path / "a" / readability["plot"]) as im:  # 5 thresholded stats: 2 rows of panels
        assert im.size[1] > 2.6 * 72 * 2
    md = (tmp_path / "a" / "report.md").read_text()
    assert "in all: every one in [removed.jsonl](removed.jsonl)" in md
    assert "| -0 " not in md and " -0 |" not in md
    assert "Stats only, no per-record numbers" in md or all(op["stats"] or op["plot"] for op in report["ops"])
    code, out, err = cli(capsys, "qc", "compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert code == 0 and "Removed by each operator:" in out and "| image_readability |" in out
    assert (tmp_path / "a" / "compare.md").read_text() == out and "written to" in err


# --- quickstart report -----------------------------------------------------------------------------

def test_quickstart_report_units_and_shared_stage_scales(tmp_path, monkeypatch):
    """The quickstart itself is too slow for a unit test: its report functions, on a made-up run."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import axes as mpl_axes

    from allava.studies.report import plot_losses, quickstart_targets, targets_lines

    lines = targets_lines(quickstart_targets({"wall_s_total": 612.4, "peak_rss_mb": 1400.0, "evals": {}}))
    assert any(line.startswith("| wall_time | 612.400 s |") for line in lines)
    assert any(line.startswith("| peak_rss | 1400.000 MiB |") for line in lines)
    limits = []
    real = mpl_axes.Axes.set_ylim
    monkeypatch.setattr(mpl_axes.Axes, "set_ylim", lambda self, *a, **k: (limits.append(a), real(self, *a, **k))[1])
    phases = {"train-full": {"stages": {"stage2": {"losses": [(1, 4.0), (2, 3.0)]}}},
              "train-table6": {"stages": {"stage2": {"losses": [(1, 2.0), (2, 1.0)]}}}}
    plot_losses(phases, tmp_path / "loss.png")
    assert len(limits) == 2 and limits[0] == limits[1]


# --- train: a changed recipe on a finished run ---------------------------------------------------

def test_train_refuses_a_changed_recipe_on_a_finished_run(capsys, tmp_path, backbones, tiny_data):
    recipe = write_recipe(tmp_path / "r.yaml", backbones, tiny_data, tmp_path / "run", max_steps=1, save_steps=1)
    code, out, err = cli(capsys, "train", "--config", str(recipe), "stages.stage2.enabled=false", "--no-progress")
    assert code == 0, err
    code, out, _ = cli(capsys, "train", "--config", str(recipe), "stages.stage2.enabled=false", "--no-progress")
    assert code == 0 and "stage1: already done" in out
    code, _, err = cli(capsys, "train", "--config", str(recipe), "stages.stage2.enabled=false", "stages.stage1.lr=0.01")
    assert code == 2 and f"{tmp_path / 'run' / 'stage1'} is finished with a different recipe (lr: 0.002 -> 0.01)" in one_line(err)


def test_train_says_which_checkpoint_it_resumes_from(capsys, tmp_path, backbones, tiny_data):
    import shutil

    recipe = write_recipe(tmp_path / "r.yaml", backbones, tiny_data, tmp_path / "run", max_steps=2, save_steps=1,
                          keep_last_checkpoint=True)  # the rerun below resumes from it
    assert cli(capsys, "train", "--config", str(recipe), "stages.stage2.enabled=false", "--no-progress")[0] == 0
    stage = tmp_path / "run" / "stage1"
    (stage / "summary.json").unlink()  # as if killed after its last checkpoint
    shutil.rmtree(stage / "final")
    code, out, err = cli(capsys, "train", "--config", str(recipe), "stages.stage2.enabled=false", "--no-progress")
    assert code == 0, err
    assert f"stage1: resuming from checkpoint-2 ({stage})" in out


def test_train_progress_is_labelled_and_prints_no_raw_trainer_dicts(capsys, tmp_path, backbones, tiny_data):
    recipe = write_recipe(tmp_path / "r.yaml", backbones, tiny_data, tmp_path / "run", max_steps=2, save_steps=5)
    code, out, err = cli(capsys, "train", "--config", str(recipe), "stages.stage2.enabled=false")
    assert code == 0, err
    assert "{'loss'" not in out + err and "'train_runtime'" not in out + err
    assert "stage1 steps" in err and "stage1: 2 steps in" in out + err
    code, out, err = cli(capsys, "train", "--config", str(recipe), f"output_dir={tmp_path / 'quiet'}",
                         "stages.stage2.enabled=false", "--no-progress")
    assert code == 0 and "{'loss'" not in out + err and "stage1 steps" not in err


def test_qc_examples_must_be_a_number(capsys, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "conversations": [{"from": "human", "value": "hi"},
                                                            {"from": "gpt", "value": "hello there"}]}) + "\n")
    code, _, err = cli(capsys, "qc", str(data), "--config", "cheap", "--out", str(tmp_path / "qc"),
                       "--set", "examples=lots")
    assert code == 2 and "examples must be a whole number >= 0, got 'lots'" in one_line(err)
    assert not (tmp_path / "qc").exists()


# --- a hub id with no network (allava.model.paths.check_hub) -------------------------------------

def _closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connections are refused
    return port


def test_hub_id_without_network_fails_fast_naming_the_model(capsys, monkeypatch):
    """Without HF_HUB_OFFLINE, an unreachable hub took ~55 s of huggingface_hub retries before a message
    that did not name the model; now one connection attempt, then one line (bounded: < 10 s)."""
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # recorded, so the original comes back afterwards
    for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    t0 = time.monotonic()
    code, _, err = cli(capsys, "chat", "--model", "someorg/not-downloaded")
    assert time.monotonic() - t0 < 10
    line = one_line(err)
    assert code == 2 and "'someorg/not-downloaded'" in line and "cannot be reached" in line
    assert "point --model at a local folder" in line


def test_hub_id_without_network_uses_the_cache(tmp_path, monkeypatch):
    """A model already in the hub cache (huggingface_hub try_to_load_from_cache finds its config.json)
    loads from there at once, as with HF_HUB_OFFLINE=1, instead of retrying the unreachable hub."""
    from huggingface_hub import constants

    from allava.model.paths import check_model_path

    snap = tmp_path / "models--someorg--cached" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (tmp_path / "models--someorg--cached" / "refs").mkdir()
    (tmp_path / "models--someorg--cached" / "refs" / "main").write_text("abc")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # recorded, so the original comes back afterwards
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    check_model_path("someorg/cached", "--model")
    assert constants.HF_HUB_OFFLINE is True and __import__("os").environ["HF_HUB_OFFLINE"] == "1"


# --- found by trying data, eval, synth and chat as a new user (issue 12: "the ones nobody listed") ---

def test_eval_score_says_which_answers_it_did_not_score(capsys, bench, tmp_path):
    """Answers to no question of the benchmark, and a second answer to one question, were dropped with
    exit 0 and no word; now a warning and `answers_unused` in metrics.json."""
    pred = tmp_path / "p.jsonl"
    rows = [{"question_id": "colour0", "text": "red"}, {"question_id": "colour0", "text": "blue"},
            {"question_id": "not-a-question", "text": "red"}]
    pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = cli(capsys, "eval", "score", "--benchmark", "synthetic", "--data", str(bench), "--predictions",
                         str(pred), "--out", str(tmp_path / "new" / "dir" / "m.json"))
    assert code == 0 and f"{pred}: 2 of 3 answers not scored: they match no synthetic question" in err
    assert json.loads((tmp_path / "new" / "dir" / "m.json").read_text())["answers_unused"] == 2  # --out's folder made


def test_eval_score_predictions_folder_is_named_as_one(capsys, bench, tmp_path):
    code, _, err = cli(capsys, "eval", "score", "--benchmark", "synthetic", "--data", str(bench), "--predictions",
                       str(tmp_path))
    assert code == 2 and f"{tmp_path}: is a folder; --predictions takes the answer file" in one_line(err)


def test_data_validate_an_empty_file_is_not_a_pass(capsys, tmp_path):
    """`[]` printed 'checked 0 records: 0 valid, 0 invalid' and exit 0, as if the data were good."""
    (tmp_path / "e.json").write_text("[]")
    code, out, err = cli(capsys, "data", "validate", str(tmp_path / "e.json"))
    assert code == 2 and "e.json: holds no records" in one_line(err) and "0 invalid" not in out


def test_data_validate_json_summary_into_a_new_folder(capsys, tiny_data, tmp_path):
    code, _, err = cli(capsys, "data", "validate", tiny_data["vqa"], "--image-folder", tiny_data["images"],
                       "--json", str(tmp_path / "reports" / "v.json"))
    assert code == 0, err
    assert json.loads((tmp_path / "reports" / "v.json").read_text())["invalid"] == 0


@pytest.mark.parametrize("argv, message", [
    (["--temperature", "nan"], "--temperature must be a number >= 0, got nan"),
    (["--top-p", "0.5"], "--top-p 0.5 has no effect with greedy decoding: add --temperature T (> 0)"),
    (["--image", "README.md"], "--image README.md: not an image file"),
])
def test_chat_more_mistakes_before_the_model_loads(capsys, monkeypatch, argv, message):
    """nan was accepted, --top-p without --temperature silently ignored, and a non-image --image failed
    with PIL's bare message only after the model had loaded."""
    import allava.evaluate.generate as generate

    def no_model(*a, **kw):
        raise AssertionError("the model was loaded before the mistake was found")

    monkeypatch.setattr(generate, "Answerer", no_model)
    monkeypatch.chdir(Path(__file__).parent.parent)
    code, _, err = cli(capsys, "chat", "--model", "/not/needed", *argv)
    assert code == 2 and message in one_line(err)


def test_synth_refuses_an_empty_source(capsys, tmp_path):
    """scenes:0 or an empty folder ran to 'complete. 0 of 0 items done' with exit 0."""
    (tmp_path / "empty").mkdir()
    for images in ("scenes:0", str(tmp_path / "empty")):
        code, _, err = synth(capsys, tmp_path / "run", images=images)
        assert code == 2 and f"--images {images}: gives no items" in one_line(err)
    assert not (tmp_path / "run" / "summary.json").exists()


def test_synth_records_whose_images_are_all_missing(capsys, tmp_path, tiny_data):
    """A records source read under the wrong folder rejected every item as 'image not found', exit 0."""
    recs = tmp_path / "recs.jsonl"
    recs.write_text(Path(tiny_data["vqa"]).read_text())
    code, _, err = synth(capsys, tmp_path / "run", images=str(recs))
    assert code == 2 and "none of the first" in one_line(err) and "pass --image-folder DIR" in err
    code, _, err = synth(capsys, tmp_path / "run", "--image-folder", tiny_data["images"], images=str(recs))
    assert code == 0, err


def test_every_option_of_data_eval_synth_chat_has_help():
    import argparse

    from allava.cli import build_parser

    missing = []

    def walk(parser, path):
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, child in a.choices.items():
                    walk(child, f"{path} {name}")
            elif not a.help and not isinstance(a, argparse._HelpAction):
                missing.append(f"{path} {'/'.join(a.option_strings) or a.dest}")

    for verb, child in next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices.items():
        if verb in ("data", "eval", "synth", "chat"):
            walk(child, f"allava {verb}")
    assert missing == []


@pytest.mark.parametrize("benchmark, message", [
    ("gqa", "testdev_balanced_questions.json: no such file; --data must be the GQA folder"),
    ("seed", "SEED-Bench.json: no such file; --data must be the SEED-Bench folder"),
    ("mmmu", "no MMMU validation parquet/JSON files under"),           # was: another file's "not valid JSON"
    ("emt-cifar10", "a CIFAR-10 test_batch or <class>/ image folders in"),  # was: 2 'classes' read from it
])
def test_eval_another_benchmarks_folder_as_data_says_what_data_must_be(capsys, tmp_path, benchmark, message):
    """--data pointing at another benchmark's folder (here a POPE one: coco/*.json lines, val2014/a.jpg)."""
    from tests.test_eval_official import pope_fixture

    root = pope_fixture(tmp_path / "pope")
    pred = tmp_path / "p.jsonl"
    pred.write_text(json.dumps({"question_id": "1", "text": "yes"}) + "\n")
    code, _, err = cli(capsys, "eval", "score", "--benchmark", benchmark, "--data", str(root), "--predictions", str(pred))
    line = one_line(err)
    assert code == 2 and message in line and "--data must be" in line


def test_synth_merge_into_one_of_its_shards_or_a_shard_twice(capsys, tmp_path):
    """`synth merge A A` rewrote shard A in place ("merged 3 records, 0 images"); now refused, as is a
    shard given twice; `synth export --out FILE` said "[Errno 17] File exists"."""
    run = tmp_path / "run"
    assert synth(capsys, run)[0] == 0
    before = (run / "records.jsonl").read_bytes()
    code, _, err = cli(capsys, "synth", "merge", str(run), str(run))
    assert code == 2 and "the merged folder is one of the shards" in one_line(err)
    code, _, err = cli(capsys, "synth", "merge", str(tmp_path / "m"), str(run), str(run))
    assert code == 2 and f"shard {run} is given twice" in one_line(err) and not (tmp_path / "m").exists()
    assert (run / "records.jsonl").read_bytes() == before
    (tmp_path / "f.json").write_text("{}")
    code, _, err = cli(capsys, "synth", "export", str(run), "--out", str(tmp_path / "f.json"))
    assert code == 2 and f"--out {tmp_path / 'f.json'}: is a file, not a folder" in one_line(err)


def test_eval_run_out_that_is_a_file(capsys, bench, checkpoint, tmp_path):
    """`eval run --out FILE` ended in "[Errno 17] File exists: 'FILE'", naming neither --out nor why."""
    (tmp_path / "taken").write_text("x")
    code, _, err = cli(capsys, "eval", "run", "--model", checkpoint, "--benchmark", "synthetic", "--data", str(bench),
                       "--out", str(tmp_path / "taken"), "--no-progress")
    assert code == 2 and f"--out {tmp_path / 'taken'}: cannot be the run folder (a file is in the way)" in one_line(err)
