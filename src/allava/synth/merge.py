"""`allava synth merge OUT SHARD_DIR...`: join the outputs of N machines into one run folder.

Checks what sharding promises: no id is doubled (within or across shards, records or rejects),
and, when the shards' summaries name their source, that every id of that source is present
(re-enumerated with the same shard split and --limit). The merged folder is written only when both
hold (the report names what failed otherwise), and it takes the images the shards generated
(`images/` in a shard folder: scenes:, abilities:, t2i: sources), so its export validates.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from allava.synth.config import SynthConfigError, parse_shard
from allava.synth.outputs import iter_lines
from allava.synth.sources import open_source, selected_ids

SUM_KEYS = ("total", "done", "rejected", "pending", "cached", "tokens_in", "tokens_out", "cost_usd")


def _write_lines(path: Path, lines: list[bytes]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.writelines(lines)
    os.replace(tmp, path)


def merge(out: str | Path, shard_dirs: list[str | Path]) -> dict[str, Any]:
    out = Path(out)
    dirs = [Path(d) for d in shard_dirs]
    if out.resolve() in {d.resolve() for d in dirs}:  # rewrote the shard in place, its images "0 merged"
        raise SynthConfigError(f"{out}: the merged folder is one of the shards; merge into a new folder")
    twice = sorted({str(d) for d in dirs if [x.resolve() for x in dirs].count(d.resolve()) > 1})
    if twice:
        raise SynthConfigError(f"shard {twice[0]} is given twice")
    for d in dirs:
        if not (d / "records.jsonl").exists() and not (d / "rejects.jsonl").exists():
            raise SynthConfigError(f"{d}: not a synth run folder (no records.jsonl / rejects.jsonl)")
    seen: dict[str, str] = {}
    doubled: list[str] = []
    merged: dict[str, list[bytes]] = {"records.jsonl": [], "rejects.jsonl": []}
    for d in dirs:
        for name in merged:
            for line in iter_lines(d / name):
                rid = str(line["id"])
                if rid in seen:
                    doubled.append(f"{rid} ({seen[rid]} and {d.name}/{name})")
                    continue
                seen[rid] = f"{d.name}/{name}"
                merged[name].append((json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))
    summaries = [json.loads((d / "summary.json").read_text()) for d in dirs if (d / "summary.json").exists()]
    missing: list[str] = []
    checked = False
    notes: list[str] = []
    if summaries and len(summaries) == len(dirs):
        keys = {(s.get("source"), json.dumps(s.get("source_options"), sort_keys=True),
                 s.get("shard", "0/1").split("/")[1]) for s in summaries}
        if len(keys) != 1:
            notes.append("shards name different sources or shard counts: source not re-enumerated")
        else:
            first = summaries[0]
            n = parse_shard(first.get("shard", "0/1"))[1]
            opts = first.get("source_options") or {}
            present = {parse_shard(s["shard"])[0] for s in summaries}
            absent = sorted(set(range(n)) - present)
            if absent:
                notes.append(f"shards {absent} of {n} are not among the inputs")
            source = open_source(first["source"], out, opts.get("image_folder"), opts.get("min_short_edge") or 0)
            for i in range(n):
                for rid in selected_ids(source, (i, n), opts.get("limit")):
                    if rid not in seen:
                        missing.append(rid)
            checked = True
    else:
        notes.append("not every shard has a summary.json: source not re-enumerated")
    missing = list(dict.fromkeys(missing))
    if doubled or missing:
        return {"ok": False, "checked_source": checked, "records": len(merged["records.jsonl"]),
                "rejects": len(merged["rejects.jsonl"]), "doubled": doubled, "missing": missing,
                "notes": notes + [f"nothing written to {out}"], "out": str(out), "written": False}
    out.mkdir(parents=True, exist_ok=True)
    images = _copy_images(dirs, out)
    for name, lines in merged.items():
        _write_lines(out / name, lines)
    summary: dict[str, Any] = {k: sum(s.get(k) or 0 for s in summaries) for k in SUM_KEYS}
    summary.update({
        "status": "complete" if not doubled and not missing and checked else "incomplete",
        "task": summaries[0].get("task") if summaries else None,
        "model": summaries[0].get("model") if summaries else None,
        "source": summaries[0].get("source") if summaries else None,
        "shards": [str(d) for d in dirs], "records": len(merged["records.jsonl"]),
        "rejects": len(merged["rejects.jsonl"]), "doubled": len(doubled), "missing": len(missing),
        "wall_s": max((s.get("wall_s") or 0 for s in summaries), default=0),
    })
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {"ok": True, "checked_source": checked, "records": summary["records"], "images": images,
            "rejects": summary["rejects"], "doubled": doubled, "missing": missing, "notes": notes, "out": str(out),
            "written": True}


def _copy_images(dirs: list[Path], out: Path) -> int:
    """The images each shard's records point at inside the shard folder (generated ones), linked or
    copied to the same relative path under OUT; images of a source folder stay where they are."""
    import shutil

    n = 0
    for d in dirs:
        for line in iter_lines(d / "records.jsonl"):
            rel = line.get("image")
            if not isinstance(rel, str) or Path(rel).is_absolute() or ".." in Path(rel).parts:
                continue
            src, dst = d / rel, out / rel
            if not src.is_file() or dst.exists():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
            n += 1
    return n


def describe_merge(r: dict[str, Any]) -> str:
    if not r.get("written", True):
        text = f"merge failed: {r['records']} records and {r['rejects']} rejects not written"
    else:
        text = f"merged {r['records']} records, {r.get('images', 0)} images and {r['rejects']} rejects into {r['out']}"
    if r["checked_source"]:
        text += "; every id of the source checked"
    if r["doubled"]:
        text += f"; DOUBLED ids ({len(r['doubled'])}): " + ", ".join(r["doubled"][:5])
    if r["missing"]:
        text += f"; MISSING ids ({len(r['missing'])}): " + ", ".join(r["missing"][:5])
    for note in r["notes"]:
        text += f"; {note}"
    return text
