"""`export`: records.jsonl -> LLaVA split files that load and validate, with provenance in meta."""
from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path

import pytest

import allava.synth.tasks  # noqa: F401 - registers the tasks
from allava.data.records import load_records
from allava.scenes.graph import sample_scene
from allava.scenes.render import render
from allava.scenes.teacher import text_record
from allava.synth.base import TASKS, Item
from allava.synth.export import SPLIT_FILES, export
from allava.synth.teachers.scene import SceneTeacher


def _run_folder(run: Path) -> list[dict]:
    """A small run of every task with the scene teacher, written as the runner would."""
    (run / "images").mkdir(parents=True)
    teacher, lines = SceneTeacher(), []
    args = argparse.Namespace()
    tasks = {n: TASKS[n]() for n in TASKS}
    for t in tasks.values():
        t.bind(run, args)
    for i in range(3):
        scene = sample_scene(100 + i)
        render(scene).save(run / "images" / f"s{i}.png")
        item = Item(f"s{i}", f"images/s{i}.png", run, {"scene": scene.to_dict(), "seed": 100 + i,
                                                        "question": "How many objects?",
                                                        "caption": "a small picture"})
        for name in ("allava-laion", "allava-vflan", "llava-symbolic", "caption-expand"):
            lines.append(asyncio.run(tasks[name].run(Item(f"{name}/{item.id}", item.image, run, item.fields), teacher)))
        rec = text_record(f"t{i}", sample_scene(200 + i), random.Random(i))
        text_item = Item(f"t{i}", fields={k: rec[k] for k in ("conversations", "meta")})
        lines.append(asyncio.run(tasks["text-regen"].run(text_item, teacher)))
        lines.append(asyncio.run(tasks["stablellava"].run(Item(f"ab{i}", fields={"ability": "color"}), teacher)))
    with open(run / "records.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(line) + "\n" for line in lines)
    return lines


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> tuple[Path, list[dict]]:
    run = tmp_path_factory.mktemp("run")
    return run, _run_folder(run)


def test_export_writes_loadable_split_files(run_dir):
    run, _ = run_dir
    counts = export(run)
    # 3 x (laion 1 + vflan 1 + caption-expand 1) captions; 3 x (laion 1 + vflan 1 + symbolic 3 + stablellava 1)
    assert counts == {"caption": 9, "instruction": 18, "text": 3}
    for split, name in SPLIT_FILES.items():
        records, problems = load_records(run / name, image_folder=run, check_images="decode")
        assert problems == [] and len(records) == counts[split]
    text, _ = load_records(run / "text.jsonl")
    assert all("image" not in r for r in text)


def test_meta_keeps_provenance_lossless(run_dir):
    run, lines = run_dir
    export(run)
    by_id = {line["id"]: line for line in lines}
    caps = [json.loads(x) for x in (run / "captions.jsonl").read_text().splitlines()]
    laion = next(r for r in caps if r["meta"]["task"] == "allava-laion")
    src = by_id[laion["meta"]["source_id"]]
    assert laion["meta"]["raw"] == src["raw"] and laion["meta"]["teacher"] == "scene-graph"
    assert laion["meta"]["prompt_version"] == "allava-laion/1" and laion["meta"]["usage"] == src["usage"]
    inst = [json.loads(x) for x in (run / "instructions.jsonl").read_text().splitlines()]
    sym = [r for r in inst if r["meta"]["task"] == "llava-symbolic"]
    raws = {raw for line in lines if line["task"] == "llava-symbolic" for raw in line["raw"]}
    assert sym and {r["meta"]["raw"] for r in sym} <= raws
    # a procedural image's seed travels along, so the offline scene judge can rebuild its scene graph
    assert laion["meta"]["seed"] == src["input"]["seed"] and "seed" not in by_id["ab0"].get("input", {})


def test_export_to_other_folder_skips_duplicates_and_torn_lines(run_dir, tmp_path):
    run, lines = run_dir
    copy = tmp_path / "run"
    copy.mkdir()
    body = (run / "records.jsonl").read_text()
    (copy / "records.jsonl").write_text(body + json.dumps(lines[0]) + "\n" + '{"id": "torn", "task": "allav')
    counts = export(copy, tmp_path / "out")
    assert counts == {"caption": 9, "instruction": 18, "text": 3}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(SPLIT_FILES.values())


def test_export_errors(tmp_path, run_dir):
    with pytest.raises(FileNotFoundError):
        export(tmp_path)
    (tmp_path / "records.jsonl").write_text(json.dumps({"id": "x", "task": "no-such-task"}) + "\n")
    with pytest.raises(ValueError, match="unknown task"):
        export(tmp_path)
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "captions.jsonl").exists()
    with pytest.raises(ValueError, match="format"):
        export(run_dir[0], to="sharegpt")
