"""The QC pipeline: stats cached by content + settings, decisions from thresholds, outputs, report."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import test_qc_helpers as h

from allava.config import ConfigError
from allava.quality.config import parse_config
from allava.quality.pipeline import run_qc_pipeline

CHEAP = """
ops:
  - name: image_readability
    thresholds: {{decodable: {{min: 1}}, sharpness: {{min: {sharp}}}}}
  - name: image_dedup
    min: 1
  - name: text_dedup
    max: 0.9
  - name: task_diversity
  - name: instruction_complexity
  - name: visual_complexity
  - name: response_diversity
    min_samples: 2
  - name: balance
"""


def cfg(sharp: float = 0.02, **extra):
    import yaml

    raw = yaml.safe_load(CHEAP.format(sharp=sharp))
    raw.update(extra)
    return parse_config(raw, "test")


@pytest.fixture()
def data(tmp_path) -> Path:
    return h.build_dataset(tmp_path / "d", n=24)


def test_threshold_only_rerun_recomputes_nothing(data, tmp_path):
    out = tmp_path / "qc"
    first = run_qc_pipeline(data, cfg(0.02), out, progress=False, plots=False)
    assert first.computed["image_readability"] == 24 and first.computed["image_dedup:finalize"] == 1
    before = (out / "stats.jsonl").read_text()

    second = run_qc_pipeline(data, cfg(0.5), out, progress=False, plots=False)  # only a threshold changed
    assert sum(second.computed.values()) == 0
    assert (out / "stats.jsonl").read_text().replace('"kept": false', '"kept": true') == \
        before.replace('"kept": false', '"kept": true')  # same numbers, only decisions differ
    assert second.removed > first.removed  # the stricter threshold did take effect

    import yaml

    raw = yaml.safe_load(CHEAP.format(sharp=0.02))
    raw["ops"][0]["max_side"] = 32  # a setting that changes the numbers: that op alone recomputes
    third = run_qc_pipeline(data, parse_config(raw), out, progress=False, plots=False)
    assert third.computed["image_readability"] == 24
    assert sum(v for k, v in third.computed.items() if k != "image_readability") == 0


def test_identical_records_computed_once_and_changed_record_recomputed(data, tmp_path):
    lines = data.read_text().splitlines()
    dup = json.loads(lines[0])
    dup["id"] = "copy"
    data.write_text("\n".join(lines + [json.dumps(dup)]) + "\n")
    run = run_qc_pipeline(data, cfg(), tmp_path / "qc", progress=False, plots=False)
    assert run.computed["instruction_complexity"] == 24  # 25 records, 24 distinct contents
    rec = json.loads(lines[3])
    rec["conversations"][1]["value"] += " Also a tree."
    data.write_text("\n".join(lines[:3] + [json.dumps(rec)] + lines[4:]) + "\n")
    again = run_qc_pipeline(data, cfg(), tmp_path / "qc", progress=False, plots=False)
    assert again.computed["instruction_complexity"] == 1


def test_bad_lines_are_counted_and_run_goes_on(data, tmp_path):
    with data.open("a") as fh:
        fh.write("{not json\n")
        fh.write(json.dumps({"id": "noconv", "image": "0.png"}) + "\n")
        fh.write(json.dumps({"id": "r0-a", "conversations": [{"from": "human", "value": "hi"},
                                                           {"from": "gpt", "value": "hello"}]}) + "\n")
        fh.write("[1, 2]\n")
    run = run_qc_pipeline(data, cfg(), tmp_path / "qc", progress=False, plots=False)
    assert len(run.ids) == 24 and len(run.problems) == 4
    kinds = json.loads((tmp_path / "qc" / "report.json").read_text())["counts"]["bad_by_kind"]
    assert kinds["invalid_json"] == 1 and kinds["duplicate_id"] == 1 and kinds["not_object"] == 1
    problems = [json.loads(x) for x in (tmp_path / "qc" / "problems.jsonl").read_text().splitlines()]
    assert {p["id"] for p in problems} >= {"line:25", "noconv", "r0-a"}
    assert all(p["reason"] for p in problems)


def test_outputs_and_report_are_well_formed(data, tmp_path):
    root = data.parent
    h.scene_image(root / "images" / "blurry.png", seed=99, blur=2.0)
    shutil.copy(root / "images" / "3.png", root / "images" / "3copy.png")
    (root / "images" / "broken.png").write_bytes(b"not a png")
    extra = [h.record("blurry", "blurry.png", "Describe the image.", "Shapes on grey. A red circle."),
             h.record("copy", "3copy.png", "Describe the image.", "Shapes on grey. Something else."),
             h.record("broken", "broken.png", "Describe the image.", "Nothing to see here at all."),
             h.record("text", None, "What is two plus two?", "Two plus two is four.")]
    with data.open("a") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in extra)
    out = tmp_path / "qc"
    run = run_qc_pipeline(data, cfg(0.02), out, progress=False)
    removed = {json.loads(x)["id"]: json.loads(x)["qc"] for x in (out / "removed.jsonl").read_text().splitlines()}
    assert removed["blurry"]["op"] == "image_readability" and removed["blurry"]["stat"] == "sharpness"
    assert removed["broken"] == {"op": "image_readability", "stat": "decodable", "value": 0, "threshold": ">= 1"}
    assert removed["copy"]["op"] == "image_dedup" and removed["copy"]["value"] == 0
    kept = [json.loads(x) for x in (out / "kept.jsonl").read_text().splitlines()]
    assert len(kept) + len(removed) == 28 == len(run.ids)
    assert "qc" not in kept[0] and {r["id"] for r in kept} >= {"text", "r3-a"}  # the original, not its copy
    stats = [json.loads(x) for x in (out / "stats.jsonl").read_text().splitlines()]
    assert len(stats) == 28 and set(stats[0]["stats"]) == {s.label for s in run.specs}

    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"records": 28, "kept": len(kept), "removed": len(removed), "bad_lines": 0,
                                "bad_by_kind": {}}
    ind = report["indicators"]
    assert ind["input"]["num_tasks"] >= 2 and "balance_variance" in ind["kept"] and "response_diversity" in ind["kept"]
    by_op = {o["label"]: o for o in report["ops"]}
    assert by_op["image_readability"]["removed"] == 2 and by_op["image_readability"]["examples"]
    for op in report["ops"]:
        if op["plot"]:
            assert (out / op["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert by_op["image_readability"]["plot"] == "hist_image_readability.png"
    md = (out / "report.md").read_text()
    assert "| Task diversity (number of tasks) |" in md and "removed `broken`" in md


def test_balance_resamples_uniformly(data, tmp_path):
    lines = data.read_text().splitlines()
    # 12 caption + 12 vqa + 4 extra "rare" text-only records
    rare = [json.dumps(h.record(f"t{i}", None, "Say something.", f"Sentence number {i} here.", task="text"))
            for i in range(4)]
    data.write_text("\n".join(lines + rare) + "\n")
    c = cfg()
    c.ops[-1].op.settings.target_size = 12
    run = run_qc_pipeline(data, c, tmp_path / "qc", progress=False, plots=False)
    kept = [json.loads(x) for x in (tmp_path / "qc" / "kept.jsonl").read_text().splitlines()]
    tasks = [r.get("meta", {}).get("task") for r in kept]
    assert len(kept) == 12 and tasks.count("text") == 4 and tasks.count("caption") == 4 and tasks.count("vqa") == 4
    assert run.computed["balance"] == 28  # task tags were computed; resampling itself is free


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown op"):
        parse_config({"ops": [{"name": "nope"}]})
    with pytest.raises(ConfigError, match="unknown keys"):
        parse_config({"ops": [{"name": "image_readability", "max_sid": 3}]})
    with pytest.raises(ConfigError, match="no primary stat"):
        parse_config({"ops": [{"name": "task_diversity", "min": 1}]})
    with pytest.raises(ConfigError, match="appear twice"):
        parse_config({"ops": [{"name": "text_dedup"}, {"name": "text_dedup"}]})
    with pytest.raises(ConfigError, match=r"ops\[0\]\.hash must be one of \['dhash', 'phash'\], got 'ahash'"):
        parse_config({"ops": [{"name": "image_dedup", "hash": "ahash"}]})


def test_synthesis_records_are_read(tmp_path):
    """A synthesis records.jsonl line is converted by the task that wrote it, like `allava synth export`."""
    from allava.quality.reader import iter_qc_records

    h.scene_image(tmp_path / "a.png", seed=1)
    out = {"description": "Two shapes on a light background. A red circle sits at the top.",
           "candidate_questions": ["What is at the top?"], "question": "What is at the top?",
           "answer": "A red circle sits at the top of the picture."}
    good = {"id": "s1", "task": "allava-laion", "prompt_version": "x", "image": "a.png", "teacher": "t",
            "raw": "...", "input": {}, "output": out}
    lines = [good, {"id": "s2", "task": "no-such-task", "output": {}},
             {"id": "s3", "task": "allava-laion", "output": {"description": "no question"}}]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    got = list(iter_qc_records(path))
    recs = [r for r, _ in got if r is not None]
    problems = [p for _, p in got if p is not None]
    assert [r.id for r in recs] == ["s1-cap", "s1-inst"]
    assert recs[0].meta["split"] == "caption" and recs[1].meta["source_id"] == "s1"
    assert recs[1].image_file == tmp_path / "a.png" and recs[1].responses == [out["answer"]]
    assert [p.record_id for p in problems] == ["s2", "s3"] and "unknown task" in problems[0].reason
    run = run_qc_pipeline(path, cfg(), tmp_path / "qc", progress=False, plots=False)
    assert run.ids == ["s1-cap", "s1-inst"] and len(run.problems) == 2


def test_cli_run_and_compare(data, tmp_path, capsys):
    from allava.quality.cli import add_qc_parser, run_qc

    conf = h.write_yaml(tmp_path / "qc.yaml", CHEAP.format(sharp=0.02))
    p = argparse.ArgumentParser()
    add_qc_parser(p)
    for name, sharp in (("a", "0.02"), ("b", "0.5")):
        args = p.parse_args([str(data), "--config", str(conf), "--out", str(tmp_path / name), "--no-progress",
                             "--no-plots", "--set", f"ops.0.thresholds.sharpness.min={sharp}"])
        assert run_qc(args) == 0
    assert "24 records" in capsys.readouterr().out
    assert run_qc(p.parse_args(["compare", str(tmp_path / "a"), str(tmp_path / "b")])) == 0
    out = capsys.readouterr().out
    assert "| kept |" in out and "Task diversity (number of tasks)" in out
    with pytest.raises(ConfigError):
        run_qc(p.parse_args(["compare", str(tmp_path / "a")]))
