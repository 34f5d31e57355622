"""The scene-graph teacher: writes ALLaVA-shaped data the way GPT-4V does in the paper.

ALLaVA distils, from ONE prompt per image (appendix A.1), a fine-grained caption, five
candidate complex questions, one randomly chosen question and a detailed answer. Here the
teacher reads the scene graph instead of pixels, so every statement is true by construction.
It also writes LLaVA-format records (caption, complex instruct, LLaVA-1.5 short VQA) and
text-only instructions that stand in for Evol-Instruct-GPT4-Turbo.
"""
from __future__ import annotations

import dataclasses
import random
import re

from allava.scenes.abilities import (
    QA,
    SHORT_ANSWER_PROMPT,
    WHY_ABNORMAL,
    a,
    ask,
    phrase,
    where,
)
from allava.scenes.graph import COLORS, GRID, POSITION_NAMES, SHAPES, SIZES, THINGS, Scene, SceneObject, plural
from allava.synth.prompts import (  # noqa: F401 - re-exported for the scene world
    ALLAVA_LAION_PROMPT,
    ALLAVA_LAION_SECTIONS,
    BRIEF_DESCRIPTION_INSTRUCTIONS,
    DETAILED_DESCRIPTION_INSTRUCTIONS,
)
from allava.synth.prompts import ALLAVA_LAION_VERSION as PROMPT_VERSION  # the version the world's records carry

VQA_PROMPT_VERSION = "llava-1.5-short/1"
TEXT_PROMPT_VERSION = "scene-text/1"
TEACHER = "scene"

NUM_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MAX_VQA_TURNS = 8

# ---------------------------------------------------------------- descriptions


def background_phrase(scene: Scene) -> str:
    """Name the background, including its slight tint, so captions are fine-grained."""
    if scene.background == "outdoor":
        return "a light blue sky above a strip of green grass"
    r, g, b = scene.tint
    if max(scene.tint) - min(scene.tint) < 10:
        return "a plain light grey background"
    tone = {0: "pink", 1: "green", 2: "blue"}[max(range(3), key=lambda i: (r, g, b)[i])]
    return f"a plain, very pale {tone} background"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _count_phrase(n: int, noun: str) -> str:
    return f"{NUM_WORDS[n]} {noun if n == 1 else plural(noun)}"


def _breakdown(objs: list[SceneObject]) -> str:
    """'two circles and one star' in order of first appearance."""
    names = list(dict.fromkeys(o.name for o in objs))
    return _join([_count_phrase(sum(o.name == n for o in objs), n) for n in names])


def _object_sentences(o: SceneObject) -> tuple[str, ...]:
    np_, at = phrase(o), where(o.position)
    return (f"{a(np_).capitalize()} sits {at}.", f"{at.capitalize()}, there is {a(np_)}.", f"There is {a(np_)} {at}.",
            f"{a(np_).capitalize()} can be seen {at}.")


def _object_sentence(o: SceneObject, rng: random.Random) -> str:
    return _object_sentences(o)[rng.randrange(4)]


def _word_sentences(w: SceneObject) -> tuple[str, ...]:
    return (f'A white sign {where(w.position)} shows the word "{w.text}" in bold black capital letters.',
            f'{where(w.position).capitalize()}, the word "{w.text}" is printed in black on a white sign.',
            f'The text "{w.text}" is written on a small white sign {where(w.position)}.')


def _abnormal_sentences(o: SceneObject) -> tuple[str, ...]:
    place = "in the sky" if o.region == "sky" else "on the ground"
    return tuple(f"{lead} the {o.name} is {place}, and {WHY_ABNORMAL[o.name]}."
                 for lead in ("Something is unusual here:", "Strangely,", "The scene contains an oddity:"))


def _openings(n: int, noun: str, bg: str) -> tuple[str, ...]:
    count = _count_phrase(n, noun)
    return (f"The image shows {count} on {bg}.", f"This picture contains {count} arranged on {bg}.",
            f"In this image, {count} appear on {bg}.")


NORMAL_SENTENCE = "Everything is where it belongs, so the scene looks normal."


def caption(scene: Scene, rng: random.Random) -> str:
    """Fine-grained description: every object's size, colour, name and position, the word, background, oddity."""
    items = scene.items
    noun = "shape" if scene.background == "plain" else "object"
    n = len(items)
    opening = rng.choice(_openings(n, noun, background_phrase(scene)))
    sentences = [opening] + [_object_sentence(o, rng) for o in items]
    if scene.word:
        sentences.append(rng.choice(_word_sentences(scene.word)))
    if n > 1:
        sentences.append(_total_sentence(items, noun))
    if scene.abnormal:
        sentences.append(rng.choice(_abnormal_sentences(scene.abnormal)))
    elif scene.background == "outdoor":
        sentences.append(NORMAL_SENTENCE)
    return " ".join(sentences)


def _total_sentence(items: list[SceneObject], noun: str) -> str:
    return f"In total there are {_count_phrase(len(items), noun)}: {_breakdown(items)}."


# the background phrases and a tint that gives each (`background_phrase`)
_BACKGROUND_TINTS = {"a light blue sky above a strip of green grass": ("outdoor", (0, 0, 0)),
                     "a plain light grey background": ("plain", (0, 0, 0)),
                     "a plain, very pale pink background": ("plain", (12, 0, 0)),
                     "a plain, very pale green background": ("plain", (0, 12, 0)),
                     "a plain, very pale blue background": ("plain", (0, 0, 12))}
_CAPTION_NP = re.compile(rf"\b(?:an?|the) (?:(small|large) )?(?:({'|'.join(COLORS)}) )?({'|'.join(SHAPES + THINGS)})\b")
_CAPTION_WORD = re.compile(r'"([A-Z]+)"')
_CAPTION_OPENING = re.compile(r"^(?:The image shows|This picture contains|In this image,) (\w+) (?:shape|object)s? "
                              r"(?:arranged |appear )?on (.+)\.$")
_WHERE_CELL = {where(p): divmod(i, GRID) for i, p in enumerate(POSITION_NAMES)}
_WHERE_RE = re.compile("(" + "|".join(sorted(map(re.escape, _WHERE_CELL), key=len, reverse=True)) + ")", re.I)


def scene_from_caption(text: str, image_size: int = 96) -> Scene | None:
    """The scene graph a `caption` describes (what the teacher's own description says is in the
    image), or None unless `text` is exactly such a caption: every sentence is one the caption
    writer would give for the scene read back (each object's size / colour / name and position, the
    sign, the total, the oddity), so free-form text or an edited description is never half-read.
    Offsets and the exact tint are not in the text; the seed is -1."""
    sentences = re.split(r"(?<=[.])\s+(?=[A-Z])", " ".join(text.split()))
    m = _CAPTION_OPENING.match(sentences[0]) if sentences else None
    if m is None or m.group(2) not in _BACKGROUND_TINTS or m.group(1) not in NUM_WORDS:
        return None
    background, tint = _BACKGROUND_TINTS[m.group(2)]
    objects: list[SceneObject] = []
    word: SceneObject | None = None
    rest: list[str] = []
    for sent in sentences[1:]:
        at = _WHERE_RE.findall(sent)
        if at and _CAPTION_WORD.search(sent) and word is None:
            word = SceneObject("word", "word", _WHERE_CELL[at[0].lower()], color="black",
                               text=_CAPTION_WORD.search(sent).group(1))
            if sent not in _word_sentences(word):
                return None
            continue
        np_ = _CAPTION_NP.search(sent.lower())
        if np_ is None or len(at) != 1 or sent.startswith(("In total", "Strangely", "Something", "The scene")):
            rest.append(sent)
            continue
        size, colour, name = np_.groups()
        shape = name in SHAPES
        o = SceneObject("shape" if shape else "thing", name, _WHERE_CELL[at[0].lower()], color=colour,
                        size=size if shape else "large")
        if (shape and (size is None or colour is None)) or sent not in _object_sentences(o):
            return None
        objects.append(o)
    noun = "shape" if background == "plain" else "object"
    cells = [o.cell for o in objects] + ([word.cell] if word else [])
    if not objects or len(set(cells)) != len(cells) or NUM_WORDS.index(m.group(1)) != len(objects) \
            or sentences[0] not in _openings(len(objects), noun, m.group(2)):
        return None
    expected = [_total_sentence(objects, noun)] if len(objects) > 1 else []
    if rest[:len(expected)] != expected:
        return None
    rest = rest[len(expected):]
    if background == "outdoor":
        if rest == [NORMAL_SENTENCE]:
            pass
        elif len(rest) == 1:
            odd = [i for i, o in enumerate(objects) if rest[0] in _abnormal_sentences(o)]
            if len(odd) != 1:
                return None
            objects[odd[0]] = dataclasses.replace(objects[odd[0]], abnormal=True)
        else:
            return None
    elif rest:
        return None
    kind = ("abnormal" if any(o.abnormal for o in objects) else "objects") if background == "outdoor" \
        else ("shapes_word" if word else "shapes")
    return Scene(-1, kind, image_size, background, tint, tuple(objects + ([word] if word else [])))


def clip_caption(scene: Scene) -> str:
    """Short, fixed-pattern caption (< 60 words) for contrastive CLIP training."""
    parts = [f"{a(phrase(o))} {where(o.position)}" for o in scene.items]
    if scene.word:
        parts.append(f"the word {scene.word.text} {where(scene.word.position)}")
    text = _join(parts)
    if scene.background == "outdoor":
        text = f"an outdoor scene with {text}"
        if scene.abnormal:
            place = "in the sky" if scene.abnormal.region == "sky" else "on the ground"
            text += f"; the {scene.abnormal.name} {place} is unusual"
    else:
        text = f"a plain background with {text}"
    return text + "."


def clip_hard_negatives(scene: Scene, rng: random.Random) -> list[str]:
    """Captions of the same scene with one detail wrong (NegCLIP-style hard negatives).

    In a batch of random scenes, colours and positions already tell the captions apart, so a
    contrastive model never needs to see shape or exact position. A negative that differs from the
    true caption in exactly one object's shape, colour or cell forces the tower to encode each.
    """
    from dataclasses import replace

    objs = list(scene.objects)

    def changed(i: int, **detail) -> str:
        return clip_caption(replace(scene, objects=(*objs[:i], replace(objs[i], **detail), *objs[i + 1:])))

    out: list[str] = []
    shapes = [i for i, o in enumerate(objs) if o.category == "shape"]
    if shapes:
        i = rng.choice(shapes)
        out.append(changed(i, name=rng.choice([s for s in SHAPES if s != objs[i].name])))
    coloured = [i for i, o in enumerate(objs) if o.color]
    if coloured:
        i = rng.choice(coloured)
        out.append(changed(i, color=rng.choice([c for c in COLORS if c != objs[i].color])))
    taken = {o.cell for o in objs}
    free = [(r, c) for r in range(GRID) for c in range(GRID) if (r, c) not in taken]
    if objs and free:  # one object moved to an empty cell
        i = rng.randrange(len(objs))
        out.append(changed(i, cell=rng.choice(free)))
    true = clip_caption(scene)
    return [c for c in dict.fromkeys(out) if c != true]


PATCH_OBJECTS = ("empty", *SHAPES, *THINGS, "word")


def clip_patch_labels(scene: Scene) -> dict[str, list[int]]:
    """Per-cell classes (row-major, one per ViT patch) for the CLIP's dense supervision.

    A stand-in for what CLIP-L's patch features carry after 400M pairs: a few thousand captions
    teach a tiny tower which scene tells two captions apart, not what each patch holds (shape was
    linearly decodable from its patch at 75%, colour at 99.6%). -100 = no label (ignored).
    """
    n = GRID * GRID
    labels = {"object": [0] * n, "color": [-100] * n, "size": [-100] * n}
    for o in (*scene.items, *([scene.word] if scene.word else [])):
        k = o.cell[0] * GRID + o.cell[1]
        labels["object"][k] = PATCH_OBJECTS.index(o.name)
        if o.color:
            labels["color"][k] = list(COLORS).index(o.color)
        if o.category == "shape":
            labels["size"][k] = list(SIZES).index(o.size)
    return labels


def inventory(scene: Scene) -> str:
    """Evidence sentence listing everything in the image, used at the start of detailed answers."""
    items = scene.items
    noun = "shape" if scene.background == "plain" else "object"
    listing = _join([f"{a(phrase(o))} {where(o.position)}" for o in items])
    text = f"The image contains {_count_phrase(len(items), noun)}: {listing}."
    if scene.word:
        text += f' There is also a sign reading "{scene.word.text}" {where(scene.word.position)}.'
    return text


# ---------------------------------------------------------------- ALLaVA-LAION output

_COMPLEX = (
    "{Q} Explain how you arrived at your answer.",
    "Take a close look at the image. {Q} Describe the visual evidence that supports your answer.",
    "Inspecting every part of the picture carefully, {q}",
    "{Q} Reason step by step before giving the final answer.",
    "Based on the arrangement of the objects in the scene, {q} Justify your answer.",
)


def complex_question(qa: QA, rng: random.Random) -> str:
    """Turn a short question into an ALLaVA-style question that asks for reasoning."""
    q = qa.question
    return rng.choice(_COMPLEX).format(Q=q, q=_lc_first(q))


def _layout_qa(scene: Scene) -> QA:
    return QA("layout", "Describe where each object is located in the image.", "", inventory(scene))


def detailed_answer(scene: Scene, qa: QA, rng: random.Random) -> str:
    """Evidence first (inventory + the specific observation), then the short answer."""
    if qa.ability == "layout":
        return qa.reason
    lead = rng.choice(("", "Let me look at the image carefully. ", "To answer this, I first inspect the whole image. "))
    return f"{lead}{inventory(scene)} {qa.reason} Therefore, the answer is {qa.answer}."


def diverse_choice(qas: list[QA], rng: random.Random) -> QA:
    """Pick an answer uniformly, then a QA with it: keeps frequent answers (e.g. count "1") from dominating."""
    answer = rng.choice(list(dict.fromkeys(qa.answer for qa in qas)))
    return rng.choice([qa for qa in qas if qa.answer == answer])


def _candidates(scene: Scene, rng: random.Random, k: int = 5) -> list[QA]:
    """k QAs from as many different abilities as possible (ALLaVA: 'different aspects')."""
    per_ability = ask(scene, rng)
    names = list(per_ability)
    rng.shuffle(names)
    chosen = [diverse_choice(per_ability[n], rng) for n in names][:k]
    rest = [qa for n in names for qa in per_ability[n] if qa not in chosen]
    rng.shuffle(rest)
    for qa in rest + [_layout_qa(scene)]:
        if len(chosen) >= k:
            break
        if all(qa.question != c.question for c in chosen):
            chosen.append(qa)
    return chosen


def format_raw(description: str, candidates: list[str], question: str, answer: str) -> str:
    """The teacher output in the exact tagged format the A.1 prompt requests."""
    numbered = "\n".join(f"{i}. {q}" for i, q in enumerate(candidates, 1))
    body = (description, numbered, question, answer)
    return "\n".join(f"<start of {s}>\n{t}\n<end of {s}>" for s, t in zip(ALLAVA_LAION_SECTIONS, body))


def allava_laion(scene: Scene, rng: random.Random) -> dict:
    """One teacher call: description, 5 candidate questions, a random pick, a reasoned answer, and `raw`."""
    description = caption(scene, rng)
    cands = _candidates(scene, rng)
    questions = [complex_question(qa, rng) for qa in cands]
    pick = rng.randrange(len(cands))
    answer = detailed_answer(scene, cands[pick], rng)
    return {
        "description": description,
        "candidate_questions": questions,
        "question": questions[pick],
        "answer": answer,
        "short_answer": cands[pick].answer,
        "ability": cands[pick].ability,
        "raw": format_raw(description, questions, questions[pick], answer),
    }


# ---------------------------------------------------------------- text-only (Evol-Instruct stand-in)

_TEXT_INTROS = (
    "Here is a description of a picture:",
    "Read the following scene description and answer my questions about it.",
    "Imagine an image described as follows.",
    "A friend describes a drawing to you:",
)


def scene_in_words(scene: Scene, rng: random.Random) -> str:
    """The scene as a text-only record would give it: an intro and the fine-grained caption."""
    return f"{rng.choice(_TEXT_INTROS)}\n\n{caption(scene, rng)}"


def _spec_list(scene: Scene) -> str:
    lines = [f"- {phrase(o)}: {o.position}" for o in scene.items]
    if scene.word:
        lines.append(f'- sign with the word "{scene.word.text}": {scene.word.position}')
    return f"Background: {background_phrase(scene)}.\nObjects on a 3x3 grid:\n" + "\n".join(lines)


def one_per_ability(scene: Scene, rng: random.Random, cap: int = MAX_VQA_TURNS) -> list[QA]:
    """One random QA from each applicable ability, shuffled, at most `cap`."""
    per_ability = ask(scene, rng)
    qas = [diverse_choice(v, rng) for v in per_ability.values()]
    rng.shuffle(qas)
    return qas[:cap]


def _lc_first(s: str) -> str:
    return s if s.startswith("I ") else s[0].lower() + s[1:]


def _describe(scene: Scene, rng: random.Random) -> str:
    """The scene in words, as a text-only record gives it: the caption, or the object list."""
    return caption(scene, rng) if rng.random() < 0.6 else _spec_list(scene)


def _text_conversation(desc: str, qas: list[QA], detailed: bool, rng: random.Random) -> list[dict]:
    """Questions about a described scene; the first turn opens with an intro and the description."""
    conv = []
    for i, qa in enumerate(qas):
        q = qa.question if detailed else f"{qa.question}\n{SHORT_ANSWER_PROMPT}"
        if i == 0:
            q = f"{rng.choice(_TEXT_INTROS)}\n\n{desc}\n\n{q}"
        ans = f"According to the description, {_lc_first(qa.reason)} So the answer is {qa.answer}." if detailed else qa.answer
        conv += [{"from": "human", "value": q}, {"from": "gpt", "value": ans}]
    return conv


def text_only(scene: Scene, rng: random.Random) -> dict:
    """A text-only conversation: a scene described in words, then questions answerable from the text."""
    desc = _describe(scene, rng)
    detailed = rng.random() < 0.5
    qas = one_per_ability(scene, rng)[: rng.randint(2, 4)]
    return {"conversations": _text_conversation(desc, qas, detailed, rng),
            "abilities": [qa.ability for qa in qas], "detailed": detailed}


# ---------------------------------------------------------------- LLaVA records


def _meta(task: str, ability: str, version: str, raw: str | None, scene: Scene, **extra) -> dict:
    return {"teacher": TEACHER, "task": task, "ability": ability, "prompt_version": version, "raw": raw,
            "scene_kind": scene.kind, "seed": scene.seed, **extra}


def caption_record(rid: str, image: str, scene: Scene, out: dict, rng: random.Random) -> dict:
    """Stage-1 style record: a Table 9 instruction, answered with the teacher's description."""
    human = "<image>\n" + rng.choice(DETAILED_DESCRIPTION_INSTRUCTIONS)
    return {"id": rid, "image": image,
            "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": out["description"]}],
            "meta": _meta("caption", "caption", PROMPT_VERSION, out["raw"], scene)}


def allava_record(rid: str, image: str, scene: Scene, out: dict) -> dict:
    """ALLaVA-Instruct record: the chosen complex question and its detailed answer."""
    return {"id": rid, "image": image,
            "conversations": [{"from": "human", "value": "<image>\n" + out["question"]},
                              {"from": "gpt", "value": out["answer"]}],
            "meta": _meta("allava_instruct", out["ability"], PROMPT_VERSION, out["raw"], scene,
                          short_answer=out["short_answer"])}


def vqa_record(rid: str, image: str, scene: Scene, qas: list[QA]) -> dict:
    """LLaVA-1.5 short-answer record: one turn per QA (`one_per_ability` for LLaVA-1.5's merged
    multi-turn form; the quickstart uses single turns, which a tiny LM learns from faster)."""
    conv = []
    for i, qa in enumerate(qas):
        human = f"{qa.question}\n{SHORT_ANSWER_PROMPT}"
        conv += [{"from": "human", "value": ("<image>\n" if i == 0 else "") + human},
                 {"from": "gpt", "value": qa.answer}]
    return {"id": rid, "image": image, "conversations": conv,
            "meta": _meta("short_vqa", qas[0].ability if len(qas) == 1 else "mixed", VQA_PROMPT_VERSION, None, scene,
                          abilities=[qa.ability for qa in qas])}


def lm_doc(rid: str, scene: Scene, rng: random.Random) -> dict:
    """A text-form scene conversation for stage-0 LM pretraining: the scene in words, then every
    ability's short question about it. Phi-2 brings retrieval from its pretraining; the tiny
    stand-in LM gets it from the text form of this world (nothing here is a benchmark scene)."""
    desc = _describe(scene, rng)
    conv = _text_conversation(desc, one_per_ability(scene, rng, cap=len(scene.objects) + 10), False, rng)
    return {"id": rid, "conversations": conv,
            "meta": _meta("lm_pretrain", "mixed", TEXT_PROMPT_VERSION, None, scene)}


def text_record(rid: str, scene: Scene, rng: random.Random) -> dict:
    """Text-only instruction record (no image, no <image> token)."""
    t = text_only(scene, rng)
    return {"id": rid, "conversations": t["conversations"],
            "meta": _meta("text_only", "mixed", TEXT_PROMPT_VERSION, None, scene,
                          abilities=t["abilities"], detailed=t["detailed"])}
