"""The offline `scene` teacher: answers every task's request from the item's scene graph instead
of pixels, in exactly the text format that task's prompt asks for, so the same parser reads a
GPT-4V answer and this one. Every statement is true by construction; the output depends only
on the item id and its fields (deterministic), and costs nothing."""
from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable
from typing import Any

from allava.scenes.abilities import QA, SHORT_ANSWER_PROMPT, ask, where
from allava.scenes.graph import GRID, POSITIONS, Scene, SceneConfig, plural, sample_scene
from allava.scenes.teacher import allava_laion, caption, detailed_answer, inventory, scene_from_caption
from allava.synth.base import (
    Completion,
    ParseError,
    Request,
    SynthError,
    Teacher,
    Usage,
    register_teacher,
)
from allava.synth.tasks.common import approx_tokens, message_text

MODEL = "scene-graph"


def _rng(request: Request) -> random.Random:
    return random.Random(f"scene-teacher/{request.task}/{request.step}/{request.item.id}")


def item_scene(request: Request) -> Scene:
    """The scene of the item: fields["scene"], else a seed (fields["seed"] or fields["meta"]["seed"])."""
    f = request.item.fields
    if isinstance(f.get("scene"), dict):
        return Scene.from_dict(f["scene"])
    meta = f.get("meta") if isinstance(f.get("meta"), dict) else {}
    seed = f.get("seed", meta.get("seed"))
    if isinstance(seed, int):
        return sample_scene(seed)
    raise SynthError("the scene teacher needs a scene graph (fields['scene'] or a seed); "
                     f"item {request.item.id!r} has none")


def _norm(text: str) -> str:
    text = text.replace(SHORT_ANSWER_PROMPT, " ").replace("<image>", " ").lower()
    return re.sub(r"[^a-z0-9]+", " ", text).strip()


def find_qa(scene: Scene, text: str, key: str = "") -> QA | None:
    """The scene QA whose question is `text`, or is asked at the end of `text` (the longest such).
    Every phrasing is enumerated (`allava.scenes.verify.scene_questions`), so none is missed; `key`
    is kept for callers of the sampling version it replaced and no longer matters."""
    from allava.scenes.verify import scene_questions

    target = _norm(text)
    best: QA | None = None
    best_len = 0
    for qa in scene_questions(scene):
        q = _norm(qa.question)
        if q == target:
            return qa
        if q and len(q) > best_len and target.endswith(q):
            best, best_len = qa, len(q)
    return best


def _last_user(request: Request) -> str:
    return message_text([m for m in request.messages if m.get("role") == "user"][-1:])


# ---------------------------------------------------------------- one writer per task


def write_laion(request: Request) -> str:
    return allava_laion(item_scene(request), _rng(request))["raw"]


def write_vflan(request: Request) -> str:
    scene, rng, f = item_scene(request), _rng(request), request.item.fields
    question = str(f.get("question", ""))
    qa = find_qa(scene, question, request.item.id)
    if qa is not None:
        answer = detailed_answer(scene, qa, rng)
    elif f.get("answer") not in (None, ""):
        answer = (f"{inventory(scene)} Looking at these elements with the question in mind, the answer is "
                  f"{str(f['answer']).strip().rstrip('.')}.")
    else:
        answer = f"{inventory(scene)} This is everything the image shows that bears on the question."
    return (f"<start of description>\n{caption(scene, rng)}\n<end of description>\n"
            f"<start of detailed answer>\n{answer}\n<end of detailed answer>")


def write_text(request: Request) -> str:
    scene, question = item_scene(request), _last_user(request)
    qa = find_qa(scene, question, request.item.id)
    if qa is None:
        raise SynthError("the scene teacher cannot answer this question from the scene: "
                         f"{question.strip().splitlines()[-1][:120]!r}")
    if SHORT_ANSWER_PROMPT in question:
        return qa.answer
    reason = qa.reason[0].lower() + qa.reason[1:]
    return f"According to the description, {reason} So the answer is {qa.answer}."


def _box_facts(boxes: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """(category, grid position, area) per box, from its normalized centre."""
    out = []
    for b in boxes:
        x1, y1, x2, y2 = (float(v) for v in b["bbox"])
        col = min(GRID - 1, int((x1 + x2) / 2 * GRID))
        row = min(GRID - 1, int((y1 + y2) / 2 * GRID))
        out.append((str(b.get("category") or b.get("label")), POSITIONS[row][col], max(0.0, (x2 - x1) * (y2 - y1))))
    return out


def _counted(facts: list[tuple[str, str, float]]) -> str:
    names = list(dict.fromkeys(f[0] for f in facts))
    parts = [f"{sum(f[0] == n for f in facts)} {n if sum(f[0] == n for f in facts) == 1 else _plural(n)}"
             for n in names]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _plural(phrase: str) -> str:
    words = phrase.split()
    return " ".join(words[:-1] + [plural(words[-1])])


def write_symbolic(request: Request) -> str:
    from allava.synth.tasks.llava_symbolic import context

    captions, boxes = context(request.item)
    facts = _box_facts(boxes)
    kind = request.step
    if kind == "detail":
        body = " ".join(f"There is a {c} {where(p)}." for c, p, _ in facts)
        total = f" In total, the image contains {_counted(facts)}." if facts else ""
        return f"{captions[0].strip().rstrip('.')}. {body}{total}".strip()
    if not facts:
        return f"Question:\nWhat does the image show?\n===\nAnswer:\n{captions[0].strip()}"
    if kind == "complex":
        big = max(facts, key=lambda f: f[2])
        share = round(100 * big[2])
        return ("Question:\nWhich part of this picture draws the eye first, and why?\n===\nAnswer:\n"
                f"The image contains {_counted(facts)}. The {big[0]} {where(big[1])} is the largest object, covering "
                f"about {share}% of the picture, so it is the first thing a viewer notices; the other objects are "
                "smaller and spread around it, which makes it the focal point of the composition.")
    pairs = [("What objects can you see in the image?", f"I can see {_counted(facts)}.")]
    for name in list(dict.fromkeys(f[0] for f in facts))[:3]:
        same = [f for f in facts if f[0] == name]
        if len(same) == 1:
            pairs.append((f"Where is the {name}?", f"The {name} is {where(same[0][1])} of the image."))
        else:
            pairs.append((f"How many {_plural(name)} are there?", f"There are {len(same)} {_plural(name)}."))
    return "\n===\n".join(f"Question:\n{q}\n===\nAnswer:\n{a}" for q, a in pairs)


def _ability_scene(request: Request, ability: str) -> tuple[Scene, list[QA]]:
    """A scene in which `ability` can be asked, sampled from seeds derived from the item id."""
    for k in range(500):
        seed = zlib.crc32(f"{request.item.id}/{k}".encode())
        scene = sample_scene(seed)
        qas = ask(scene, random.Random(seed), [ability]).get(ability, [])
        if qas:
            return scene, qas
    raise SynthError(f"the scene teacher found no scene for ability {ability!r}")


def write_stablellava(request: Request) -> str:
    from allava.synth.scene_prompt import prompt_to_scene, scene_to_prompt
    from allava.synth.tasks.stablellava import resolve_ability

    ability = resolve_ability(request.item.fields.get("ability"))
    text = _last_user(request)
    if request.step == "image-prompt":
        scene, qas = _ability_scene(request, ability)
        named = [o for o in scene.items if re.search(rf"\b{o.name}\b", qas[0].reason)][:1]
        focus = {"ocr": [scene.word], "abnormal": [scene.abnormal]}.get(ability) or named or scene.items[:1]
        return f"Prompt: {scene_to_prompt(scene, [o for o in focus if o is not None])}"
    prompts = re.findall(r"^Prompt: (.+)$", text, flags=re.MULTILINE)
    if not prompts:
        raise SynthError("the scene teacher found no 'Prompt:' line in the dialogue request")
    try:
        scene = prompt_to_scene(prompts[-1])
    except SynthError as e:
        raise SynthError(f"the scene teacher writes dialogues only for prompts in the scene grammar ({e.reason})")
    m = re.search(r"generate (\d+) question-answer pairs", text)
    turns = int(m.group(1)) if m else 3
    rng = _rng(request)
    per = ask(scene, rng)
    qas = per.get(ability, [])[:2] + [rng.choice(v) for k, v in per.items() if k != ability]
    if not qas:
        raise SynthError(f"the scene teacher has nothing to ask about prompt {prompts[-1]!r}")
    lines = [f"Prompt: {prompts[-1]}"]
    for qa in qas[:turns]:
        lines += [f"Question: {qa.question}", f"Response: {qa.reason} So the answer is {qa.answer}."]
    return "\n".join(lines)


# ---------------------------------------------------------------- QC requests (allava qc)
# The judge, tagger and difficulty prompts of `allava.quality.ops` are read the way a model reads
# them: the question / answer pairs after "Now judge:", the "Tasks:" list, the "Instruction:".

ABILITY_STEPS = {"ocr": 1, "color": 2, "object": 2, "shape": 2, "position": 2, "count": 3, "size": 3,
                 "abnormal": 4, "odd_one_out": 4, "relation": 4, "description": 3}
REASONING = re.compile(r"\b(explain|justify|evidence|step by step|why|reason)", re.IGNORECASE)


def _judged_scene(request: Request) -> tuple[Scene, bool]:
    """`item_scene` and whether it is certain. With only a seed, the scene is re-sampled at the
    image's own size (the sampler's position jitter scales with the size, so a world rendered at
    128 px draws other scenes from the same seeds); without an image the size is a guess (96 px)."""
    f = request.item.fields
    try:
        scene = item_scene(request)
    except SynthError:
        described = described_scene(f)
        if described is None:
            raise
        return described, True
    path = request.item.image_file()
    if isinstance(f.get("scene"), dict):
        return scene, True
    if path is None:
        return scene, False
    try:
        from PIL import Image

        with Image.open(path) as im:
            side = im.size[0]
    except Exception:  # noqa: BLE001 - an unreadable image: the default size, uncertain
        return scene, False
    return (scene if side == scene.image_size else sample_scene(scene.seed, SceneConfig(image_size=side))), True


def described_scene(fields: dict[str, Any]) -> Scene | None:
    """The scene the teacher's own description of the record states (`meta.raw`'s ALLaVA
    "description" section, read back by `scene_from_caption`), for records that carry no scene
    graph or seed (what `allava synth` exports): an answer that contradicts the description the
    same teacher wrote for the same image is wrong either way. None when there is none to read."""
    from allava.synth.tasks.common import sections

    meta = fields.get("meta") if isinstance(fields.get("meta"), dict) else {}
    raw = meta.get("raw")
    if not isinstance(raw, str) or "<start of description>" not in raw:
        return None
    try:
        text = sections(raw, ("description",))["description"]
    except ParseError:
        return None
    return scene_from_caption(text)


def judge_pairs(prompt: str) -> list[tuple[str, str]]:
    """(question, answer) pairs after the prompt's last "Now judge:" (a question may hold a
    "Question:" line of its own: a chunk without an answer is joined to the next one)."""
    if "Now judge:" not in prompt:
        return []
    body = re.sub(r"\n?Verdict:\s*$", "", prompt.rsplit("Now judge:", 1)[1].strip())
    pairs, pending = [], ""
    for chunk in re.split(r"(?m)^Question: ?", body)[1:]:
        question, sep, answer = chunk.partition("\nAnswer: ")
        if not sep:
            pending += chunk + "Question: "
            continue
        pairs.append(((pending + question).strip(), answer.strip()))
        pending = ""
    return pairs


def write_judge(request: Request) -> str:
    """"correct" when no claim of any answer contradicts the scene graph, else "incorrect"."""
    from allava.quality.premise import premise_problems
    from allava.scenes.verify import check_answer, check_text

    scene, certain = _judged_scene(request)
    pairs = judge_pairs(_last_user(request))
    if not pairs:
        raise SynthError("the scene teacher found no 'Question:'/'Answer:' pairs after 'Now judge:'")
    if not certain and check_text(scene, pairs[0][0]):  # text-only records describe their scene: compare
        raise SynthError("the seed does not give the scene the question describes (rendered at another size?)")
    # a false premise (the question names what the scene lacks) or a reworded question answered
    # against the scene is as wrong as a contradicted claim (allava.quality.premise)
    return "incorrect" if any(check_answer(scene, q, a) or premise_problems(scene, q, a) for q, a in pairs) else "correct"


def _instruction(prompt: str, end: str) -> str:
    return prompt.split("Instruction:", 1)[-1].rsplit(end, 1)[0].strip()


def _ability(request: Request, instruction: str) -> str | None:
    """The scene ability the instruction asks about ("description" for a description request)."""
    from allava.scenes.verify import lookup
    from allava.synth.prompts import BRIEF_DESCRIPTION_INSTRUCTIONS, DETAILED_DESCRIPTION_INSTRUCTIONS

    if instruction.replace("<image>", "").strip() in BRIEF_DESCRIPTION_INSTRUCTIONS + DETAILED_DESCRIPTION_INSTRUCTIONS:
        return "description"
    hit = lookup(_judged_scene(request)[0], instruction)
    abilities = sorted({ability for ability, _ in hit}) if hit else []
    return abilities[0] if len(abilities) == 1 else None


def write_tag(request: Request) -> str:
    """The ability of the question the instruction asks, when the prompt lists it; else "other"."""
    prompt = _last_user(request)
    m = re.search(r"^Tasks: (.+)$", prompt, flags=re.MULTILINE)
    tasks = [t.strip() for t in m.group(1).split(",")] if m else []
    ability = _ability(request, _instruction(prompt, "\n\nTask:"))
    return ability if ability in tasks else "other"


def write_difficulty(request: Request) -> str:
    """A rule, not a guess: the scene-graph look-ups the question needs, +2 when it asks for the reasoning."""
    instruction = _instruction(_last_user(request), "\n\nDifficulty")
    ability = _ability(request, instruction)
    if ability is None:
        raise SynthError("the scene teacher rates only instructions that ask a scene question")
    return str(min(10, ABILITY_STEPS.get(ability, 3) + 2 * bool(REASONING.search(instruction))))


WRITERS: dict[str, Callable[[Request], str]] = {
    "allava-laion": write_laion,
    "allava-vflan": write_vflan,
    "text-regen": write_text,
    "llava-symbolic": write_symbolic,
    "stablellava": write_stablellava,
    "qc-judge": write_judge,
    "qc-tag": write_tag,
    "qc-difficulty": write_difficulty,
}


@register_teacher
class SceneTeacher(Teacher):
    """Offline teacher behind the same interface as the openai one (model "scene-graph", cost 0)."""

    name = "scene"

    async def complete(self, request: Request) -> Completion:
        writer = WRITERS.get(request.task)
        if writer is None:
            raise SynthError(f"the scene teacher cannot answer task {request.task!r}; it knows {sorted(WRITERS)}")
        text = writer(request)
        usage = Usage(approx_tokens(message_text(request.messages)), approx_tokens(text))
        return Completion(text, MODEL, usage, cost_usd=0.0, finish_reason="stop")

