"""Synthesis tasks: prompts, parsers on real-looking teacher answers, failure reasons, and
end-to-end runs with the offline scene teacher whose records must pass LLaVA validation."""
from __future__ import annotations

import argparse
import asyncio
import random
from pathlib import Path

import pytest
from PIL import Image

import allava.synth.tasks  # noqa: F401 - registers the tasks
from allava.data.validate import check_record
from allava.scenes.abilities import ABILITIES, ask
from allava.scenes.graph import COLORS, sample_scene
from allava.scenes.render import render
from allava.scenes.teacher import text_record
from allava.synth.base import (
    TASKS,
    TEACHERS,
    Completion,
    Item,
    ParseError,
    SynthError,
    Teacher,
    Usage,
)
from allava.synth.imagegen import GENERATORS, build_generator
from allava.synth.prompts import (
    ALLAVA_LAION_PROMPT,
    BRIEF_DESCRIPTION_INSTRUCTIONS,
    DETAILED_DESCRIPTION_INSTRUCTIONS,
    ETHICS_REFUSE,
    LLAVA_CONVERSATION_SYSTEM,
)
from allava.synth.scene_prompt import prompt_to_scene, scene_to_prompt
from allava.synth.tasks.stablellava import parse_dialogue, parse_image_prompt
from allava.synth.teachers.scene import SceneTeacher


class Scripted(Teacher):
    """Answers with the given texts in order and records every request."""

    name = "scripted"

    def __init__(self, *texts: str, finish: str | None = "stop"):
        self.texts, self.finish, self.requests = list(texts), finish, []

    async def complete(self, request):
        self.requests.append(request)
        text = self.texts.pop(0)
        return Completion(text, "gpt-4-vision-preview", Usage(100, len(text.split())), 0.01, finish_reason=self.finish)


def run(task, item, teacher):
    return asyncio.run(task.run(item, teacher))


def task(name: str, out: Path | None = None, **args):
    t = TASKS[name]()
    t.bind(out or Path("."), argparse.Namespace(**args))
    return t


@pytest.fixture()
def scene_item(tmp_path: Path) -> Item:
    scene = sample_scene(11)
    (tmp_path / "images").mkdir()
    render(scene).save(tmp_path / "images" / "s11.png")
    return Item("s11", "images/s11.png", tmp_path, {"scene": scene.to_dict(), "seed": 11})


def assert_valid(records: dict, folder: Path) -> list[dict]:
    flat = [r for recs in records.values() for r in recs]
    assert flat
    for r in flat:
        assert check_record(r, folder, "decode") == [], r
        assert r["meta"]["prompt_version"] and "raw" in r["meta"]
    return flat


# ---------------------------------------------------------------- allava-laion

LAION_ANSWER = """<start of description>
The photograph shows a cozy kitchen in warm afternoon light. A wooden table in the foreground holds a bowl of green
apples, a ceramic teapot with a blue floral pattern and two mugs. Behind it, open shelves carry glass jars of pasta.
<end of description>
<start of candidate questions>
1. Based on the number of mugs and the teapot, how many people is the table most likely set for, and why?
2. What time of day is it likely to be, judging from the light?
3) Which objects suggest that someone cooks here regularly?
4. How is the teapot decorated, and what style does this suggest?
5. Why might the apples have been placed in the centre of the table?
<end of candidate questions>
<start of question>
What time of day is it likely to be, judging from the light?
<end of question>
<start of answer>
The light enters at a low angle and has a warm, golden tone, casting long soft shadows across the table. Such light is
typical of late afternoon, so it is most likely late afternoon.
<end of answer>"""


def test_laion_prompt_is_the_papers_and_sends_the_image(scene_item):
    t = task("allava-laion")
    teacher = Scripted(LAION_ANSWER)
    line = run(t, scene_item, teacher)
    msg = teacher.requests[0].messages[0]
    assert msg["content"][0]["text"] == ALLAVA_LAION_PROMPT
    assert msg["content"][1] == {"type": "image", "path": str(scene_item.image_file())}
    assert "do not involve violence, advertisement, possible invasion of privacy" in ALLAVA_LAION_PROMPT
    assert line["prompt_version"] == "allava-laion/1" and line["raw"] == LAION_ANSWER
    out = line["output"]
    assert len(out["candidate_questions"]) == 5 and out["candidate_questions"][2].startswith("Which objects")
    assert out["question_index"] == 1 and out["answer"].endswith("late afternoon.")
    assert "scene" not in line["input"] and line["usage"]["prompt_tokens"] == 100


def test_laion_inline_candidates():
    from allava.synth.tasks.allava_laion import parse

    raw = LAION_ANSWER.replace(LAION_ANSWER[LAION_ANSWER.index("1. Based"):LAION_ANSWER.index("<end of candidate")],
                               "1. What is red? 2. What is blue? 3. Why? 4. Where? 5. How many?\n")
    assert parse(raw)["candidate_questions"] == ["What is red?", "What is blue?", "Why?", "Where?", "How many?"]


@pytest.mark.parametrize("broken, reason", [
    (LAION_ANSWER.split("<start of answer>")[0], "missing section 'answer'"),
    (LAION_ANSWER.replace("<start of description>", "").replace("<end of description>", ""), "'description'"),
    (LAION_ANSWER.replace("5. Why might the apples have been placed in the centre of the table?\n", ""),
     "expected 5 candidate questions, got 4"),
    (LAION_ANSWER.split("<end of answer>")[0], "not closed (truncated output?)"),
])
def test_laion_failures_name_the_section(scene_item, broken, reason):
    with pytest.raises(ParseError) as e:
        run(task("allava-laion"), scene_item, Scripted(broken))
    assert reason in e.value.reason and e.value.raw == broken


def test_truncated_by_length_is_a_parse_error(scene_item):
    with pytest.raises(ParseError, match="truncated") as e:
        run(task("allava-laion"), scene_item, Scripted(LAION_ANSWER, finish="length"))
    assert e.value.raw == LAION_ANSWER


def test_laion_end_to_end_with_scene_teacher(scene_item):
    t = task("allava-laion")
    line = run(t, scene_item, SceneTeacher())
    assert line == run(t, scene_item, SceneTeacher())  # deterministic per id
    assert line["teacher"] == "scene-graph" and line["cost_usd"] == 0
    recs = t.to_llava(line)
    cap, inst = recs["caption"][0], recs["instruction"][0]
    assert cap["conversations"][0]["value"].removeprefix("<image>\n") in DETAILED_DESCRIPTION_INSTRUCTIONS
    assert inst["conversations"][0]["value"] == "<image>\n" + line["output"]["question"]
    assert cap["id"] != inst["id"] and cap["meta"]["raw"] == line["raw"]
    assert_valid(recs, scene_item.image_root)


def test_needs_an_image():
    with pytest.raises(SynthError, match="needs an image"):
        run(task("allava-laion"), Item("x"), Scripted(LAION_ANSWER))


# ---------------------------------------------------------------- allava-vflan

VFLAN_ANSWER = """<start of description>

A young woman in a red raincoat stands at a bus stop on a rainy city street, holding a black umbrella.

<end of description>

<start of detailed answer>

The question asks what the weather is like. The wet pavement, the umbrella and the raincoat all indicate rain, so the
weather is rainy.

<end of detailed answer>"""


def test_vflan_prompt_and_parse(scene_item):
    item = Item("v1", scene_item.image, scene_item.image_root, {"question": "What is the weather like?", "answer": "rainy"})
    teacher = Scripted(VFLAN_ANSWER)
    line = run(task("allava-vflan"), item, teacher)
    text = teacher.requests[0].messages[0]["content"][0]["text"]
    assert "Here is the question:\n\nWhat is the weather like?" in text and ETHICS_REFUSE in text
    assert "{question}" not in text and "<start of detailed answer>" in text
    assert line["output"]["answer"].startswith("The question asks") and line["output"]["description"].startswith("A young")
    recs = task("allava-vflan").to_llava(line)
    assert recs["instruction"][0]["conversations"][0]["value"] == "<image>\nWhat is the weather like?"
    assert recs["instruction"][0]["meta"]["original_answer"] == "rainy"


def test_vflan_failures(scene_item):
    item = Item("v1", scene_item.image, scene_item.image_root, {"question": "Why?"})
    with pytest.raises(ParseError, match="missing section 'detailed answer'"):
        run(task("allava-vflan"), item, Scripted(VFLAN_ANSWER.split("<start of detailed answer>")[0]))
    with pytest.raises(SynthError, match="question"):
        run(task("allava-vflan"), Item("v2", scene_item.image, scene_item.image_root), Scripted(VFLAN_ANSWER))


def test_vflan_end_to_end_answers_ability_questions(scene_item):
    scene = sample_scene(11)
    qa = next(iter(ask(scene, random.Random(5)).values()))[0]
    item = Item("v3", scene_item.image, scene_item.image_root,
                {"scene": scene.to_dict(), "question": "<image>\n" + qa.question})
    t = task("allava-vflan")
    line = run(t, item, SceneTeacher())
    assert line["output"]["answer"].endswith(f"the answer is {qa.answer}.")
    recs = t.to_llava(line)
    assert recs["instruction"][0]["conversations"][0]["value"] == "<image>\n" + qa.question
    assert_valid(recs, scene_item.image_root)


# ---------------------------------------------------------------- text-regen

def test_text_regen_turn_by_turn_with_history():
    item = Item("t1", fields={"conversations": [
        {"from": "human", "value": "Write a haiku about autumn."}, {"from": "gpt", "value": "old answer"},
        {"from": "human", "value": "Now explain its imagery."}, {"from": "gpt", "value": "old answer 2"}]})
    teacher = Scripted("Crisp leaves drift and fall\n...", "The haiku contrasts motion and stillness ...")
    t = task("text-regen")
    line = run(t, item, teacher)
    second = teacher.requests[1].messages
    assert second[0]["role"] == "system" and ETHICS_REFUSE in second[0]["content"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[2]["content"].startswith("Crisp leaves") and teacher.requests[1].step == "turn-1"
    conv = line["output"]["conversations"]
    assert [c["value"] for c in conv][1::2] == ["Crisp leaves drift and fall\n...", "The haiku contrasts motion and stillness ..."]
    recs = t.to_llava(line)
    assert list(recs) == ["text"] and "image" not in recs["text"][0]
    assert_valid(recs, None)


def test_text_regen_failures_keep_paid_answers():
    item = Item("t2", fields={"conversations": [{"from": "human", "value": "A?"}, {"from": "human", "value": "B?"}]})

    class Half(Scripted):
        async def complete(self, request):
            done = await super().complete(request)
            done.finish_reason = "length" if request.step == "turn-1" else "stop"
            return done

    with pytest.raises(ParseError, match="truncated") as e:
        run(task("text-regen"), item, Half("first", "sec"))
    assert e.value.raw == ["first", "sec"]
    with pytest.raises(SynthError, match="text-only"):
        run(task("text-regen"), Item("t3", fields={"conversations": [{"from": "human", "value": "<image>\nhi"}]}),
            Scripted("x"))


def test_text_regen_end_to_end_with_scene_teacher():
    rec = text_record("t4", sample_scene(21), random.Random(2))
    item = Item("t4", fields={"conversations": rec["conversations"], "meta": rec["meta"]})
    t = task("text-regen")
    line = run(t, item, SceneTeacher())
    old = [c["value"] for c in rec["conversations"]][1::2]
    new = [c["value"] for c in line["output"]["conversations"]][1::2]
    assert len(new) == len(old) and all(o in n for o, n in zip([r.split("So the answer is ")[-1].rstrip(".") for r in old], new))
    assert_valid(t.to_llava(line), None)
    with pytest.raises(SynthError, match="needs a scene graph"):
        run(t, Item("t5", fields={"question": "What is 2+2?"}), SceneTeacher())


# ---------------------------------------------------------------- llava-symbolic

CONV_ANSWER = """Question:
What color is the fire hydrant in the image?
===
Answer:
The fire hydrant in the image is red.
===
Question:
Is the fire hydrant fully covered by snow or partially visible?
===
Answer:
The fire hydrant is partially visible, with a significant portion of it covered by the deep snow."""


def test_symbolic_parses_both_turn_styles():
    from allava.synth.tasks.llava_symbolic import parse

    assert parse("conversation", CONV_ANSWER)[1][0].startswith("Is the fire hydrant")
    pairs = parse("conversation", "User: How many dogs?\nGPT: Two dogs.\n\nUser: Where?\nGPT: On the grass.")
    assert pairs == [("How many dogs?", "Two dogs."), ("Where?", "On the grass.")]
    assert parse("detail", "  A dog sits on a couch.  ") == "A dog sits on a couch."
    with pytest.raises(ParseError, match="no answer"):
        parse("conversation", CONV_ANSWER.rsplit("Answer:", 1)[0])
    with pytest.raises(ParseError, match="exactly 1"):
        parse("complex", CONV_ANSWER)


def test_symbolic_prompt_has_system_fewshot_boxes_and_no_image(tmp_path):
    item = Item("coco-1", "coco/1.jpg", tmp_path, {
        "captions": ["A dog on a couch.", "A brown dog resting."],
        "boxes": [{"category": "dog", "bbox": [0.1, 0.2, 0.5, 0.9]}, {"label": "couch", "bbox": [0, 0.4, 1, 1]}]})
    teacher = Scripted(CONV_ANSWER, "A brown dog rests on a couch.", "Question:\nWhy is the dog resting?\n===\nAnswer:\nIt is tired.")
    line = run(task("llava-symbolic"), item, teacher)
    conv, detail, _ = (r.messages for r in teacher.requests)
    assert conv[0] == {"role": "system", "content": LLAVA_CONVERSATION_SYSTEM} and conv[1]["role"] == "user"
    assert conv[2]["role"] == "assistant" and conv[-1]["content"] == "A dog on a couch.\nA brown dog resting."
    assert detail[-1]["content"].endswith("dog: [0.100, 0.200, 0.500, 0.900]\ncouch: [0.000, 0.400, 1.000, 1.000]")
    assert all(isinstance(m["content"], str) for r in teacher.requests for m in r.messages)  # never the pixels
    assert [r.step for r in teacher.requests] == ["conversation", "detail", "complex"]
    recs = task("llava-symbolic").to_llava(line)["instruction"]
    assert [r["id"] for r in recs] == ["coco-1-conversation", "coco-1-detail", "coco-1-complex"]
    assert all(r["image"] == "coco/1.jpg" for r in recs) and recs[1]["meta"]["raw"] == "A brown dog rests on a couch."


def test_symbolic_subset_and_end_to_end(scene_item):
    t = task("llava-symbolic", response_types=["detailed", "complex"])  # the CLI's nargs="+" spelling
    line = run(t, scene_item, SceneTeacher())
    recs = t.to_llava(line)
    assert [r["meta"]["response_type"] for r in recs["instruction"]] == ["detail", "complex"]
    assert_valid(recs, scene_item.image_root)
    full = task("llava-symbolic")
    assert_valid(full.to_llava(run(full, scene_item, SceneTeacher())), scene_item.image_root)
    with pytest.raises(ValueError, match="unknown response types"):
        task("llava-symbolic", response_types="poem")


# ---------------------------------------------------------------- caption-expand

class NoCalls(Teacher):
    name = "none"

    async def complete(self, request):
        raise AssertionError("caption-expand must not call the teacher")


def test_caption_expand_brief_and_detailed(scene_item):
    t = task("caption-expand")
    short = run(t, Item("c1", scene_item.image, scene_item.image_root, {"caption": "a red circle"}), NoCalls())
    long_ = run(t, Item("c2", scene_item.image, scene_item.image_root, {"caption": " ".join(["word"] * 60)}), NoCalls())
    assert short["output"]["instruction"] in BRIEF_DESCRIPTION_INSTRUCTIONS and short["cost_usd"] == 0
    assert long_["output"]["instruction"] in DETAILED_DESCRIPTION_INSTRUCTIONS and short["teacher"] is None
    assert run(t, Item("c1", scene_item.image, scene_item.image_root, {"caption": "a red circle"}), NoCalls()) == short
    recs = t.to_llava(short)
    assert recs["caption"][0]["conversations"][1]["value"] == "a red circle"
    assert_valid(recs, scene_item.image_root)
    with pytest.raises(SynthError, match="caption"):
        run(t, Item("c3", scene_item.image, scene_item.image_root), NoCalls())


# ---------------------------------------------------------------- stablellava

def test_grammar_round_trips_scenes_and_refuses_the_rest():
    for seed in range(150):
        scene = sample_scene(seed)
        back = prompt_to_scene(scene_to_prompt(scene, scene.objects[:1]))
        key = lambda o: (o.category, o.name, o.cell, o.color, o.size if o.category == "shape" else "", o.text, o.abnormal)
        assert sorted(map(key, back.objects)) == sorted(map(key, scene.objects)), seed
    two = prompt_to_scene("((two blue squares in the top left and the center)), a red circle, 4k")
    assert [(o.name, o.position, o.color) for o in two.objects] == [
        ("square", "top left", "blue"), ("circle", "top", "red"), ("square", "center", "blue")]
    assert prompt_to_scene("a car in the sky, a tree, outdoor scene").abnormal.name == "car"
    for bad in ("a majestic dragon over a castle", "a red circle in the far corner", "three red circle", ""):
        with pytest.raises(SynthError, match="procedural renderer could not parse prompt"):
            prompt_to_scene(bad)


def test_scenes_backend_draws_what_the_prompt_says(tmp_path):
    gen = build_generator("scenes", image_size=96, model="ignored")
    gen.save("((a large red square in the center)), plain background", tmp_path / "x.png", seed=1)
    px = Image.open(tmp_path / "x.png").convert("RGB").getpixel((48, 48))
    assert max(abs(a - b) for a, b in zip(px, COLORS["red"])) < 30
    assert set(GENERATORS) >= {"scenes", "diffusers"}


def test_diffusers_backend_errors_are_clear():
    with pytest.raises(ValueError, match="needs a model"):
        build_generator("diffusers")
    try:
        import diffusers  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match=r"pip install 'allava\[diffusers\]'"):
            build_generator("diffusers", model="runwayml/stable-diffusion-v1-5")


def test_stablellava_parsers():
    assert parse_image_prompt('Sure!\nPrompt: "((a giraffe in a narrow corridor)), realistic, 8k."') == \
        "((a giraffe in a narrow corridor)), realistic, 8k"
    raw = ("Prompt: ((a giraffe in a narrow corridor)), realistic\nQuestion: What is unusual in the image?\n"
           "Response: A giraffe is too tall to walk through a narrow home corridor.\nQuestion: Is it indoors?\n"
           "Response: Yes, it is inside a house.")
    assert parse_dialogue(raw)[0] == ("What is unusual in the image?",
                                      "A giraffe is too tall to walk through a narrow home corridor.")
    with pytest.raises(ParseError, match="Question"):
        parse_dialogue("Prompt: x\nDescription: a giraffe")
    with pytest.raises(ParseError, match="no answer"):
        parse_dialogue("Question: What?\nResponse: This.\nQuestion: And?")


def test_stablellava_end_to_end_every_ability(tmp_path):
    t = task("stablellava", tmp_path)
    teacher = SceneTeacher()
    for name in ABILITIES:
        line = run(t, Item(f"ab/{name}", fields={"ability": name}), teacher)
        assert line["image"].startswith("images/") and (tmp_path / line["image"]).is_file()
        assert line["output"]["ability"] == name and "((" in line["output"]["image_prompt"]
        assert len(line["raw"]) == 2 and line["output"]["conversations"]
        assert_valid(t.to_llava(line), tmp_path)


def test_stablellava_prompts_carry_grammar_and_ethics(tmp_path):
    t = task("stablellava", tmp_path)
    teacher = Scripted("Prompt: ((a red car in the sky)), a tree, outdoor scene",
                       "Prompt: ((a red car in the sky))\nQuestion: What is odd?\nResponse: A car flies in the sky.")
    line = run(t, Item("j1", fields={"ability": "Abnormality"}), teacher)
    first, second = (r.messages[0]["content"] for r in teacher.requests)
    assert "#Grammar" in first and "Never describe violence" in first and "abnormal" in first
    assert ETHICS_REFUSE in second and second.endswith("Prompt: ((a red car in the sky)), a tree, outdoor scene")
    assert line["output"]["ability"] == "abnormal" and line["output"]["conversations"] == [["What is odd?", "A car flies in the sky."]]
    with pytest.raises(SynthError, match="could not parse prompt") as e:
        run(t, Item("j2", fields={"ability": "color"}), Scripted("Prompt: a dragon breathing fire"))
    assert e.value.raw == "Prompt: a dragon breathing fire"
    with pytest.raises(SynthError, match="bind"):
        run(TASKS["stablellava"](), Item("j3", fields={"ability": "color"}), SceneTeacher())
    with pytest.raises(SynthError, match="unknown ability"):
        run(t, Item("j4", fields={"ability": "juggling"}), SceneTeacher())


# ---------------------------------------------------------------- the scene teacher

def test_scene_teacher_contract(scene_item):
    assert TEACHERS["scene"] is SceneTeacher
    from allava.synth.base import Request

    req = Request([{"role": "user", "content": "one two three"}], "allava-laion", scene_item)
    done = asyncio.run(SceneTeacher().complete(req))
    assert done.model == "scene-graph" and done.cost_usd == 0 and done.usage.prompt_tokens == 3
    assert done.usage.completion_tokens == len(done.text.split()) and done.finish_reason == "stop"
    with pytest.raises(SynthError, match="needs a scene graph"):
        asyncio.run(SceneTeacher().complete(Request([], "allava-laion", Item("bare", "x.png"))))
    with pytest.raises(SynthError, match="cannot answer task"):
        asyncio.run(SceneTeacher().complete(Request([], "poetry", scene_item)))
