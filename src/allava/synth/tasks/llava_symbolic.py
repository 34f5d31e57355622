"""`llava-symbolic`: LLaVA's text-only teacher (section 3, appendix B). The image is encoded as
captions and normalized boxes; a language-only model writes a conversation, a detailed
description and a complex-reasoning QA from them, guided by a system message and few-shot
examples. The image itself is never sent, but the records point at it for training."""
from __future__ import annotations

import random
import re
from typing import Any

from allava.scenes.graph import GRID, SIZES, THING_SIZE, Scene, SceneObject
from allava.synth.base import (
    Completion,
    Item,
    ParseError,
    Request,
    SynthError,
    Teacher,
    output_line,
    register_task,
)
from allava.synth.prompts import (
    DETAILED_DESCRIPTION_INSTRUCTIONS,
    LLAVA_COMPLEX_SYSTEM,
    LLAVA_CONVERSATION_SYSTEM,
    LLAVA_DETAIL_SYSTEM,
)
from allava.synth.tasks.common import SynthTask, call, opt, parse_turns, pick, record

RESPONSE_TYPES = ("conversation", "detail", "complex")
TYPE_ALIASES = {"conv": "conversation", "detailed": "detail", "detailed description": "detail",
                "description": "detail", "reasoning": "complex", "complex reasoning": "complex",
                "complex_reasoning": "complex"}
SYSTEMS = {"conversation": LLAVA_CONVERSATION_SYSTEM, "detail": LLAVA_DETAIL_SYSTEM, "complex": LLAVA_COMPLEX_SYSTEM}

# Our own seed examples, in the paper's format (tables 11-12: captions in, "Question:/===/Answer:" out).
_CAPS = ("A brown dog catches a red frisbee in a park.\nA dog leaping into the air on a grassy field.\n"
         "A man throws a frisbee for his dog on a sunny day.\nA dog jumping for a flying disc near some trees.\n"
         "Two people watch a dog play in a city park.")
_BOXES = ("dog: [0.412, 0.231, 0.655, 0.587]\nfrisbee: [0.561, 0.198, 0.642, 0.262]\n"
          "person: [0.052, 0.344, 0.218, 0.921]\nperson: [0.803, 0.402, 0.897, 0.866]\ntree: [0.0, 0.0, 0.274, 0.402]")
FEWSHOT: dict[str, list[tuple[str, str]]] = {
    "conversation": [(
        _CAPS,
        ("Question:\nWhat is the dog doing?\n===\nAnswer:\nThe dog is leaping into the air to catch a red frisbee "
         "on a grassy field.\n===\nQuestion:\nWhat colour is the frisbee?\n===\nAnswer:\nThe frisbee is red.\n===\n"
         "Question:\nHow many people are watching the dog?\n===\nAnswer:\nTwo people are watching the dog play.\n===\n"
         "Question:\nWhy is playing frisbee good for dogs?\n===\nAnswer:\nFrisbee combines running, jumping and "
         "catching, so it gives a dog intense exercise in a short time. It also trains coordination and focus, and "
         "because the owner throws the disc, it strengthens the bond between the dog and its owner."),
    )],
    "detail": [(
        f"{_CAPS}\n\n{_BOXES}",
        ("The image shows a sunny park where a brown dog is leaping high above the grass to catch a red frisbee. "
         "The dog is near the middle of the scene, and the frisbee is just above its head, slightly to the right. "
         "Two people stand on either side of the picture: one on the left edge and one on the right, both watching "
         "the dog. A tree fills the top left corner, giving the scene a green, leafy backdrop."),
    )],
    "complex": [(
        f"{_CAPS}\n\n{_BOXES}",
        ("Question:\nWhat should the people keep in mind to make this activity safe for the dog?\n===\nAnswer:\n"
         "The dog is jumping high to catch a frisbee in a park, with two people nearby. To keep it safe, they should "
         "throw the disc low and flat so the dog does not twist or land hard on its back legs, play on soft grass "
         "like this field rather than pavement, give the dog water and rest breaks on a sunny day, and keep enough "
         "distance from the tree and from other people so the dog cannot collide with them while looking up."),
    )],
}


def scene_boxes(scene: Scene) -> list[dict[str, Any]]:
    """Normalized [x1, y1, x2, y2] boxes of a scene's objects, from their cells, sizes and jitter."""
    out = []
    for o in scene.objects:
        frac = 0.94 if o.category == "word" else SIZES[o.size] if o.category == "shape" else THING_SIZE
        cx = (o.cell[1] + 0.5) / GRID + o.offset[0] / scene.image_size
        cy = (o.cell[0] + 0.5) / GRID + o.offset[1] / scene.image_size
        h = frac / GRID / 2
        box = [round(min(1.0, max(0.0, v)), 3) for v in (cx - h, cy - h, cx + h, cy + h)]
        out.append({"category": category(o), "bbox": box})
    return out


def category(o: SceneObject) -> str:
    return "sign" if o.category == "word" else f"{o.color} {o.name}" if o.category == "shape" else o.name


def context(item: Item) -> tuple[list[str], list[dict[str, Any]]]:
    """(captions, boxes) from the item's fields, or derived from its scene graph when it has one."""
    captions, boxes = item.fields.get("captions"), item.fields.get("boxes")
    if captions is None and "scene" in item.fields:
        from allava.scenes.teacher import caption, clip_caption

        scene = Scene.from_dict(item.fields["scene"])
        rng = random.Random(f"symbolic/{item.id}")
        captions = [clip_caption(scene).capitalize()] + [caption(scene, rng) for _ in range(4)]
        boxes = scene_boxes(scene) if boxes is None else boxes
    if isinstance(captions, str):
        captions = [captions]
    if not captions or not all(isinstance(c, str) for c in captions):
        raise SynthError(f"llava-symbolic needs fields['captions'] (a list of strings) for item {item.id!r}")
    return captions, list(boxes or [])


def box_lines(boxes: list[dict[str, Any]]) -> list[str]:
    lines = []
    for b in boxes:
        name = b.get("category") or b.get("label")
        bbox = b.get("bbox")
        if not name or not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise SynthError(f"llava-symbolic: bad box {b!r} (need category/label and bbox [x1, y1, x2, y2])")
        lines.append(f"{name}: [{', '.join(f'{float(v):.3f}' for v in bbox)}]")
    return lines


def query(kind: str, captions: list[str], boxes: list[dict[str, Any]]) -> str:
    """The user message: captions, then (except for conversations, table 10) the boxes."""
    text = "\n".join(c.strip() for c in captions)
    return text if kind == "conversation" or not boxes else text + "\n\n" + "\n".join(box_lines(boxes))


def messages(kind: str, captions: list[str], boxes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = [{"role": "system", "content": SYSTEMS[kind]}]
    for ctx, response in FEWSHOT[kind]:
        msgs += [{"role": "user", "content": ctx}, {"role": "assistant", "content": response}]
    return msgs + [{"role": "user", "content": query(kind, captions, boxes)}]


def parse(kind: str, raw: str) -> list[tuple[str, str]] | str:
    if kind == "detail":
        text = re.sub(r"^\s*(answer|description)\s*:\s*", "", raw.strip(), flags=re.IGNORECASE)
        if not text:
            raise ParseError("empty detailed description", raw)
        return text
    pairs = parse_turns(raw)
    if kind == "complex" and len(pairs) != 1:
        raise ParseError(f"complex reasoning needs exactly 1 question and answer, got {len(pairs)}", raw)
    return pairs


@register_task
class LlavaSymbolic(SynthTask):
    name = "llava-symbolic"
    requires = (("captions", "scene"),)
    prompt_version = "llava-symbolic/1"
    needs_image = False  # the teacher reads captions and boxes; the records still point at the image
    response_types: tuple[str, ...] = RESPONSE_TYPES

    def bind(self, out_dir: Any, args: Any = None) -> None:
        super().bind(out_dir, args)
        given = opt(args, "response_types", RESPONSE_TYPES)
        words = [w for g in ([given] if isinstance(given, str) else given) for w in str(g).split(",") if w.strip()]
        kinds = tuple(dict.fromkeys(TYPE_ALIASES.get(w.strip().lower(), w.strip().lower()) for w in words))
        bad = [k for k in kinds if k not in RESPONSE_TYPES]
        if bad or not kinds:
            raise ValueError(f"llava-symbolic: unknown response types {bad}; choose from {RESPONSE_TYPES}")
        self.response_types = kinds

    async def run(self, item: Item, teacher: Teacher) -> dict[str, Any]:
        captions, boxes = context(item)
        done: list[Completion] = []
        parsed: dict[str, Any] = {}
        for kind in self.response_types:
            try:
                c = await call(teacher, Request(messages(kind, captions, boxes), self.name, item, step=kind))
                parsed[kind] = parse(kind, c.text)
            except SynthError as e:
                e.reason = f"{kind}: {e.reason}"
                e.raw = [d.text for d in done] + ([e.raw] if isinstance(e.raw, str) else [])
                raise
            done.append(c)
        parsed["detail_instruction"] = pick(DETAILED_DESCRIPTION_INSTRUCTIONS, item.id)
        raw = [c.text for c in done]
        return output_line(self, item, done, parsed, raw)

    def to_llava(self, line: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        out, raws = line["output"], line["raw"]
        kinds = [k for k in out if k in RESPONSE_TYPES]  # in call order, like `raw`
        recs = []
        for kind, raw in zip(kinds, raws):
            turns = [(out["detail_instruction"], out[kind])] if kind == "detail" else [tuple(p) for p in out[kind]]
            rec = record(line, kind, turns, response_type=kind)
            rec["meta"]["raw"] = raw
            recs.append(rec)
        return {"instruction": recs}
