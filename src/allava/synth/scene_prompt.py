"""A small controlled prompt grammar, so the procedural renderer can play StableLLaVA's
text-to-image model: the LLM writes a keyword prompt, the renderer parses it into a scene graph.

    prompt     := clause ("," clause)*          clauses may be emphasised as ((clause))
    object     := [a|an|one..six|1..6] [small|large] [COLOUR] NOUN [LOCATION]
    LOCATION   := (in|at|on) the POSITION (and (in|at|on) the POSITION)*   POSITION: 3x3 cell, sky, ground
    sign       := (a sign reading|the word) "WORD" [LOCATION]
    background := plain background | outdoor scene (blue sky and green grass)
    style      := keywords such as "highly detailed, 4k, flat illustration" (ignored)

Objects without a location take free cells (sky things the top row, ground things the bottom
row, shapes in reading order). A ground thing above the ground, a sky thing on the ground or a
fish anywhere out of water is abnormal, as in the scene world. Anything else is refused with
SynthError, never guessed, so an image always shows exactly what its prompt (and dialogue) say.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from allava.scenes.abilities import a, where
from allava.scenes.graph import (
    COLORED_THINGS,
    COLORS,
    GRID,
    GROUND_THINGS,
    POSITION_NAMES,
    POSITIONS,
    SHAPES,
    SKY_THINGS,
    THINGS,
    Scene,
    SceneObject,
    plural,
)
from allava.synth.base import SynthError

COUNT_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
               **{str(i): i for i in range(1, 7)}}
SIZE_WORDS = {"small": "small", "tiny": "small", "large": "large", "big": "large"}
NOUNS = {**{n: n for n in (*SHAPES, *THINGS)}, **{plural(n): n for n in (*SHAPES, *THINGS)}}
POSITION_ALIASES = {"middle": "center", "centre": "center"}
REGIONS = ("sky", "ground")  # outdoor scenes: the top two rows, the bottom row
STYLE_WORDS = frozenset(
    ["highly", "detailed", "details", "detail", "intricate", "4k", "8k", "high", "resolution", "hd", "flat", "simple", "clean", "minimalist", "minimal", "illustration", "vector", "art", "sharp", "focus", "bright", "vibrant", "colors", "colours", "soft", "light", "lighting", "drawing", "style", "clear", "centered", "digital", "crisp", "edges", "geometric", "cartoon", "quality", "best", "masterpiece", "shapes", "scene"])
STYLE = "flat simple illustration, highly detailed, high resolution"

GRAMMAR = (
    "#Grammar (required: the image generator is a procedural renderer that only understands this)\n"
    "Write comma-separated clauses, each one of:\n"
    "- an object: '[a|an|one..six] [small|large] [colour] noun [in/at/on the position [and the position ...]]', "
    "e.g. 'a large red circle in the top left', 'two blue squares in the center and the bottom right';\n"
    "- a sign: 'a sign reading \"WORD\" at the bottom' (one short capitalised word);\n"
    "- the background: 'plain background' or 'outdoor scene';\n"
    "- style keywords (ignored): highly detailed, 4k, flat illustration.\n"
    f"Colours: {', '.join(COLORS)}. Shapes (plain background): {', '.join(SHAPES)}. "
    f"Things (outdoor scene, the bottom row is the ground, the rest is sky): {', '.join(THINGS)}. "
    f"Positions on a 3x3 grid: {', '.join(POSITION_NAMES)}; outdoors also 'in the sky', 'on the ground'. At most nine objects, one per position. "
    "Emphasise the most important clause with double brackets, e.g. ((a red car in the sky))."
)

_OBJECT = re.compile(
    rf"^(?:(?P<count>{'|'.join(COUNT_WORDS)})\s+)?(?:(?P<size>{'|'.join(SIZE_WORDS)})\s+)?"
    rf"(?:(?P<color>{'|'.join(COLORS)})\s+)?(?:(?P<size2>{'|'.join(SIZE_WORDS)})\s+)?"
    rf"(?P<noun>{'|'.join(sorted(NOUNS, key=len, reverse=True))})(?:\s+(?P<loc>.+))?$")
_SIGN = re.compile(r'^(?:(?:a|the)\s+)?(?:sign\s+(?:reading|that\s+says|with\s+the\s+word)|word)\s+'
                   r'"(?P<text>[A-Za-z]{1,10})"(?:\s+(?P<loc>.+))?$', re.IGNORECASE)


@dataclass
class _Spec:
    category: str
    name: str
    color: str | None = None
    size: str = "large"
    text: str | None = None
    position: str | None = None


def _positions(loc: str | None, clause: str) -> list[str]:
    if not loc:
        return []
    out = []
    for part in re.split(r"\s*(?:,|\band\b)\s*", loc.strip()):
        p = re.sub(r"^(?:(?:in|at|on|to)\s+)?(?:the\s+)?", "", part.strip())
        p = re.sub(r"\s+(?:corner|side|edge|of the (?:image|picture|sky))$", "", p)
        p = POSITION_ALIASES.get(p, p)
        if p not in POSITION_NAMES and p not in REGIONS:
            raise SynthError(f"procedural renderer could not parse prompt: unknown position {part!r} in {clause!r}")
        out.append(p)
    return out


def _clause(raw: str) -> tuple[str, list[_Spec]]:
    """('object'|'background'|'style', specs) for one clause, or SynthError."""
    text = re.sub(r"[()\[\]{}]|:\d+(?:\.\d+)?", " ", raw)
    quoted = re.search(r'"[^"]*"', text)
    text = re.sub(r"\s+", " ", text).strip()
    low = text.lower() if quoted is None else text[:quoted.start()].lower() + text[quoted.start():]
    low = low.rstrip(".")
    m = _SIGN.match(low)
    if m:
        pos = _positions(m.group("loc"), raw)
        if len(pos) > 1:
            raise SynthError(f"procedural renderer could not parse prompt: a sign has one position ({raw!r})")
        return "object", [_Spec("word", "word", "black", text=m.group("text").upper(), position=(pos or [None])[0])]
    m = _OBJECT.match(low)
    if m:
        n = COUNT_WORDS[m.group("count")] if m.group("count") else 1
        name = NOUNS[m.group("noun")]
        if (m.group("noun") != name) != (n > 1) and name not in ("fish",):
            raise SynthError(f"procedural renderer could not parse prompt: number and noun disagree in {raw!r}")
        pos = _positions(m.group("loc"), raw)
        if len(pos) > n:
            raise SynthError(f"procedural renderer could not parse prompt: {len(pos)} positions for {n} in {raw!r}")
        size = SIZE_WORDS[m.group("size") or m.group("size2") or "large"]
        color = m.group("color")
        category = "shape" if name in SHAPES else "thing"
        if category == "thing" and name not in COLORED_THINGS:
            color = None  # trees, suns, ... have fixed colours in the renderer
        return "object", [_Spec(category, name, color, size, position=pos[i] if i < len(pos) else None)
                          for i in range(n)]
    if "background" in low or low in ("outdoor scene", "outdoors", "outdoor") or re.fullmatch(
            r"(?:(?:blue|light blue)\s+)?sky(?:\s+and\s+(?:green\s+)?grass)?|(?:green\s+)?grass", low):
        if "plain" in low or "white" in low or "grey" in low or "gray" in low:
            return "plain", []
        if "outdoor" in low or "sky" in low or "grass" in low:
            return "outdoor", []
    if low and all(w in STYLE_WORDS for w in re.split(r"[\s-]+", low)):
        return "style", []
    raise SynthError(f"procedural renderer could not parse prompt: {raw.strip()!r} is not an object, sign, "
                     "background or style clause")


def _cell(position: str) -> tuple[int, int]:
    i = POSITION_NAMES.index(position)
    return divmod(i, GRID)


def _abnormal(spec: _Spec, cell: tuple[int, int]) -> bool:
    ground = cell[0] == GRID - 1
    return spec.category == "thing" and (spec.name == "fish" or (spec.name in GROUND_THINGS) != ground)


def _default_cells(spec: _Spec, free: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Where an unplaced object goes: things where they belong, everything else in reading order."""
    if spec.category == "thing" and spec.name in SKY_THINGS:
        return [c for c in free if c[0] == 0] + [c for c in free if c[0] != 0]
    if spec.category == "thing" and spec.name in GROUND_THINGS:
        return [c for c in free if c[0] == GRID - 1] + [c for c in free if c[0] != GRID - 1]
    return free


def prompt_to_scene(prompt: str, image_size: int = 96, seed: int | None = None) -> Scene:
    """Parse a prompt of the grammar above into a Scene (no jitter, no tint: the prompt is all there is)."""
    if not prompt or not prompt.strip():
        raise SynthError("procedural renderer could not parse prompt: empty prompt")
    specs: list[_Spec] = []
    background = None
    for raw in prompt.replace("\n", ",").split(","):
        if not raw.strip():
            continue
        kind, found = _clause(raw)
        if kind in ("plain", "outdoor"):
            background = kind
        specs += found
    if not specs:
        raise SynthError(f"procedural renderer could not parse prompt: no object in {prompt!r}")
    if len(specs) > GRID * GRID:
        raise SynthError(f"procedural renderer could not parse prompt: {len(specs)} objects (at most {GRID * GRID})")
    if sum(s.category == "word" for s in specs) > 1:
        raise SynthError("procedural renderer could not parse prompt: more than one sign")
    taken: dict[tuple[int, int], _Spec] = {}
    for s in specs:
        if s.position in POSITION_NAMES:
            cell = _cell(s.position)
            if cell in taken:
                raise SynthError(f"procedural renderer could not parse prompt: two objects {where(s.position)}")
            taken[cell] = s
    for s in specs:
        if s.position not in POSITION_NAMES:
            free = [divmod(i, GRID) for i in range(GRID * GRID) if divmod(i, GRID) not in taken]
            if s.position == "sky":
                free = [c for c in free if c[0] < GRID - 1]
            elif s.position == "ground":
                free = [c for c in free if c[0] == GRID - 1]
            if not free:
                raise SynthError(f"procedural renderer could not parse prompt: no free cell {where(s.position or '')}")
            cell = _default_cells(s, free)[0]
            s.position = POSITIONS[cell[0]][cell[1]]
            taken[cell] = s
    if background is None:
        background = "outdoor" if any(s.category == "thing" for s in specs) else "plain"
    objs = tuple(sorted((SceneObject(s.category, s.name, _cell(s.position or "center"), color=s.color,
                                     size=s.size if s.category == "shape" else "large", text=s.text,
                                     abnormal=background == "outdoor" and _abnormal(s, _cell(s.position or "center")))
                         for s in specs), key=lambda o: o.cell))
    if background == "outdoor":
        kind = "abnormal" if any(o.abnormal for o in objs) else "objects"
    else:
        kind = "shapes_word" if any(o.category == "word" for o in objs) else "shapes"
    if seed is None:
        seed = zlib.crc32(prompt.encode("utf-8"))
    return Scene(seed, kind, image_size, background, (0, 0, 0), objs)


def object_clause(o: SceneObject) -> str:
    """The grammar clause for one object: 'a large red circle in the top left'."""
    if o.category == "word":
        return f'a sign reading "{o.text}" {where(o.position)}'
    words = [o.size if o.category == "shape" else "", o.color or "", o.name]
    return f"{a(' '.join(w for w in words if w))} {where(o.position)}"


def scene_to_prompt(scene: Scene, focus: list[SceneObject] | None = None) -> str:
    """A grammar prompt for a scene: focus objects first in ((double brackets)), as StableLLaVA asks."""
    focus = [o for o in (focus or []) if o in scene.objects]
    rest = [o for o in scene.objects if o not in focus]
    clauses = [f"(({object_clause(o)}))" for o in focus] + [object_clause(o) for o in rest]
    background = "outdoor scene" if scene.background == "outdoor" else "plain background"
    return ", ".join(clauses + [background, STYLE])
