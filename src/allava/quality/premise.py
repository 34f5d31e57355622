"""False premises and reworded questions, for the offline scene judge.

The scene judge (`allava.scenes.verify`) knows the answer to every question the scene's own
generator asks, in the generator's own words. These teacher mistakes slip past it:

* a **false premise**: the question names something the scene does not contain ("How many suns
  are there?" with no sun, "What colour is the large star?" with no star). A bare answer ("1",
  "red") contradicts nothing, so nothing was flagged. `false_premises` lists every object the
  question refers to (size / colour / name, at a grid position when it says one) that fits no
  object of the scene, and a quoted word that is not the scene's;
* a **reworded question** ("Tell me the colour of the large circle." for "What colour is the large
  circle?"): `paraphrase_answer` matches it to the scene's questions by what they ask (the
  intent: count, colour, shape, position, ...) and every word that names the referent (colours,
  sizes, shapes, objects, positions, directions), and returns the answer when that is unambiguous;
  when the rewording names its object more fully than the scene's question does ("the small square"
  for "the square"), `referent_answer` finds the one object that fits and reads the answer off it;
* an **answer naming what is not there** (`absent_answer`): "square" to "Name the shape of the red
  object." when the red object is a car and the scene has no square.

`premise_problems(scene, question, answer)` combines both for the judge: the scene teacher calls it
next to `check_answer`, so a record is "incorrect" when either finds a problem.
"""
from __future__ import annotations

import random
import re
from functools import lru_cache

from allava.scenes.abilities import SHORT_ANSWER_PROMPT, ask, where
from allava.scenes.graph import COLORS, POSITION_NAMES, SHAPES, THINGS, Scene, plural
from allava.scenes.verify import SCENE_CACHE, _canon, scene_questions, shared, short_answer

_NAMES = sorted(SHAPES + THINGS, key=len, reverse=True)
_NAME_FORMS = {plural(n): n for n in _NAMES} | {n: n for n in _NAMES}
_WHERE = {where(p): p for p in POSITION_NAMES}
_POS = "(" + "|".join(sorted(map(re.escape, _WHERE), key=len, reverse=True)) + ")"
_FORMS = "|".join(sorted(map(re.escape, _NAME_FORMS), key=len, reverse=True))
_NP = re.compile(rf"\b(?:a|an|the|any|many|of) (?:(small|large) )?(?:({'|'.join(COLORS)}) )?({_FORMS}|shapes?|objects?)\b"
                 rf"(?: {_POS})?")
_QUOTED = re.compile(r'"([A-Za-z]{2,})"')
INTENTS = (  # first match wins; the scene abilities' question words
    ("count", ("how many", "count", "number of")),
    ("abnormal", ("unusual", "abnormal", "out of place", "strange")),
    ("odd", ("odd one", "different from", "does not belong", "doesn't belong")),
    ("ocr", ("word", "sign", "text", "written", "printed")),
    ("position", ("where", "which part", "located", "position", "part of the")),
    ("colour", ("colour", "color")),
    ("shape", ("shape",)),
    ("object", ("object", "can be seen", "can you see", "what is")),
)
_KEY_WORDS = (set(COLORS) | {"small", "large", "largest", "biggest", "smallest", "tiniest", "sky", "ground", "top",
              "bottom", "left", "right", "center", "above", "below"} | set(_NAME_FORMS))
_SAME = {"biggest": "largest", "tiniest": "smallest"}


def _norm(text: str) -> str:
    text = text.replace(SHORT_ANSWER_PROMPT, " ").replace("<image>", " ").lower()
    return re.sub(r"\s*([.,;:!?])\s*", r" \1 ", re.sub(r"[^a-z0-9\" .,;:!?]+", " ", text))  # punctuation kept apart


def false_premises(scene: Scene, question: str) -> list[str]:
    """Every referent of `question` that the scene does not contain."""
    low = " ".join(_norm(question).split())
    items = scene.items
    bad: list[str] = []
    for m in _NP.finditer(low):
        size, colour, name, pos = m.groups()
        name = None if name.rstrip("s") in ("shape", "object") else _NAME_FORMS[name]
        position = _WHERE.get(pos) if pos else None
        fits = [o for o in items if o.category != "word" and (name is None or o.name == name)
                and (colour is None or o.color == colour) and (size is None or o.size == size)
                and (position is None or o.position == position)]
        if not fits and (name or colour or size or position):
            what = " ".join(w for w in (size, colour, name or "object") if w)
            bad.append(f"the question asks about a {what}{' ' + pos if pos else ''}; the scene has none")
    word = scene.word.text.lower() if scene.word and scene.word.text else None
    for m in _QUOTED.finditer(question):
        if m.group(1).lower() != word:
            bad.append(f'the question asks about the word "{m.group(1)}"; the scene shows {word or "no word"}')
    return bad


def intent(question: str) -> str | None:
    low = _norm(question)
    return next((name for name, words in INTENTS if any(w in low for w in words)), None)


def question_key(question: str) -> tuple[str | None, frozenset[str]]:
    """(intent, the words naming what is asked about): equal for a question and its rewordings."""
    words = [_SAME.get(w, w) for w in _norm(question).split()]
    return intent(question), frozenset(_NAME_FORMS.get(w, w) for w in words if w in _KEY_WORDS)


@lru_cache(maxsize=SCENE_CACHE)  # every scene of a run (see verify.SCENE_CACHE), tables shared as verify's
def _key_index(scene: Scene) -> dict[tuple[str | None, frozenset[str]], frozenset[str]]:
    index: dict[tuple[str | None, frozenset[str]], set[str]] = {}
    for qa in scene_questions(scene):  # every phrasing, enumerated (was 24 random draws)
        index.setdefault(shared(question_key(qa.question)), set()).add(qa.answer)
    return {key: shared(frozenset(v)) for key, v in index.items()}


def sampled_key_index(scene: Scene, draws: int = 24) -> dict[tuple[str | None, frozenset[str]], frozenset[str]]:
    """The previous `_key_index`: `draws` random draws of every ability (kept to test and time the exact one)."""
    index: dict[tuple[str | None, frozenset[str]], set[str]] = {}
    for k in range(draws):
        for qas in ask(scene, random.Random(f"premise/{scene.seed}/{k}")).values():
            for qa in qas:
                index.setdefault(question_key(qa.question), set()).add(qa.answer)
    return {key: frozenset(v) for key, v in index.items()}


def paraphrase_answer(scene: Scene, question: str) -> str | None:
    """The scene's answer to a reworded scene question; None when no scene question asks the same
    thing about the same referent, or when several such questions have different answers."""
    key = question_key(question)
    if key[0] is None:
        return None
    answers = _key_index(scene).get(key)
    return next(iter(answers)) if answers and len(answers) == 1 else None


_DIRS = {"to the left of": (0, -1), "to the right of": (0, 1), "above": (-1, 0), "below": (1, 0)}
_NP_PARTS = rf"(?:(small|large) )?(?:({'|'.join(COLORS)}) )?({_FORMS})"
_REL = re.compile(rf"\b(?:directly|immediately|just) (to the left of|to the right of|above|below) the {_NP_PARTS}\b")
# a singular definite referent not narrowed by a position or relation right after it
_THE = re.compile(rf"\bthe {_NP_PARTS}\b( (?:in|at|on|to|directly|immediately|just|above|below)\b)?")
ONLY_SOME = {"abnormal": "nothing out of place", "odd": "no odd one out", "ocr": "no word"}


def _unanswerable(scene: Scene, question: str) -> list[str]:
    """Premises of a question the judge does not know: what it asks for exists in the scene (an
    unusual object, an odd one out, a printed word, a single largest shape, anything at a named
    position). Only asked of unknown questions: the scene's own never lack their premise."""
    it, words = question_key(question)
    keys = _key_index(scene)
    bad = []
    if it in ONLY_SOME and not any(k[0] == it for k in keys):
        bad.append(f"the question asks about {it}; the scene has {ONLY_SOME[it]}")
    if words & {"largest", "smallest"} and not any(words & k[1] & {"largest", "smallest"} for k in keys):
        bad.append("the question asks about the one largest / smallest shape; the scene has none")
    low = " ".join(_norm(question).split())
    taken = {o.position for o in scene.objects}
    for m in re.finditer(_POS, low):
        if _WHERE[m.group(1)] not in taken:
            bad.append(f"the question asks about {m.group(1)}; nothing is there")
    if ("sky" in words or "ground" in words) and scene.background == "plain":
        bad.append("the question asks about the sky or the ground; the scene has a plain background")
    for m in _REL.finditer(low):
        anchors = _fitting(scene, *m.group(2, 3, 4))
        if len(anchors) == 1:
            dr, dc = _DIRS[m.group(1)]
            nb = scene.at(anchors[0].cell[0] + dr, anchors[0].cell[1] + dc)
            if nb is None or nb.category != "shape":
                bad.append(f"the question asks about the shape {m.group(1)} the {m.group(4)}; there is none")
    for m in _THE.finditer(low):
        size, colour, name, after = m.groups()
        if name in _NAMES and not (after or "").strip() and len(_fitting(scene, size, colour, name)) > 1:
            bad.append(f"the question asks about the one {' '.join(w for w in (size, colour, name) if w)}; "
                       "the scene has several")
    return bad


def _fitting(scene: Scene, size: str | None, colour: str | None, name: str) -> list:
    name = _NAME_FORMS.get(name, name)
    return [o for o in scene.items if o.name == name and (colour is None or o.color == colour)
            and (size is None or o.size == size)]


def item_answer(scene: Scene, question: str) -> str | None:
    """What a reworded "what object is <position / in the sky>?" asks: the name of the one item there."""
    it, words = question_key(question)
    if it != "object":
        return None
    low = " ".join(_norm(question).split())
    here = [o for o in scene.items if any(_WHERE[m.group(1)] == o.position for m in re.finditer(_POS, low))]
    if not here and ("sky" in words or "ground" in words) and scene.background != "plain":
        region = "sky" if "sky" in words else "ground"
        here = [o for o in scene.things if o.region == region]
    return here[0].name if len(here) == 1 else None


def referent_answer(scene: Scene, question: str) -> str | None:
    """What a reworded colour / shape / position / object question asks of the one object it
    names: the scene's questions name an object by its shortest unique description ("the
    square"), a rewording may name it more fully ("the small square", "the blue cross"), so the
    words differ but the object is the same. None unless exactly one object fits the question's
    referent (size, colour, name, position) and it has what is asked (a sun has no colour)."""
    it = intent(question)
    if it not in ("colour", "shape", "position", "object"):
        return None
    refs = [m for m in _NP.finditer(" ".join(_norm(question).split()))  # "the shape of ..." names nothing
            if m.group(1) or m.group(2) or m.group(4) or m.group(3).rstrip("s") not in ("shape", "object")]
    if len(refs) != 1:
        return None
    size, colour, name, pos = refs[0].groups()
    name = None if name.rstrip("s") in ("shape", "object") else _NAME_FORMS[name]
    position = _WHERE.get(pos) if pos else None
    fits = [o for o in scene.items if (name is None or o.name == name) and (colour is None or o.color == colour)
            and (size is None or o.size == size) and (position is None or o.position == position)]
    if len(fits) != 1:
        return None
    o = fits[0]
    if it == "colour":
        return o.color
    if it == "shape":
        return o.name if o.category == "shape" and name is None else None
    if it == "position":
        return o.position if position is None else None
    return o.name if name is None else None


_NAMES_ASKED = ("shape", "object", "odd", "abnormal")  # intents whose answer names a shape or an object


def absent_answer(scene: Scene, question: str, answer: str) -> str | None:
    """A short answer naming a shape or object the scene does not contain, to a question asking
    for one: wrong whatever the question meant (a printed word is an OCR answer, not asked here)."""
    given = short_answer(answer)
    if given is None or intent(question) not in _NAMES_ASKED:
        return None
    words = _canon(given).split()
    if len(words) != 1 or words[0] not in _NAME_FORMS:
        return None
    name = _NAME_FORMS[words[0]]
    return None if any(o.name == name for o in scene.items) else name


def premise_problems(scene: Scene, question: str, answer: str) -> list[str]:
    """False premises of the question, and, when the judge does not know the question in its own
    words, a short answer that contradicts the scene's answer to the reworded question."""
    from allava.scenes.verify import _canon, lookup, short_answer

    bad = false_premises(scene, question)
    if lookup(scene, question) is None:
        bad += _unanswerable(scene, question)
        expected = paraphrase_answer(scene, question) or item_answer(scene, question) or referent_answer(scene, question)
        given = short_answer(answer)
        if expected is not None and given is not None and _canon(given) != _canon(expected):
            bad.append(f"answers {given!r} to a reworded question; the scene says {expected!r}")
        absent = absent_answer(scene, question, answer)
        if absent is not None:
            bad.append(f"answers {absent!r}; the scene has no {absent}")
    return bad
