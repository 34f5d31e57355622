"""Check what an answer claims about a scene against its scene graph: the offline judge.

The review judges correctness (principle 2) by asking an MLLM whether an answer fits its image.
Offline, the scene graph the data was written from is the ground truth, so a judge can read the
answer and compare: objects (with size / colour) named at grid positions or in the sky / on the
ground, counts, printed words, the background, whether the scene is called normal, and the final
short answer against the scene's own answer to the question. Every contradiction is returned as a
readable problem. A sentence it cannot read is not judged: flagging unknown phrasing would remove
all free-form data, and this judge must never call clean scene data wrong.
"""
from __future__ import annotations

import dataclasses
import itertools
import random
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from allava.scenes.abilities import ABILITIES, QA, SHORT_ANSWER_PROMPT, ask, where
from allava.scenes.graph import COLORS, POSITION_NAMES, SHAPES, THINGS, Scene, SceneObject
from allava.scenes.teacher import NUM_WORDS, background_phrase

INDEX_DRAWS = 48  # the sampling fallback (an ability that draws more than `rng.choice`): 48 draws per scene
# Scenes whose question tables stay cached. A QC run looks each scene up once per record, in data order
# (shuffled: the quickstart's 25K short-VQA records revisit an image after ~1,200 others), so the cache
# must hold every scene of the run or each record pays the ~20 ms enumeration again (the 1,024 it had
# missed on most records of 25K). Tables share their strings and answer sets (`shared`), ~4 KB a scene
# with both tables, so 32,768 scenes (a 100K-record run of the quickstart world needs ~25K) are ~250 MB
# at most, keys included; `scene_questions` itself (~14 KB a scene) is only needed to build them.
SCENE_CACHE = 32_768
QUESTIONS_CACHE = 256
_SHARED: dict = {}
_SHARED_MAX = 200_000  # distinct answer sets / question keys across scenes: a few thousand in the world
_NAMES = "|".join(sorted(SHAPES + THINGS, key=len, reverse=True))
_COLORS = "|".join(COLORS)
_NP = rf"(?:(small|large) )?(?:({_COLORS}) )?({_NAMES}|shape|object)"
_NPS = rf"(?:(small|large) )?(?:({_COLORS}) )?({_NAMES}|shape|object)(?:e?s)?"  # singular or plural
_POSITIONS = {where(p): p for p in POSITION_NAMES}
_POS = "(" + "|".join(sorted(map(re.escape, _POSITIONS), key=len, reverse=True)) + ")"
_REGION = r"(in the sky|on the ground)"
_NUM = "|".join(NUM_WORDS) + r"|\d+"
# "a large red circle in the top left", "the sun sits in the top right", "the red object is on the left of"
_AT = re.compile(rf"\b(?:a|an|the) {_NP}(?: {_REGION})? (?:is |sits |can be seen |is located )?{_POS}")
# "in the top left, there is a cloud", "at the top there is a sun", "..., at the top, is a blue star"
_THERE = re.compile(rf"{_POS},? (?:there is |is )(?:a|an|the) {_NP}\b")
# "the circle in the top left is blue", "only the large red star in the center is large"
_ATTR = re.compile(rf"\b(?:a|an|the) {_NP} {_POS} is ({_COLORS}|small|large)\b(?! ?(?:{_NAMES}|shape|object))")
_IN_REGION = re.compile(rf"\b(?:a|an|the) {_NP} (?:is )?{_REGION}")
_ONLY_IN = re.compile(rf"\bthe only object {_REGION} is (?:a|an) {_NP}\b")
_MENTION = re.compile(rf"\b(?:a|an|the) {_NP}\b")
# a total ("three shapes", "there is 1 cloud"), not a subject ("one shape is different", "2 circles are red")
_COUNT = re.compile(rf"\b({_NUM}) {_NPS}\b(?! (?:is|are|looks?|seems?|differs?|stands?)\b)")
# "the one in the top left is a square": a cell holds one object, so "the five in the top left" is wrong
_N_AT = re.compile(rf"\bthe ({_NUM}) {_POS}")
_OF_ARE = re.compile(rf"\b({_NUM}) of the ({_NUM}) (?:shapes|objects) are ({_NAMES})(?:e?s)?\b")
_SPEC = re.compile(rf"^- {_NP}: ({'|'.join(POSITION_NAMES)})$", re.MULTILINE)  # "- large red circle: top left"
_SIGN_AT = re.compile(rf'\bsign (?:reading "([a-z]+)" )?(?:is )?{_POS}')
_QUOTED = re.compile(r'"([A-Za-z]{2,})"')
_FINAL = re.compile(r"\bthe (?:final )?answer is:? \**([^.!\n*]+)", re.IGNORECASE)
_BACKGROUNDS = ("a light blue sky above a strip of green grass", "a plain light grey background",
                "a plain, very pale pink background", "a plain, very pale green background",
                "a plain, very pale blue background")


@dataclass(frozen=True)
class Ref:
    """An object as a text names it; None = not stated ("shape" / "object" name any item)."""

    size: str | None
    color: str | None
    name: str | None

    def fits(self, o: SceneObject) -> bool:
        return (o.category != "word" and (self.name is None or o.name == self.name)
                and (self.color is None or o.color == self.color) and (self.size is None or o.size == self.size))

    def __str__(self) -> str:
        return " ".join(w for w in (self.size, self.color, self.name or "object") if w)


def _ref(size: str | None, color: str | None, name: str) -> Ref:
    return Ref(size, color, None if name in ("shape", "object") else name)


def _num(text: str) -> int:
    return int(text) if text.isdigit() else NUM_WORDS.index(text)


def check_text(scene: Scene, text: str) -> list[str]:
    """Every claim of `text` (an answer, not a question) that the scene graph contradicts."""
    low = " ".join(text.lower().split())
    items = scene.items
    bad: list[str] = []
    for m in _AT.finditer(low):
        ref, region, pos = _ref(*m.group(1, 2, 3)), m.group(4), _POSITIONS[m.group(5)]
        if not any(ref.fits(o) and o.position == pos for o in items):
            bad.append(f"no {ref} {where(pos)}")
        elif region and not any(ref.fits(o) and o.position == pos and _region(o) == region for o in items):
            bad.append(f"the {ref} {where(pos)} is not {region}")
    for m in _SPEC.finditer(text.lower()):
        ref, pos = _ref(*m.group(1, 2, 3)), m.group(4)
        if not any(ref.fits(o) and o.position == pos for o in items):
            bad.append(f"no {ref} {where(pos)}")
    for m in _THERE.finditer(low):
        pos, ref = _POSITIONS[m.group(1)], _ref(*m.group(2, 3, 4))
        if not any(ref.fits(o) and o.position == pos for o in items):
            bad.append(f"no {ref} {where(pos)}")
    for m in _ATTR.finditer(low):
        ref, pos, attr = _ref(*m.group(1, 2, 3)), _POSITIONS[m.group(4)], m.group(5)
        here = [o for o in items if ref.fits(o) and o.position == pos]
        if here and not any(attr in (o.color, o.size) for o in here):
            bad.append(f"the {ref} {where(pos)} is not {attr}")
    for m in _IN_REGION.finditer(low):
        ref, region = _ref(*m.group(1, 2, 3)), m.group(4)
        if not any(ref.fits(o) and _region(o) == region for o in items):
            bad.append(f"no {ref} {region}")
    for m in _ONLY_IN.finditer(low):
        region, ref = m.group(1), _ref(*m.group(2, 3, 4))
        there = [o for o in items if _region(o) == region]
        if len(there) != 1 or not ref.fits(there[0]):
            bad.append(f"the only object {region} is not a {ref}")
    for m in _MENTION.finditer(low):
        ref = _ref(*m.group(1, 2, 3))
        if ref.name is not None and not any(ref.fits(o) for o in items):
            bad.append(f"no {ref} anywhere")
    for m in _COUNT.finditer(low):
        ref, n = _ref(*m.group(2, 3, 4)), _num(m.group(1))
        have = sum(ref.fits(o) for o in items)
        if have != n:
            bad.append(f"{n} x {ref} claimed, the scene has {have}")
    for m in _N_AT.finditer(low):
        n, pos = _num(m.group(1)), _POSITIONS[m.group(2)]
        have = sum(o.position == pos for o in items)
        if have != n:
            bad.append(f"the {n} {where(pos)} claimed, the scene has {have} there")
    for m in _OF_ARE.finditer(low):
        k, n, name = _num(m.group(1)), _num(m.group(2)), m.group(3)
        if len(items) != n or sum(o.name == name for o in items) != k:
            bad.append(f"not {k} of {n} items are {name}s")
    word = scene.word.text.lower() if scene.word and scene.word.text else None
    for m in _QUOTED.finditer(text):
        if m.group(1).isupper() and m.group(1).lower() != word:
            bad.append(f'no word "{m.group(1)}" (the scene shows {word or "none"})')
    for m in _SIGN_AT.finditer(low):
        if scene.word is None or scene.word.position != _POSITIONS[m.group(2)]:
            bad.append(f"no sign {m.group(2)}")
    mine = background_phrase(scene)
    bad += [f"the background is {mine}, not {b}" for b in _BACKGROUNDS if b in low and b != mine]
    if "everything is where it belongs" in low and scene.abnormal is not None:
        bad.append(f"the scene is not normal (the {scene.abnormal.name} is out of place)")
    return bad


def _region(o: SceneObject) -> str:
    return "in the sky" if o.region == "sky" else "on the ground"


def _norm(text: str) -> str:
    text = text.replace(SHORT_ANSWER_PROMPT, " ").replace("<image>", " ").lower()
    return re.sub(r"[^a-z0-9]+", " ", text).strip()


_MARK = "\x00phrasing\x00"  # an Alts' own text: in any other string, an Alts was used some other way


class Alts(str):
    """Every phrasing a template choice can give: `_pick`'s `rng.choice(templates).format(**kw)`
    returns all templates filled with all combinations of the keyword alternatives."""

    options: tuple[str, ...]

    def __new__(cls, options: Sequence[str]) -> "Alts":
        self = super().__new__(cls, _MARK)
        self.options = tuple(dict.fromkeys(options))
        return self

    def format(self, *args: object, **kw: object) -> "Alts":  # type: ignore[override]
        if args:
            raise TypeError("Alts.format takes keyword fields only")
        keys = list(kw)
        values = [v.options if isinstance(v, Alts) else (v,) for v in kw.values()]
        return Alts([t.format(**dict(zip(keys, combo))) for t in self.options for combo in itertools.product(*values)])


class EnumRng:
    """A stand-in for `random.Random` whose `choice` returns all its options at once (an `Alts`).
    It has no other method: an ability drawing anything else raises and is sampled instead."""

    def choice(self, seq: Sequence[str]) -> Alts:
        if not all(isinstance(x, str) for x in seq):
            raise TypeError("EnumRng chooses among strings only")
        return Alts([x for x in seq])


def _phrasings(qa: QA) -> tuple[str, ...] | None:
    """All phrasings of an enumerated QA; None when an alternative leaked into other text."""
    q = qa.question
    options = q.options if isinstance(q, Alts) else (str(q),)
    if any(_MARK in t for t in (*options, qa.answer, qa.reason)):
        return None
    return options


def shared(value):
    """One object per distinct value (answer sets, question keys recur across scenes): what the
    cached tables hold, so each scene's table costs its slots, not copies. Bounded: past
    _SHARED_MAX distinct values, new ones are returned as they are."""
    if isinstance(value, str):
        return sys.intern(value)
    if len(_SHARED) >= _SHARED_MAX:
        return _SHARED.get(value, value)
    return _SHARED.setdefault(value, value)


@lru_cache(maxsize=QUESTIONS_CACHE)
def scene_questions(scene: Scene) -> tuple[QA, ...]:
    """Every question the scene abilities can ask about `scene`, one QA per phrasing (ability order,
    then each ability's QA order, then template order). Exact: each `_pick` template choice is
    enumerated rather than drawn. An ability that uses its rng otherwise (or whose alternatives end
    up outside the question) falls back to INDEX_DRAWS random draws, which may miss a phrasing."""
    out: list[QA] = []
    for name in ABILITIES:
        try:
            found: list[tuple[QA, tuple[str, ...] | None]] | None = [
                (qa, _phrasings(qa)) for qa in ask(scene, EnumRng(), [name]).get(name, [])]  # type: ignore[arg-type]
        except (AttributeError, TypeError, ValueError, KeyError, IndexError):
            found = None  # sampled below
        if found is not None and all(p is not None for _, p in found):
            out += [dataclasses.replace(qa, question=p) for qa, ps in found for p in ps]  # type: ignore[union-attr]
            continue
        seen: set[QA] = set()
        for k in range(INDEX_DRAWS):
            for qa in ask(scene, random.Random(f"judge/{scene.seed}/{name}/{k}"), [name]).get(name, []):
                if qa not in seen:
                    seen.add(qa)
                    out.append(qa)
    return tuple(out)


@lru_cache(maxsize=SCENE_CACHE)
def question_index(scene: Scene) -> dict[str, frozenset[tuple[str, str]]]:
    """Every question the scene abilities ask about `scene` (normalised) -> its (ability, answer)s."""
    index: dict[str, set[tuple[str, str]]] = {}
    for qa in scene_questions(scene):
        index.setdefault(shared(_norm(qa.question)), set()).add((qa.ability, qa.answer))
    return {q: shared(frozenset(shared(x) for x in a)) for q, a in index.items()}


def sampled_question_index(scene: Scene, draws: int = INDEX_DRAWS) -> dict[str, frozenset[tuple[str, str]]]:
    """The previous index: `draws` random draws of every ability (kept to test and time the exact one)."""
    index: dict[str, set[tuple[str, str]]] = {}
    for k in range(draws):
        for qas in ask(scene, random.Random(f"judge/{scene.seed}/{k}")).values():
            for qa in qas:
                index.setdefault(_norm(qa.question), set()).add((qa.ability, qa.answer))
    return {q: frozenset(a) for q, a in index.items()}


def lookup(scene: Scene, text: str) -> frozenset[tuple[str, str]] | None:
    """The (ability, answer)s of the scene question `text` asks, alone or inside a longer
    instruction (the longest known question it contains wins); None when it asks none."""
    target = f" {_norm(text)} "
    index = question_index(scene)
    hit = index.get(target.strip())
    if hit is None:
        found = [q for q in index if f" {q} " in target]
        hit = index[max(found, key=len)] if found else None
    return hit


def scene_answer(scene: Scene, question: str) -> str | None:
    """The scene's short answer to `question`; None when it asks none or the answer is ambiguous."""
    hit = lookup(scene, question)
    answers = {a for _, a in hit} if hit else set()
    return answers.pop() if len(answers) == 1 else None


def short_answer(answer: str) -> str | None:
    """The final short answer: after "the answer is", or the whole answer when it is a few words."""
    found = _FINAL.findall(answer)
    if found:
        return found[-1]
    return answer if len(answer.split()) <= 3 else None


def _canon(answer: str) -> str:
    words = _norm(answer).split()
    while words and words[0] in ("a", "an", "the", "in", "at", "on"):
        words = words[1:]
    return " ".join(str(NUM_WORDS.index(w)) if w in NUM_WORDS else w for w in words)


def check_answer(scene: Scene, question: str, answer: str) -> list[str]:
    """Problems of one question / answer pair: the answer's claims, then its short answer."""
    bad = check_text(scene, answer)
    expected, given = scene_answer(scene, question), short_answer(answer)
    if expected is not None and given is not None and _canon(given) != _canon(expected):
        bad.append(f"answers {given!r}, the scene says {expected!r}")
    return bad
