"""`allava-vflan`: ALLaVA appendix A.2. For an existing (image, question) pair GPT-4V writes a
caption and regenerates a detailed answer; the original question is kept (the paper does not
generate questions for Vision-FLAN, only fixes its terse or malformed answers)."""
from __future__ import annotations

from typing import Any

from allava.synth.base import (
    Item,
    Request,
    SynthError,
    Teacher,
    output_line,
    register_task,
)
from allava.synth.prompts import ALLAVA_VFLAN_PROMPT
from allava.synth.tasks.allava_laion import caption_turns
from allava.synth.tasks.common import SynthTask, call, image_of, record, sections, user

SECTIONS = ("description", "detailed answer")


def prompt(question: str) -> str:
    return ALLAVA_VFLAN_PROMPT.replace("{question}", question.replace("<image>", "").strip())


def parse(raw: str) -> dict[str, Any]:
    s = sections(raw, SECTIONS)
    return {"description": s["description"], "answer": s["detailed answer"]}


@register_task
class AllavaVflan(SynthTask):
    name = "allava-vflan"
    requires = (("question",),)
    prompt_version = "allava-vflan/1"

    async def run(self, item: Item, teacher: Teacher) -> dict[str, Any]:
        question = item.fields.get("question")
        if not isinstance(question, str) or not question.strip():
            raise SynthError(f"{self.name} needs fields['question'] (item {item.id!r} has none)")
        done = await call(teacher, Request([user(prompt(question), image_of(self, item))], self.name, item))
        return output_line(self, item, [done], parse(done.text), done.text)

    def to_llava(self, line: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        out, question = line["output"], line["input"]["question"]
        extra = {"original_answer": line["input"]["answer"]} if "answer" in line["input"] else {}
        return {
            "caption": [record(line, "cap", caption_turns(line, out["description"]))],
            "instruction": [record(line, "inst", [(question, out["answer"])], **extra)],
        }
