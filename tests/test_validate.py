"""Validation rules and the ``validate`` command, on fixtures built in tmp_path."""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from allava.data.validate import add_validate_parser, run_validate, validate_file, validate_record


def conv(*turns: tuple[str, str]) -> list[dict]:
    return [{"from": role, "value": value} for role, value in turns]


def img_rec(rid, image="img/a.png", q="<image>\nWhat is shown?", **extra) -> dict:
    return {"id": rid, "image": image, "conversations": conv(("human", q), ("gpt", "A red square.")), **extra}


def text_rec(rid, q="Write a haiku.") -> dict:
    return {"id": rid, "conversations": conv(("human", q), ("gpt", "Old pond, frog jumps in."))}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Image folder with a good PNG and JPEG, garbage bytes, a truncated PNG, and a secret outside."""
    img = tmp_path / "img"
    img.mkdir()
    Image.new("RGB", (16, 16), "red").save(img / "a.png")
    Image.new("RGB", (16, 16), "blue").save(img / "b.jpg")
    (img / "garbage.png").write_bytes(b"this is not an image at all")
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, format="PNG")
    (img / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    return tmp_path


GOOD = [
    img_rec("good-img"),
    img_rec(42, image="img/b.jpg", q="What colour is it?\n<image>"),  # int id, marker at the end
    text_rec("good-text"),
    {**text_rec("good-null-image"), "image": None, "meta": {"source": "evol"}},
    {
        "id": "good-multiturn",
        "image": "img/a.png",
        "conversations": conv(("human", "<image>\nColour?"), ("gpt", "Red."), ("human", "Shape?"), ("gpt", "Square.")),
    },
]

# id -> (record, words the reason must contain)
BAD = {
    "no-conv": ({"id": "no-conv", "image": "img/a.png"}, "missing conversations"),
    "conv-not-list": ({"id": "conv-not-list", "conversations": "hi"}, "not a list"),
    "conv-empty": ({"id": "conv-empty", "conversations": []}, "empty conversations"),
    "turn-not-obj": ({"id": "turn-not-obj", "conversations": ["hi", {"from": "gpt", "value": "x"}]}, "turn 0 is not an object"),
    "turn-no-value": ({"id": "turn-no-value", "conversations": [{"from": "human"}, {"from": "gpt", "value": "x"}]}, "turn 0 has no 'value'"),
    "bad-role": ({"id": "bad-role", "conversations": conv(("human", "q"), ("assistant", "a"))}, "unknown role 'assistant'"),
    "wrong-order": ({"id": "wrong-order", "conversations": conv(("gpt", "a"), ("human", "q"))}, "turn 0: expected human, found gpt"),
    "empty-turn": ({"id": "empty-turn", "conversations": conv(("human", "q"), ("gpt", "  \n"))}, "turn 1 (gpt) is empty"),
    "ends-human": ({"id": "ends-human", "conversations": conv(("human", "q"))}, "ends with a human turn"),
    "no-marker": (img_rec("no-marker", q="What is shown?"), "missing <image> marker"),
    "marker-text": (text_rec("marker-text", q="<image>\nWrite a haiku."), "<image> marker in a text-only record"),
    "two-markers": (img_rec("two-markers", q="<image>\n<image>\nCompare."), "appears 2 times"),
    "marker-late": (
        {
            "id": "marker-late",
            "image": "img/a.png",
            "conversations": conv(("human", "Look."), ("gpt", "Ok."), ("human", "<image>"), ("gpt", "Red.")),
        },
        "outside the first human turn (turn 2)",
    ),
    "escape-dots": (img_rec("escape-dots", image="../x.png"), "escapes image folder: ../x.png"),
    "escape-abs": (img_rec("escape-abs", image="/etc/passwd"), "escapes image folder: /etc/passwd"),
    "not-found": (img_rec("not-found", image="img/missing.png"), "image not found: img/missing.png"),
    "garbage": (img_rec("garbage", image="img/garbage.png"), "corrupt image: img/garbage.png ("),
    "truncated": (img_rec("truncated", image="img/truncated.png"), "corrupt image: img/truncated.png ("),
    "image-list": (img_rec("image-list", image=["img/a.png"]), "image must be a string"),
    "item:bad-id": ({"id": 1.5, "conversations": conv(("human", "q"), ("gpt", "a"))}, "id must be a string or int"),
}


def write_jsonl(path: Path, records: list, extra_lines: tuple[str, ...] = ()) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "".join(line + "\n" for line in extra_lines))
    return path


def args(
    file: Path, image_folder: Path | None = None, no_image_check: bool = False, json_out: Path | None = None
) -> argparse.Namespace:
    folder = str(image_folder) if image_folder else None
    out = str(json_out) if json_out else None
    return argparse.Namespace(file=str(file), image_folder=folder, no_image_check=no_image_check, json=out)


def test_good_records_have_no_reasons(root: Path) -> None:
    for record in GOOD:
        assert validate_record(record, root) == [], record["id"]


@pytest.mark.parametrize("rid", sorted(BAD))
def test_each_bad_record_is_flagged_with_its_cause(root: Path, rid: str) -> None:
    record, words = BAD[rid]
    reasons = validate_record(record, root)
    assert any(words in r for r in reasons), reasons


def test_not_an_object_and_missing_ids() -> None:
    assert validate_record(["x"], None) == ["not a JSON object"]
    assert validate_record(text_rec(""), None) == ["empty id"]
    assert validate_record({"conversations": conv(("human", "q"), ("gpt", "a"))}, None) == ["missing id"]
    assert validate_record(text_rec(True), None) == ["id must be a string or int (got bool)"]
    turns = [{"from": "human", "value": 3}, {"from": "gpt", "value": "a"}]
    assert validate_record({"id": "v", "conversations": turns}, None) == ["turn 0 has no string 'value' (got int)"]


def test_image_check_modes(root: Path) -> None:
    garbage = img_rec("g", image="img/garbage.png")
    assert validate_record(garbage, root, "exists") == []
    assert validate_record(img_rec("m", image="img/missing.png"), root, "none") == []
    assert validate_record(img_rec("e", image="../x.png"), root, "none")  # path safety always checked
    with pytest.raises(ValueError):
        validate_record(garbage, root, "sometimes")


def test_symlink_out_of_the_image_folder_is_refused(root: Path) -> None:
    (root / "img" / "link.png").symlink_to(root / "x.png")
    folder = root / "img"  # x.png lies outside it
    assert validate_record(img_rec("l", image="link.png"), folder) == ["image path escapes image folder: link.png"]


def test_validate_file_flags_exactly_the_bad_records(root: Path) -> None:
    bad_records = [record for record, _ in BAD.values()]
    dup = img_rec("good-img")  # duplicate of the first good record
    path = write_jsonl(root / "data.jsonl", GOOD + bad_records + [dup], extra_lines=("{not json", "", "[1]"))
    report = validate_file(path, root)

    n_lines = len(GOOD) + len(bad_records) + 1
    expected = {rid for rid in BAD if not rid.startswith("item:")} | {
        f"line:{len(GOOD) + len(bad_records)}",  # the float id, reported by line
        "good-img",  # the duplicate (the first occurrence stays valid)
        f"line:{n_lines + 1}",  # invalid JSON
        f"line:{n_lines + 3}",  # [1] (blank line skipped but counted)
    }
    flagged = [p.record_id for p in report.problems]
    assert sorted(flagged) == sorted(expected)
    assert report.total == n_lines + 2
    assert report.valid == len(GOOD)
    assert report.invalid == len(expected)
    by_id = {p.record_id: p for p in report.problems}
    assert "duplicate id (first at line:1)" in by_id["good-img"].reason
    assert by_id["good-img"].line == n_lines
    assert by_id[f"line:{n_lines + 1}"].reason.startswith("invalid JSON")
    counts = report.reason_counts
    assert counts["corrupt_image"] == 2 and counts["duplicate_id"] == 1 and counts["invalid_json"] == 1
    assert counts["image_not_found"] == 1 and counts["unsafe_image_path"] == 2 and counts["role_order"] == 1
    assert sum(counts.values()) >= report.invalid


def test_validate_file_json_array_uses_item_positions(root: Path) -> None:
    path = root / "data.json"
    path.write_text(json.dumps([GOOD[0], {"conversations": []}, "junk"]))
    report = validate_file(path, root)
    assert (report.total, report.valid, report.invalid) == (3, 1, 2)
    assert [p.record_id for p in report.problems] == ["item:1", "item:2"]
    assert "missing id; empty conversations" == report.problems[0].reason


def test_public_allava_and_llava_styles_are_valid(tmp_path: Path) -> None:
    (tmp_path / "allava_laion" / "images").mkdir(parents=True)
    Image.new("RGB", (32, 24), "green").save(tmp_path / "allava_laion" / "images" / "100277305.jpeg", format="JPEG")
    (tmp_path / "coco" / "train2017").mkdir(parents=True)
    Image.new("RGB", (32, 24), "gray").save(tmp_path / "coco" / "train2017" / "000000033471.jpg", format="JPEG")
    allava = [
        {
            "id": "allava_laion_cap_100277305",
            "image": "allava_laion/images/100277305.jpeg",
            "conversations": conv(("human", "<image>\nPlease depict the image in words."), ("gpt", "A green field.")),
        }
    ]
    evol = [{"id": "evol_1", "conversations": conv(("human", "Explain recursion."), ("gpt", "A function calling itself."))}]
    mix665k = [
        {
            "id": "000000033471",
            "image": "coco/train2017/000000033471.jpg",
            "conversations": conv(
                ("human", "What are the colors of the bus in the image?\n<image>"),
                ("gpt", "The bus in the image is white and red."),
                ("human", "What feature can be seen on the back of the bus?"),
                ("gpt", "The back of the bus features an advertisement."),
            ),
        },
        {"id": 123, "model": "", "conversations": conv(("human", "Hi"), ("gpt", "Hello!"))},  # text-only, int id
    ]
    files = {"ALLaVA-Caption-LAION-4V.json": allava, "Evol-Instruct-GPT4-Turbo-143K.json": evol, "llava_v1_5_mix665k.json": mix665k}
    for name, data in files.items():
        (tmp_path / name).write_text(json.dumps(data))
        report = validate_file(tmp_path / name, tmp_path)
        assert (report.invalid, report.valid) == (0, len(data)), report.problems


def test_command_exit_codes_output_and_json(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_jsonl(root / "good.jsonl", GOOD)
    assert run_validate(args(good, root)) == 0
    out = capsys.readouterr().out
    assert f"checked {len(GOOD)} records: {len(GOOD)} valid, 0 invalid" in out

    bad = write_jsonl(root / "bad.jsonl", GOOD + [BAD["garbage"][0], BAD["wrong-order"][0], BAD["empty-turn"][0]])
    summary = root / "report.json"
    assert run_validate(args(bad, root, json_out=summary)) == 1
    out = capsys.readouterr().out
    assert "garbage: corrupt image: img/garbage.png (" in out
    assert "wrong-order: wrong role order at turn 0: expected human, found gpt; " in out  # several reasons joined
    assert f"checked {len(GOOD) + 3} records: {len(GOOD)} valid, 3 invalid" in out
    assert "  corrupt_image: 1" in out
    data = json.loads(summary.read_text())
    assert (data["total"], data["valid"], data["invalid"]) == (len(GOOD) + 3, len(GOOD), 3)
    assert data["reason_counts"]["corrupt_image"] == 1
    assert {p["record_id"] for p in data["problems"]} == {"garbage", "wrong-order", "empty-turn"}

    # Without image checks only the conversation problems remain.
    assert run_validate(args(bad, root, no_image_check=True)) == 1
    assert "garbage" not in capsys.readouterr().out


def test_command_errors_exit_2_without_traceback(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_validate(args(root / "missing.jsonl")) == 2
    err = capsys.readouterr().err
    assert "missing.jsonl: no such file" in err and "Traceback" not in err
    good = write_jsonl(root / "good.jsonl", GOOD)
    assert run_validate(args(good, root / "no-such-dir")) == 2
    assert "image folder not found" in capsys.readouterr().err


def test_parser_registration_defaults_image_folder_to_file_folder(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="allava data")
    add_validate_parser(parser.add_subparsers(dest="cmd"))
    good = write_jsonl(root / "good.jsonl", GOOD)  # image paths are relative to root, the file's folder
    ns = parser.parse_args(["validate", str(good)])
    assert (ns.file, ns.image_folder, ns.no_image_check, ns.json) == (str(good), None, False, None)
    assert ns.func(ns) == 0
    nested = root / "sub"
    nested.mkdir()
    moved = write_jsonl(nested / "d.jsonl", GOOD)
    assert ns.func(parser.parse_args(["validate", str(moved)])) == 1
    assert "hint: images were looked up under" in capsys.readouterr().out
    assert ns.func(parser.parse_args(["validate", str(moved), "--image-folder", str(root)])) == 0
