"""Reading/writing LLaVA conversation files: formats, problems, atomic writes, image path safety."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from allava.data.records import (
    DataError,
    Problem,
    append_jsonl,
    image_path,
    iter_raw,
    load_records,
    read_records,
    write_jsonl,
)


def rec(rid, value="Describe it.", image=None, answer="A cat.") -> dict:
    r = {"id": rid, "conversations": [{"from": "human", "value": value}, {"from": "gpt", "value": answer}]}
    if image is not None:
        r["image"] = image
    return r


def test_iter_raw_jsonl_streams_lines_and_reports_bad_ones(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"id": "a"}\n'  # BOM on the first line is fine
        b"\n   \n"  # blank lines are skipped
        b'{"id": "b", oops}\n'
        b"[1, 2]\n"
        b'{"id": "\xff"}\n'  # not UTF-8
        b'{"id": 7}'  # no trailing newline
    )
    rows = list(iter_raw(path))
    assert [pos for pos, _, _ in rows] == [1, 4, 5, 6, 7]
    assert rows[0][1] == {"id": "a"} and rows[0][2] is None
    bad = rows[1][2]
    assert bad.record_id == "line:4" and bad.line == 4 and bad.reason.startswith("invalid JSON: ")
    assert rows[2][2] == Problem("line:5", "not a JSON object", 5, ("not_object",))
    assert rows[3][2].record_id == "line:6" and rows[3][2].reason.startswith("invalid JSON")
    assert rows[4][1] == {"id": 7}


def test_iter_raw_json_array(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([rec("a"), "junk", rec(3)]))
    rows = list(iter_raw(path))
    assert [pos for pos, _, _ in rows] == [0, 1, 2]
    assert rows[1][2].record_id == "item:1" and rows[1][2].line is None
    assert rows[2][1]["id"] == 3  # raw: normalization happens in read/load


@pytest.mark.parametrize("text, reason", [('{"id": "a"}', "expected a JSON array"), ('[{"id": ', "invalid JSON")])
def test_iter_raw_json_bad_top_level(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "d.json"
    path.write_text(text)
    [(_, record, problem)] = list(iter_raw(path))
    assert record is None and problem.record_id == "file" and reason in problem.reason


def test_iter_raw_sniffs_unknown_suffix(tmp_path: Path) -> None:
    arr, lines = tmp_path / "a.txt", tmp_path / "b.txt"
    arr.write_text(json.dumps([rec("a")]))
    lines.write_text(json.dumps(rec("b")) + "\n")
    assert [r["id"] for _, r, _ in iter_raw(arr)] == ["a"]
    assert [r["id"] for _, r, _ in iter_raw(lines)] == ["b"]


def test_missing_file_is_a_clear_data_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match="nope.jsonl: no such file"):
        iter_raw(missing)
    with pytest.raises(DataError, match="not a file"):
        read_records(tmp_path)


def test_read_records_normalizes_ids_and_refuses_bad_lines(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    write_jsonl(good, [rec(1), rec("x")])
    assert [r["id"] for r in read_records(good)] == ["1", "x"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rec("a")) + "\nnot json\n")
    with pytest.raises(DataError, match="line:2: invalid JSON"):
        read_records(bad)


def test_load_records_returns_valid_records_and_problems(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), "red").save(tmp_path / "ok.png")
    path = tmp_path / "d.jsonl"
    rows = [rec(5, "<image>\nWhat?", image="ok.png"), rec("gone", "<image>\nWhat?", image="gone.png"), rec("t")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    records, problems = load_records(path)  # image folder defaults to the file's folder
    assert [r["id"] for r in records] == ["5", "t"]
    assert {p.record_id for p in problems} == {"gone", "line:4"}
    records, problems = load_records(path, check_images="none")
    assert [r["id"] for r in records] == ["5", "gone", "t"]


def test_write_jsonl_is_atomic_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.jsonl"
    rows = [rec("a", "héllo\nworld"), {**rec("b"), "meta": {"k": [1]}}]
    assert write_jsonl(path, rows) == 2
    assert read_records(path) == rows
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2
    assert "héllo" in path.read_text(encoding="utf-8")  # kept readable, not \\u-escaped

    def failing():
        yield rec("c")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl(path, failing())
    assert read_records(path) == rows  # old file untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.jsonl"]  # no temp left behind


def test_append_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    with open(path, "a", encoding="utf-8") as fh:
        append_jsonl(fh, rec("a"))
        append_jsonl(fh, rec(2))
    assert [r["id"] for r in read_records(path)] == ["a", "2"]


def test_image_path_resolves_inside_and_refuses_escapes(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(folder / "sub" / "a.png")
    outside = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(outside)
    os.symlink(outside, folder / "link.png")

    assert image_path(rec("t"), folder) is None
    assert image_path({"id": "t", "image": ""}, folder) is None
    assert image_path(rec("i", image="sub/a.png"), folder) == (folder / "sub" / "a.png").resolve()
    assert image_path(rec("i", image=str(folder / "sub" / "a.png")), folder) is not None  # absolute inside: ok
    for bad in ["../secret.png", "sub/../../secret.png", str(outside), "link.png"]:
        with pytest.raises(DataError, match="escapes image folder"):
            image_path(rec("i", image=bad), folder)
    # Without a folder only lexical checks apply.
    assert image_path(rec("i", image="sub/a.png"), None) == Path("sub/a.png")
    for bad in ["../x.png", "/abs/x.png"]:
        with pytest.raises(DataError, match="escapes image folder"):
            image_path(rec("i", image=bad), None)
    with pytest.raises(DataError, match="must be a string"):
        image_path(rec("i", image=["a.png"]), folder)
