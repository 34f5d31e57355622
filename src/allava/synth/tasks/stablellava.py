"""`stablellava`: StableLLaVA section 4. Per ability, the LLM writes a text-to-image prompt
(step "image-prompt"), an image generator renders it to OUT/images/<id>.png, and the LLM writes a
dialogue from the same prompt (step "dialogue") without seeing the image.

The image generator is chosen at `bind(out_dir, args)` (args.imagegen: "scenes" by default, or
"diffusers" with args.imagegen_model); with the procedural backend the image-prompt request
carries the renderer's grammar, so any teacher can drive it.
"""
from __future__ import annotations

import dataclasses
import re
import zlib
from typing import Any

from allava.scenes.abilities import ABILITIES
from allava.scenes.graph import COLORS, POSITION_NAMES, SHAPES, THINGS, WORDS
from allava.synth.base import (
    Item,
    ParseError,
    Request,
    SynthError,
    Teacher,
    output_line,
    register_task,
)
from allava.synth.imagegen import ImageGenerator, build_generator
from allava.synth.prompts import STABLELLAVA_DIALOGUE_PROMPT, STABLELLAVA_IMAGE_PROMPT
from allava.synth.tasks.common import SynthTask, call, opt, parse_turns, record, user

# StableLLaVA's ability names (section 5.1, figure 6) -> our ability registry.
ALIASES = {"colour": "color", "colors": "color", "counting": "count", "number": "count", "animals": "object",
           "objects": "object", "plants": "object", "vehicles": "object", "abnormality": "abnormal",
           "abnormal scenes": "abnormal", "joke": "abnormal", "text": "ocr", "spatial": "position",
           "location": "position", "shapes": "shape"}


@dataclasses.dataclass(frozen=True)
class Hint:
    """The red, ability-specific parts of StableLLaVA's figure 4 templates."""

    keywords: str
    cautions: str
    example: str


def _hint(name: str) -> Hint:
    colours, things, shapes = ", ".join(COLORS), ", ".join(THINGS), ", ".join(SHAPES)
    hints = {
        "color": Hint(colours, "Give every object an explicit colour.",
                      "((a large red circle in the center)), a small blue square in the top left, plain background"),
        "count": Hint("one, two, three, four, five, six, " + shapes,
                      "State how many objects of each kind there are, at most six of a kind.",
                      "((three small green stars in the top left and the top and the top right)), plain background"),
        "object": Hint(things, "Name each object plainly; place sky things in the sky and ground things on the ground.",
                       "((a tree at the bottom)), a cloud in the top left, outdoor scene, highly detailed"),
        "abnormal": Hint(things + ", in the sky, on the ground",
                         "Create an image with something abnormal or unlikely in reality, such as an object where it "
                         "never belongs, and say where it is; everything else must look normal.",
                         "((a red car in the sky)), a tree at the bottom left, outdoor scene, highly detailed"),
        "position": Hint(", ".join(POSITION_NAMES), "State where each object is in the image.",
                         "((a large yellow square in the bottom right)), a small red cross in the top left, "
                         "plain background"),
        "ocr": Hint(", ".join(WORDS), "Include exactly one sign showing one short word in double quotes.",
                    '((a sign reading "STOP" in the center)), a blue circle in the top left, plain background'),
        "shape": Hint(shapes, "Give every shape a distinct colour so it can be referred to.",
                      "((a large purple triangle in the center)), a small orange circle on the left, plain background"),
        "size": Hint("small, large, " + shapes, "Make exactly one shape large and the others small (or the reverse).",
                     "((a large green square in the center)), a small red circle in the top left, a small blue star "
                     "on the right, plain background"),
        "relation": Hint(", ".join(POSITION_NAMES), "Place shapes in neighbouring positions (left, right, above, below).",
                         "((a large red circle in the center)), a small blue square on the left, plain background"),
        "odd_one_out": Hint(shapes, "Draw several shapes of one kind and exactly one shape of another kind.",
                            "((a red star in the center)), a red circle in the top left, a red circle in the top "
                            "right, a red circle at the bottom, plain background"),
    }
    return hints.get(name, Hint(", ".join([*SHAPES, *THINGS]), "", hints["color"].example))


DIALOGUE_EXAMPLE = (
    "Prompt: ((a red car in the sky)), a tree at the bottom left, outdoor scene, highly detailed\n"
    "Question: What is unusual in this image?\n"
    "Response: A red car is floating in the sky, which is impossible because cars drive on roads.\n"
    "Question: Is there a tree in the image?\n"
    "Response: Yes, there is a tree in the bottom left of the image, standing on the grass."
)


def resolve_ability(name: Any) -> str:
    """Our registry name for an ability given by us or by StableLLaVA's wording."""
    if not isinstance(name, str) or not name.strip():
        raise SynthError("stablellava needs fields['ability']")
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in ABILITIES:
        raise SynthError(f"unknown ability {name!r}; choose from {sorted(ABILITIES)} (or {sorted(ALIASES)})")
    return key


def image_prompt_request(ability: str, generator: ImageGenerator) -> str:
    hint = _hint(ability)
    return STABLELLAVA_IMAGE_PROMPT.format(ability=ability.replace("_", " "), cautions=hint.cautions, grammar=generator.grammar,
                                           keywords=hint.keywords, examples=f"Prompt: {hint.example}")


def dialogue_request(ability: str, prompt: str, turns: int = 3) -> str:
    return STABLELLAVA_DIALOGUE_PROMPT.format(ability=ability.replace("_", " "), turns=turns, cautions=_hint(ability).cautions,
                                              examples=DIALOGUE_EXAMPLE, prompt=prompt)


def parse_image_prompt(raw: str) -> str:
    """The 'Prompt:' line (or a lone line); quotes and a trailing period removed."""
    m = re.search(r"^\s*\**prompt\**\s*:\s*(.+)$", raw, flags=re.IGNORECASE | re.MULTILINE)
    lines = [ln.strip() for ln in raw.strip().splitlines() if ln.strip()]
    if m:
        text = m.group(1)
    elif len(lines) == 1:
        text = lines[0]
    else:
        raise ParseError("missing 'Prompt:' line in the image prompt", raw)
    text = text.strip().strip('"\'`').rstrip(".").strip()
    if not text:
        raise ParseError("empty image prompt", raw)
    return text


def parse_dialogue(raw: str) -> list[tuple[str, str]]:
    """Question/Response pairs after the echoed prompt."""
    start = re.search(r"^\s*\**question\**\s*:", raw, flags=re.IGNORECASE | re.MULTILINE)
    if start is None:
        raise ParseError("no 'Question:' in the dialogue", raw)
    return parse_turns(raw[start.start():])


def image_name(item_id: str) -> str:
    """A safe, unique file name for an id (ids may hold '/' or spaces)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", item_id)
    return safe if safe == item_id else f"{safe}-{zlib.crc32(item_id.encode('utf-8')):08x}"


@register_task
class StableLlava(SynthTask):
    name = "stablellava"
    requires = (("ability",),)
    prompt_version = "stablellava/1"
    needs_image = False  # it makes its own
    generator: ImageGenerator | None = None
    turns = 3

    def bind(self, out_dir: Any, args: Any = None) -> None:
        super().bind(out_dir, args)
        self.generator = build_generator(opt(args, "imagegen", "scenes"), model=opt(args, "imagegen_model", None),
                                         image_size=opt(args, "image_size", None),
                                         steps=opt(args, "imagegen_steps", None),
                                         guidance=opt(args, "imagegen_guidance", None))
        self.turns = int(opt(args, "dialogue_turns", 3))

    async def run(self, item: Item, teacher: Teacher) -> dict[str, Any]:
        if self.out_dir is None or self.generator is None:
            raise SynthError("stablellava needs an output folder: the engine must call task.bind(out_dir, args)")
        ability = resolve_ability(item.fields.get("ability"))
        first = await call(teacher, Request([user(image_prompt_request(ability, self.generator))], self.name, item,
                                            step="image-prompt"))
        prompt = parse_image_prompt(first.text)
        rel = f"images/{image_name(item.id)}.png"
        seed = zlib.crc32(item.id.encode("utf-8"))
        try:
            await self.generator.asave(prompt, self.out_dir / rel, seed)
        except SynthError as e:
            raise SynthError(e.reason, first.text) from e
        try:
            second = await call(teacher, Request([user(dialogue_request(ability, prompt, self.turns))], self.name,
                                                 item, step="dialogue"))
            pairs = parse_dialogue(second.text)
        except SynthError as e:
            e.raw = [first.text] + ([e.raw] if isinstance(e.raw, str) else [])
            raise
        made = dataclasses.replace(item, image=rel, image_root=self.out_dir)
        parsed = {"ability": ability, "image_prompt": prompt, "generator": self.generator.name, "seed": seed,
                  "conversations": [list(p) for p in pairs]}
        return output_line(self, made, [first, second], parsed, [first.text, second.text])

    def to_llava(self, line: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        out = line["output"]
        return {"instruction": [record(line, "dialogue", [tuple(p) for p in out["conversations"]],
                                       ability=out["ability"], image_prompt=out["image_prompt"],
                                       generator=out["generator"])]}
