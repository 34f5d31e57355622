"""Fixture builders shared by the QC tests (no tests here): scene-like images and LLaVA records."""
from __future__ import annotations

import json
import random
from pathlib import Path

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 60, 220), "yellow": (230, 210, 20)}
SHAPES = ("circle", "square")


def scene_image(path: Path, seed: int, size: int = 64, blur: float = 0.0) -> dict:
    """Two or three flat shapes on a light background (like the quickstart); returns what is drawn."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)
    im = Image.new("RGB", (size, size), (235, 235, 225))
    d = ImageDraw.Draw(im)
    drawn = []
    for _ in range(rng.randint(2, 3)):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        x, y, r = rng.randint(8, size - 20), rng.randint(8, size - 20), rng.randint(6, 12)
        (d.ellipse if shape == "circle" else d.rectangle)([x, y, x + r, y + r], fill=COLOURS[colour])
        drawn.append((colour, shape))
    if blur:
        im = im.filter(ImageFilter.GaussianBlur(blur))
    im.save(path)
    return {"objects": drawn}


def record(rid: str, image: str | None, question: str, answer: str, **meta) -> dict:
    human = ("<image>\n" if image else "") + question
    rec = {"id": rid, "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]}
    if image:
        rec["image"] = image
    if meta:
        rec["meta"] = meta
    return rec


QUESTIONS = ["Describe the image in detail.", "How many shapes are in the picture?", "What colour is the circle?",
             "Where is the square located?", "Why might the shapes be arranged like this?"]


def build_dataset(root: Path, n: int = 24) -> Path:
    """`n` records over n/2 images (two records per image, as in LLaVA data) in root/data.jsonl."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n // 2):
        info = scene_image(root / "images" / f"{i}.png", seed=i)
        desc = " ".join(f"There is a {c} {s}." for c, s in info["objects"])
        rows.append(record(f"r{i}-a", f"{i}.png", QUESTIONS[0], f"{desc} The background is light grey.",
                           task="caption"))
        q = QUESTIONS[1 + i % 4]
        rows.append(record(f"r{i}-b", f"{i}.png", q, f"{len(info['objects'])} shapes; {desc}", task="vqa"))
    path = root / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
