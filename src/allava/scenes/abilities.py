"""Abilities: short-answer VQA generators over scene graphs (StableLLaVA's per-ability data).

Each ability is a function `(scene, rng) -> list[QA]` registered with a fixed answer space,
so the benchmark can report accuracy against chance (1 / len(answer_space)) per ability.
Questions are only asked when the referent is unambiguous; otherwise the ability returns [].
Add your own with `@register("name", answer_space=[...])`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from operator import attrgetter
from typing import Callable

from allava.scenes.graph import COLORS, POSITION_NAMES, SHAPES, THINGS, WORDS, Scene, SceneObject, plural

SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."
COUNTS = tuple(str(i) for i in range(1, 7))


@dataclass(frozen=True)
class QA:
    """A question with its short answer; `reason` is the evidence the teacher cites in long answers."""

    ability: str
    question: str
    answer: str
    reason: str = ""


AbilityFn = Callable[[Scene, random.Random], list[QA]]


@dataclass(frozen=True)
class Ability:
    name: str
    fn: AbilityFn
    answer_space: tuple[str, ...]
    description: str = ""

    @property
    def chance(self) -> float:
        return 1.0 / len(self.answer_space)


ABILITIES: dict[str, Ability] = {}


def register(name: str, answer_space: list[str] | tuple[str, ...], description: str = "") -> Callable[[AbilityFn], AbilityFn]:
    """Decorator adding an ability to the registry. Answer spaces need >= 4 options so 2x chance is attainable."""
    space = tuple(answer_space)
    if len(space) < 4 or len(set(space)) != len(space):
        raise ValueError(f"ability {name!r}: answer space needs >= 4 distinct options")

    def deco(fn: AbilityFn) -> AbilityFn:
        ABILITIES[name] = Ability(name, fn, space, description or (fn.__doc__ or "").strip())
        return fn

    return deco


def ask(scene: Scene, rng: random.Random, names: list[str] | None = None) -> dict[str, list[QA]]:
    """All applicable QAs per ability (abilities that do not apply are left out)."""
    out = {}
    for name in list(ABILITIES) if names is None else names:
        qas = ABILITIES[name].fn(scene, rng)
        for qa in qas:
            if qa.answer not in ABILITIES[name].answer_space:
                raise ValueError(f"{name}: answer {qa.answer!r} outside its answer space")
        if qas:
            out[name] = qas
    return out


# ---------------------------------------------------------------- phrasing helpers

def where(position: str) -> str:
    """'top left' -> 'in the top left'; 'top' -> 'at the top'; 'left' -> 'on the left'."""
    if position == "center":
        return "in the center"
    if position in ("left", "right"):
        return f"on the {position}"
    if position in ("top", "bottom"):
        return f"at the {position}"
    return f"in the {position}"


def phrase(obj: SceneObject) -> str:
    """Noun phrase without article: 'large red circle', 'blue car', 'tree', 'sign reading "STOP"'."""
    if obj.category == "word":
        return f'sign reading "{obj.text}"'
    parts = [obj.size if obj.category == "shape" else "", obj.color or "", obj.name]
    return " ".join(p for p in parts if p)


def a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


# Referring expressions from simplest to most specific; "name" absent means "object".
_REFERENCES = (("name",), ("color", "name"), ("size", "name"), ("size", "color", "name"), ("color",), ("size", "color"))
_GETTERS = {keys: attrgetter(*keys) for keys in _REFERENCES}


def refer(obj: SceneObject, pool: list[SceneObject], avoid: tuple[str, ...] = ()) -> str | None:
    """Shortest description that singles `obj` out of `pool` without using `avoid` attributes."""
    for keys in _REFERENCES:
        if any(k in avoid for k in keys) or (obj.category != "shape" and "size" in keys):
            continue
        if any(getattr(obj, k) is None for k in keys):
            continue
        get = _GETTERS[keys]
        if [get(o) for o in pool].count(get(obj)) == 1:
            words = [getattr(obj, k) for k in ("size", "color", "name") if k in keys]
            if "name" not in keys:
                words.append("object")
            return " ".join(words)
    return None


def _pick(rng: random.Random, templates: tuple[str, ...], **kw: str) -> str:
    return rng.choice(templates).format(**kw)


def _listing(objs: list[SceneObject]) -> str:
    items = [f"{a(phrase(o))} {where(o.position)}" for o in objs]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# ---------------------------------------------------------------- abilities

@register("color", list(COLORS), "Name the colour of a uniquely described shape or object.")
def color_qa(scene: Scene, rng: random.Random) -> list[QA]:
    pool = scene.items
    out = []
    for o in pool:
        ref = refer(o, pool, avoid=("color",)) if o.color else None
        if ref:
            q = _pick(rng, ("What colour is the {r}?", "What is the colour of the {r}?", "Which colour does the {r} have?",
                            "What color is the {r}?"), r=ref)
            out.append(QA("color", q, o.color, f"The {ref} {where(o.position)} is {o.color}."))
    return out


@register("shape", list(SHAPES), "Name the shape of a shape described by colour (and size).")
def shape_qa(scene: Scene, rng: random.Random) -> list[QA]:
    pool = scene.shapes
    out = []
    for o in pool:
        ref = refer(o, pool, avoid=("name",))
        if ref:
            q = _pick(rng, ("What shape is the {r}?", "What is the shape of the {r}?", "Which shape is the {r}?",
                            "The {r} has what shape?"), r=ref)
            out.append(QA("shape", q, o.name, f"The {ref} {where(o.position)} is {a(o.name)}."))
    return out


@register("count", list(COUNTS), "Count all objects, or those of one kind or colour.")
def count_qa(scene: Scene, rng: random.Random) -> list[QA]:
    items = scene.items
    noun = "shape" if scene.background == "plain" else "object"
    groups: list[tuple[str, list[SceneObject]]] = [(noun, items)]
    for name in sorted({o.name for o in items}):
        groups.append((name, [o for o in items if o.name == name]))
    if scene.background == "plain":
        for color in sorted({o.color for o in items if o.color}):
            groups.append((f"{color} shape", [o for o in items if o.color == color]))
    out = []
    for what, objs in groups:
        n = len(objs)
        if not 1 <= n <= len(COUNTS):
            continue
        many = " ".join(what.split()[:-1] + [plural(what.split()[-1])])
        q = _pick(rng, ("How many {w} are there?", "How many {w} are in the image?", "Count the {w} in the picture.",
                        "What is the number of {w} in the image?"), w=many)
        verb, noun_n = ("is", what) if n == 1 else ("are", many)
        if what == noun:
            reason = f"Counting every {noun} one by one, I find {n} {noun_n}."
        else:
            reason = f"I can see {_listing(objs)}, so there {verb} {n} {noun_n}."
        out.append(QA("count", q, str(n), reason))
    return out


@register("position", list(POSITION_NAMES), "Locate a uniquely described object on the 3x3 grid.")
def position_qa(scene: Scene, rng: random.Random) -> list[QA]:
    pool = scene.items
    out = []
    for o in pool:
        ref = refer(o, pool)
        if ref:
            q = _pick(rng, ("Where is the {r}?", "Where is the {r} located?", "In which part of the image is the {r}?",
                            "Where in the picture can you find the {r}?"), r=ref)
            out.append(QA("position", q, o.position, f"The {ref} is {where(o.position)} of the image."))
    if scene.word:
        w = scene.word
        q = _pick(rng, ('Where is the word "{t}" written?', 'Where is the sign that says "{t}"?',
                        'In which part of the image is the word "{t}"?'), t=w.text or "")
        out.append(QA("position", q, w.position, f'The sign reading "{w.text}" is {where(w.position)} of the image.'))
    return out


_DIRS = {"left of": (0, -1), "right of": (0, 1), "above": (-1, 0), "below": (1, 0)}


@register("relation", list(COLORS), "Colour of the shape directly left/right/above/below an anchor shape.")
def relation_qa(scene: Scene, rng: random.Random) -> list[QA]:
    pool = scene.shapes
    out = []
    for anchor in pool:
        ref = refer(anchor, pool)
        if not ref:
            continue
        for rel, (dr, dc) in _DIRS.items():
            nb = scene.at(anchor.cell[0] + dr, anchor.cell[1] + dc)
            if nb is None or nb.category != "shape":
                continue
            rel_txt = "to the " + rel if rel in ("left of", "right of") else rel
            q = _pick(rng, ("What colour is the shape directly {d} the {r}?", "Which colour does the shape directly {d} the {r} have?",
                            "What is the colour of the shape immediately {d} the {r}?"), d=rel_txt, r=ref)
            reason = f"The {ref} is {where(anchor.position)}; directly {rel_txt} it, {where(nb.position)}, is {a(phrase(nb))}."
            out.append(QA("relation", q, nb.color or "", reason))
    return out


@register("size", list(COLORS), "Colour of the only large (or only small) shape.")
def size_qa(scene: Scene, rng: random.Random) -> list[QA]:
    pool = scene.shapes
    if len(pool) < 2:
        return []
    out = []
    for size, sup in (("large", ("largest", "biggest")), ("small", ("smallest", "tiniest"))):
        same = [o for o in pool if o.size == size]
        if len(same) == 1:
            o = same[0]
            q = _pick(rng, ("What colour is the {s} shape?", "What is the colour of the {s} shape in the image?",
                            "Which colour does the {s} shape have?"), s=rng.choice(sup))
            other = "small" if size == "large" else "large"
            rest = f"the other one is {other}" if len(pool) == 2 else f"the other {len(pool) - 1} are {other}"
            reason = f"Among the {len(pool)} shapes, only the {phrase(o)} {where(o.position)} is {size}; {rest}."
            out.append(QA("size", q, o.color or "", reason))
    return out


@register("ocr", [w.lower() for w in WORDS], "Read the printed word.")
def ocr_qa(scene: Scene, rng: random.Random) -> list[QA]:
    w = scene.word
    if w is None or not w.text:
        return []
    q = rng.choice(("What word is written in the image?", "What does the sign say?", "Read the text in the image.",
                    "Which word is printed on the sign?"))
    return [QA("ocr", q, w.text.lower(), f'A white sign {where(w.position)} shows the word "{w.text}" in black capital letters.')]


@register("odd_one_out", list(SHAPES), "Shape of the one shape that differs from all the others.")
def odd_one_out_qa(scene: Scene, rng: random.Random) -> list[QA]:
    pool = scene.shapes
    if len(pool) < 3:
        return []
    names = [o.name for o in pool]
    odd = [o for o in pool if names.count(o.name) == 1]
    if len(odd) != 1 or len(set(names)) != 2:
        return []
    o = odd[0]
    common = next(n for n in names if n != o.name)
    q = rng.choice(("Which shape is the odd one out?", "One shape is different from the others. Which shape is it?",
                    "Which kind of shape does not belong with the rest?", "What shape is the odd one out?"))
    reason = f"{len(pool) - 1} of the {len(pool)} shapes are {plural(common)}, but the one {where(o.position)} is {a(o.name)}."
    return [QA("odd_one_out", q, o.name, reason)]


@register("object", list(THINGS), "Name the object in the sky, on the ground, or at a grid position.")
def object_qa(scene: Scene, rng: random.Random) -> list[QA]:
    pool = scene.things
    out = []
    for region, txt in (("sky", "in the sky"), ("ground", "on the ground")):
        here = [o for o in pool if o.region == region]
        if len(here) == 1:
            q = _pick(rng, ("What object is {t}?", "What can be seen {t}?", "Which object is {t}?"), t=txt)
            out.append(QA("object", q, here[0].name, f"The only object {txt} is {a(phrase(here[0]))} {where(here[0].position)}."))
    for o in pool:
        q = _pick(rng, ("What is the object {p}?", "What object is {p} of the image?", "What can you see {p}?"),
                  p=where(o.position))
        out.append(QA("object", q, o.name, f"{where(o.position).capitalize()} there is {a(phrase(o))}."))
    return out


WHY_ABNORMAL = {
    "tree": "trees grow from the ground, so a tree floating in the sky is impossible",
    "house": "houses stand on the ground, so a house up in the sky is strange",
    "car": "cars drive on roads, so a car flying in the sky is unusual",
    "flower": "flowers grow in the soil, so a flower floating in the sky is odd",
    "sun": "the sun belongs high in the sky, so a sun sitting on the ground is impossible",
    "cloud": "clouds float in the sky, so a cloud resting on the ground is strange",
    "fish": "fish live in water, so a fish out of the water is unusual",
}


@register("abnormal", list(THINGS), "Name the out-of-place object (StableLLaVA's abnormal scenes).")
def abnormal_qa(scene: Scene, rng: random.Random) -> list[QA]:
    o = scene.abnormal
    if o is None:
        return []
    q = rng.choice(("What is unusual in this image?", "What stands out as abnormal in this image?",
                    "Which object is out of place in this picture?", "What is strange about this scene?"))
    place = "in the sky" if o.region == "sky" else "on the ground"
    return [QA("abnormal", q, o.name, f"There is {a(phrase(o))} {place} {where(o.position)}; {WHY_ABNORMAL[o.name]}.")]
