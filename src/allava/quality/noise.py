"""Inject known-bad records into clean LLaVA data, to measure what QC catches (the issue's evidence).

Each injected record replaces a clean one and is one of: `swap` (the answer of a record about
another image), `garble` (the response's characters shuffled), `duplicate` (a copy of another
record whose image is copied to a new file), `unreadable` (the image blurred, darkened or
corrupted) or `truncate` (a long answer cut mid-sentence). Returns {record id: kind}.

These are the kinds the default operators were built against. `inject_teacher_noise` (re-exported
here from `allava.quality.teacher_noise`) makes the mistakes real teachers make instead.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

from allava.quality.teacher_noise import TEACHER_KINDS, inject_teacher_noise  # noqa: F401 - re-exported

KINDS = ("swap", "garble", "duplicate", "unreadable", "truncate")


def _gpt(rec: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in rec["conversations"] if t.get("from") == "gpt"]


def _long(rec: dict[str, Any], words: int = 12) -> bool:
    return any(len(t["value"].split()) >= words for t in _gpt(rec))


def _corrupt_image(src: Path, dst: Path, rng: random.Random) -> None:
    from PIL import Image, ImageEnhance, ImageFilter

    how = rng.choice(("blur", "dark", "broken"))
    if how == "broken":
        dst.write_bytes(src.read_bytes()[: 40])
        return
    with Image.open(src) as im:
        im = im.convert("RGB")
        im = im.filter(ImageFilter.GaussianBlur(2.5)) if how == "blur" else ImageEnhance.Brightness(im).enhance(0.02)
        im.save(dst)


def inject_noise(records: list[dict[str, Any]], image_folder: str | Path, rate: float = 0.2, seed: int = 0,
                 kinds: tuple[str, ...] = KINDS) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Return (records with `rate` of them replaced by bad ones, {injected id: kind}); writes new images."""
    rng = random.Random(seed)
    folder = Path(image_folder)
    out = [json.loads(json.dumps(r)) for r in records]
    with_image = [i for i, r in enumerate(out) if r.get("image")]
    long_ones = [i for i in with_image if _long(out[i])]
    n = round(rate * len(out))
    picked = rng.sample(range(len(out)), n)
    picked_set = set(picked)  # membership tests below: a list made injection quadratic (minutes at 28k records)
    injected: dict[str, str] = {}
    for k, i in enumerate(picked):
        kind = kinds[k % len(kinds)]
        rec = out[i]
        if kind in ("swap", "truncate") and not _long(rec) or kind in ("duplicate", "unreadable") and not rec.get("image"):
            if not long_ones:
                continue
            i = rng.choice(long_ones)
            if out[i]["id"] in injected:
                continue
            rec = out[i]
        if kind == "swap":
            donor = out[rng.choice([j for j in long_ones if out[j].get("image") != rec.get("image")])]
            _gpt(rec)[-1]["value"] = _gpt(donor)[-1]["value"]
        elif kind == "garble":
            before = [t["value"] for t in _gpt(rec)]
            for t in _gpt(rec):
                chars = list(t["value"])
                rng.shuffle(chars)
                t["value"] = "".join(chars)
            if [t["value"] for t in _gpt(rec)] == before:  # "1", "red" -> "red": nothing changed, no noise
                for t, v in zip(_gpt(rec), before):
                    t["value"] = v
                continue
        elif kind == "truncate":
            t = max(_gpt(rec), key=lambda t: len(t["value"]))
            words = t["value"].split()
            t["value"] = " ".join(words[: max(3, int(len(words) * rng.uniform(0.3, 0.7)))])
            t["value"] = t["value"].rstrip(".!?,;:")
        elif kind == "duplicate":
            earlier = [j for j in with_image if j < i and out[j]["id"] not in injected and j not in picked_set]
            if not earlier:
                continue
            src = out[rng.choice(earlier)]  # the copy comes after its original, as a re-crawled item would
            new = f"dup-{k}-{Path(src['image']).name}"
            shutil.copy(folder / src["image"], folder / Path(src["image"]).parent / new)
            rec = {**json.loads(json.dumps(src)), "id": rec["id"], "image": str(Path(src["image"]).parent / new)}
        elif kind == "unreadable":
            new = str(Path(rec["image"]).parent / f"bad-{k}-{Path(rec['image']).name}")
            _corrupt_image(folder / rec["image"], folder / new, rng)
            rec["image"] = new
        out[i] = rec
        injected[rec["id"]] = kind
    return out, injected


def score_injection(removed_ids: set[str], all_ids: list[str], injected: dict[str, str]) -> dict[str, Any]:
    """Share of injected records removed (overall and per kind) and share of clean records removed."""
    clean = [i for i in all_ids if i not in injected]
    per_kind: dict[str, list[int]] = {}
    for rid, kind in injected.items():
        per_kind.setdefault(kind, []).append(int(rid in removed_ids))
    return {"injected": len(injected), "clean": len(clean),
            "injected_removed": sum(rid in removed_ids for rid in injected) / max(1, len(injected)),
            "clean_removed": sum(rid in removed_ids for rid in clean) / max(1, len(clean)),
            "per_kind": {k: sum(v) / len(v) for k, v in sorted(per_kind.items())}}
