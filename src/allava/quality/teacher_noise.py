"""A second noise generator: the mistakes real teachers make, not the ones QC was built against.

`allava.quality.noise.inject_noise` makes noise that the default operators were designed around
(shuffled characters, blurred images, answers cut mid-word). This one imitates what a GPT-4V-style
teacher and a scraped image pool get wrong, so QC can be measured on noise it was not tuned to:

* text, plausible but false: `hallucinate` (a colour / shape / object word of one sentence changed),
  `wrong_count` (a number changed), `swap_same` (the answer of a record of the same ability about
  another image, so it looks right for the question), `paraphrase` (another image's record reworded
  and put on this image: the question may name what this image does not show), `terse` (a bare
  "X." or "The answer is X." to a question that asks for reasoning);
* text, not an answer at all: `refusal` (an assistant refusal or boilerplate), `language` (the
  answer in Spanish, French, German or Chinese), `echo` (the question repeated back), `repeat` (a
  sentence looped, as a sampler stuck in a cycle writes);
* images: `blank` (one flat colour), `lowres` (a thumbnail scaled back up), `jpeg` (re-encoded at
  quality 4-10 and saved as PNG, so the extension tells nothing).

`inject_teacher_noise(records, image_folder, rate, seed)` returns (records, {id: kind}) like
`inject_noise`; a record that cannot carry a kind (no image, no number to change) is skipped, so
each kind's count is reported, not assumed.
"""
from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path
from typing import Any

from allava.scenes.graph import COLORS, SHAPES, THINGS
from allava.scenes.teacher import NUM_WORDS

TEACHER_KINDS = ("hallucinate", "wrong_count", "swap_same", "paraphrase", "terse", "refusal", "language", "echo",
                 "repeat", "blank", "lowres", "jpeg")
IMAGE_KINDS = ("blank", "lowres", "jpeg")

REFUSALS = (
    "I'm sorry, but I can't help with identifying details in this image.",
    "As an AI language model, I cannot see images, so I am unable to answer this question.",
    "I apologize, but I am not able to provide an answer to that.",
    "Sorry, I cannot assist with that request.",
    "As a text-based AI, I do not have the ability to view pictures. Please describe the image to me.",
    "I'm unable to determine that from the image provided.",
)
# Short phrase tables, so the foreign answers name this record's own colours and shapes.
LANG = {
    "es": ({"red": "rojo", "green": "verde", "blue": "azul", "yellow": "amarillo", "purple": "morado",
            "orange": "naranja", "black": "negro", "circle": "círculo", "square": "cuadrado", "triangle": "triángulo",
            "star": "estrella", "cross": "cruz"},
           "En la imagen se puede ver {x}. La respuesta es {x}, según lo que muestra la escena."),
    "fr": ({"red": "rouge", "green": "vert", "blue": "bleu", "yellow": "jaune", "purple": "violet",
            "orange": "orange", "black": "noir", "circle": "cercle", "square": "carré", "triangle": "triangle",
            "star": "étoile", "cross": "croix"},
           "Dans l'image, on peut voir {x}. La réponse est donc {x}, d'après ce que montre la scène."),
    "de": ({"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "purple": "lila", "orange": "orange",
            "black": "schwarz", "circle": "Kreis", "square": "Quadrat", "triangle": "Dreieck", "star": "Stern",
            "cross": "Kreuz"},
           "Auf dem Bild sieht man {x}. Die Antwort ist also {x}, wie die Szene zeigt."),
    "zh": ({"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色", "orange": "橙色",
            "black": "黑色", "circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形", "cross": "十字"},
           "图中可以看到{x}。根据画面，答案是{x}。"),
}
# Question rewordings that keep every word naming what is asked about (the referent), as a teacher
# paraphrasing a prompt would: the offline judge must recognise the question, not its template.
PARAPHRASES = (
    (re.compile(r"^(?:what colou?r is|which colou?r does|what is the colou?r of) the (.+?)(?: have| in the image)?\?$", re.I),
     ("Tell me the colour of the {0}.", "Which colour has the {0} got?", "Can you name the colour of the {0}?")),
    (re.compile(r"^(?:how many|what is the number of) (.+?)(?: are there| are in the image| in the image)?\?$", re.I),
     ("Can you count the {0} shown here?", "Please count how many {0} appear.", "Tell me the number of {0}.")),
    (re.compile(r"^count the (.+?) in the picture\.$", re.I), ("Can you count the {0} shown here?",)),
    (re.compile(r"^(?:what shape is|which shape is|what is the shape of) the (.+?)\?$", re.I),
     ("Tell me the shape of the {0}.", "Name the shape of the {0}.")),
    (re.compile(r"^the (.+?) has what shape\?$", re.I), ("Name the shape of the {0}.",)),
    (re.compile(r"^(?:where is|where in the picture can you find|in which part of the image is) the (.+?)(?: located)?\?$", re.I),
     ("Tell me where the {0} is.", "Point out the part of the picture that holds the {0}.")),
)
SHORT_PROMPT = "\nAnswer the question using a single word or phrase."
REASONING = re.compile(r"\b(explain|justify|evidence|step by step|why|reason|describe|carefully|inspect)", re.I)
_NUMBER = re.compile(r"\b(" + "|".join(NUM_WORDS[1:7]) + r"|[1-6])\b")
_COLOUR = re.compile(r"\b(" + "|".join(COLORS) + r")\b")
_NAME = re.compile(r"\b(" + "|".join(SHAPES + THINGS) + r")(s?)\b")
_FINAL = re.compile(r"the (?:final )?answer is:? ([^.!\n]+)", re.I)


def _gpt(rec: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in rec["conversations"] if t.get("from") == "gpt"]


def _human(rec: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in rec["conversations"] if t.get("from") == "human"]


def _question(rec: dict[str, Any]) -> str:
    return _human(rec)[0]["value"].replace("<image>", "").strip() if _human(rec) else ""


def short_answer(rec: dict[str, Any]) -> str:
    """The record's final short answer: meta.short_answer, "the answer is X", or the whole short reply."""
    meta = rec.get("meta") or {}
    if isinstance(meta.get("short_answer"), str):
        return meta["short_answer"]
    text = _gpt(rec)[-1]["value"] if _gpt(rec) else ""
    found = _FINAL.findall(text)
    return found[-1].strip() if found else text.strip().rstrip(".")


def is_long(rec: dict[str, Any], words: int = 12) -> bool:
    return any(len(t["value"].split()) >= words for t in _gpt(rec))


def _replace_one(text: str, pattern: re.Pattern, pick, rng: random.Random) -> str | None:
    """`text` with one random match of `pattern` replaced by `pick(match)`; None when nothing matches
    or the replacement equals the original."""
    matches = list(pattern.finditer(text))
    rng.shuffle(matches)
    for m in matches:
        new = pick(m)
        if new is not None and new != m.group(0):
            return text[:m.start()] + new + text[m.end():]
    return None


def _other(rng: random.Random, pool, current: str) -> str:
    return rng.choice([x for x in pool if x != current])


def _hallucinate(text: str, rng: random.Random) -> str | None:
    """One colour or object name changed (the text's own vocabulary first, as hallucinations mix up
    what is there): in a long answer the sentence stays fluent and grammatical."""
    def colour(m):
        return _other(rng, list(COLORS), m.group(1))

    def name(m):
        pool = SHAPES if m.group(1) in SHAPES else THINGS
        return _other(rng, pool, m.group(1)) + m.group(2)

    first, second = (colour, _COLOUR), (name, _NAME)
    order = [first, second] if rng.random() < 0.5 else [second, first]
    for fn, pattern in order:
        new = _replace_one(text, pattern, fn, rng)
        if new is not None:
            return new
    return None


def _wrong_count(text: str, rng: random.Random) -> str | None:
    def pick(m):
        word = m.group(1)
        n = int(word) if word.isdigit() else NUM_WORDS.index(word)
        k = _other(rng, range(1, 7), n)
        return str(k) if word.isdigit() else NUM_WORDS[k]
    return _replace_one(text, _NUMBER, pick, rng)


def paraphrase(question: str, rng: random.Random) -> str:
    """A rewording of a scene question that keeps its referent (the short-answer prompt is kept)."""
    body, prompt = (question[:-len(SHORT_PROMPT)], SHORT_PROMPT) if question.endswith(SHORT_PROMPT) else (question, "")
    for pattern, templates in PARAPHRASES:
        m = pattern.match(body.strip())
        if m:
            return rng.choice(templates).format(m.group(1)) + prompt
    lead = rng.choice(("Looking at the picture, ", "Based on the image, ", "Tell me: "))
    return lead + body[0].lower() + body[1:] + prompt


def _translate(rec: dict[str, Any], rng: random.Random) -> str:
    lang = rng.choice(sorted(LANG))
    words, template = LANG[lang]
    x = short_answer(rec)
    x = " ".join(words.get(w, w) for w in x.split())
    return template.format(x=x)


def _repeat(text: str, rng: random.Random) -> str:
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s]
    s = rng.choice(sentences) if sentences else text
    return " ".join(sentences[:1] + [s] * rng.randint(4, 7))


def _damage_image(src: Path, dst: Path, kind: str, rng: random.Random) -> None:
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        w, h = im.size
        if kind == "blank":
            im = Image.new("RGB", (w, h), tuple(rng.randint(0, 255) for _ in range(3)))
        elif kind == "lowres":
            f = rng.choice((6, 8))
            small = im.resize((max(1, w // f), max(1, h // f)), Image.Resampling.BILINEAR)
            im = small.resize((w, h), rng.choice((Image.Resampling.NEAREST, Image.Resampling.BILINEAR)))
        else:  # jpeg
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=rng.randint(4, 10))
            buf.seek(0)
            im = Image.open(buf).convert("RGB")
        im.save(dst)


def _right_here(donor: dict[str, Any], rec: dict[str, Any], folder: Path) -> bool:
    """Whether the donor's answer happens to be right about `rec`'s scene too (then moving it is no
    mistake): checked on the scene graph when `rec` carries one (`meta.seed`), else assumed wrong."""
    seed = (rec.get("meta") or {}).get("seed")
    if not isinstance(seed, int):
        return False
    from PIL import Image

    from allava.scenes.graph import SceneConfig, sample_scene
    from allava.scenes.verify import scene_answer

    try:
        with Image.open(folder / rec["image"]) as im:
            side = im.size[0]
    except OSError:
        return False
    expected = scene_answer(sample_scene(seed, SceneConfig(image_size=side)), _question(donor))
    return expected is not None and expected.lower() == short_answer(donor).lower()


def _fits(kind: str, rec: dict[str, Any]) -> bool:
    if kind in IMAGE_KINDS or kind in ("paraphrase", "swap_same"):
        return bool(rec.get("image"))
    if kind == "terse":
        return is_long(rec) and bool(REASONING.search(_question(rec)))
    if kind in ("echo", "repeat"):
        return is_long(rec)
    if not _gpt(rec):
        return False
    if kind == "wrong_count":
        return bool(_NUMBER.search(_gpt(rec)[-1]["value"]))
    if kind == "hallucinate":
        return bool(_COLOUR.search(_gpt(rec)[-1]["value"]) or _NAME.search(_gpt(rec)[-1]["value"]))
    return True


def inject_teacher_noise(records: list[dict[str, Any]], image_folder: str | Path, rate: float = 0.2, seed: int = 0,
                         kinds: tuple[str, ...] = TEACHER_KINDS) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Return (records with about `rate` of them replaced by teacher-style mistakes, {id: kind});
    writes the damaged images beside the originals. Kinds are dealt round-robin to a random sample."""
    unknown = sorted(set(kinds) - set(TEACHER_KINDS))
    if unknown:
        raise ValueError(f"unknown noise kinds {unknown}; known: {list(TEACHER_KINDS)}")
    rng = random.Random(seed)
    folder = Path(image_folder)
    out = [json.loads(json.dumps(r)) for r in records]
    by_ability: dict[str, list[int]] = {}
    for i, r in enumerate(out):
        if r.get("image"):
            by_ability.setdefault(str((r.get("meta") or {}).get("ability")), []).append(i)
    with_image = [i for i, r in enumerate(out) if r.get("image")]
    picked = rng.sample(range(len(out)), round(rate * len(out)))
    picked_set = set(picked)
    injected: dict[str, str] = {}
    for k, i in enumerate(picked):
        kind = kinds[k % len(kinds)]
        rec = out[i]
        if not _fits(kind, rec):  # another record that can carry this kind (long-answer kinds are rarer)
            spare = [j for j in rng.sample(range(len(out)), min(64, len(out)))
                     if j not in picked_set and out[j]["id"] not in injected and _fits(kind, out[j])]
            if not spare:
                continue
            i = spare[0]
            picked_set.add(i)
            rec = out[i]
        gpt = _gpt(rec)
        last = gpt[-1]
        if kind == "hallucinate" or kind == "wrong_count":
            new = (_hallucinate if kind == "hallucinate" else _wrong_count)(last["value"], rng)
            if new is None:
                continue
            last["value"] = new
        elif kind == "swap_same":
            ability = str((rec.get("meta") or {}).get("ability"))
            answer = short_answer(rec)
            donors = [j for j in rng.sample(by_ability.get(ability, []), min(50, len(by_ability.get(ability, []))))
                      if out[j].get("image") != rec["image"] and j not in picked_set
                      and is_long(out[j]) == is_long(rec) and short_answer(out[j]) != answer]
            if not donors:
                continue
            last["value"] = _gpt(out[donors[0]])[-1]["value"]
        elif kind == "paraphrase":
            donors = [j for j in rng.sample(with_image, min(50, len(with_image)))
                      if out[j].get("image") != rec["image"] and j not in picked_set
                      and short_answer(out[j]) != short_answer(rec)]
            donors = [j for j in donors if not _right_here(out[j], rec, folder)]
            if not donors:
                continue
            donor = json.loads(json.dumps(out[donors[0]]))
            h = _human(donor)[0]
            marker = "<image>\n" if h["value"].startswith("<image>") else ""
            h["value"] = marker + paraphrase(_question(donor), rng)
            # the paraphrase drops the teacher's opening filler sentence when it has one (it keeps the facts)
            g = _gpt(donor)[-1]
            g["value"] = re.sub(r"^(?:To answer this, I first inspect the whole image\.|Let me look at the image "
                                r"carefully\.)\s*", "", g["value"])
            rec = {**donor, "id": rec["id"], "image": rec["image"], "meta": rec.get("meta")}
        elif kind == "terse":
            x = short_answer(rec)
            last["value"] = rng.choice((f"{x}.", f"The answer is {x}.", f"{x[:1].upper()}{x[1:]}."))
        elif kind == "refusal":
            last["value"] = rng.choice(REFUSALS)
        elif kind == "language":
            last["value"] = _translate(rec, rng)
        elif kind == "echo":
            last["value"] = _question(rec).replace(SHORT_PROMPT.strip(), "").strip()
        elif kind == "repeat":
            last["value"] = _repeat(last["value"], rng)
        else:
            src = Path(rec["image"])
            new_name = str(src.parent / f"{kind}-{k}-{src.stem}.png")
            _damage_image(folder / rec["image"], folder / new_name, kind, rng)
            rec["image"] = new_name
        out[i] = rec
        injected[rec["id"]] = kind
    return out, injected
