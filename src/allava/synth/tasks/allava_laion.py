"""`allava-laion`: ALLaVA appendix A.1. One GPT-4V call per image yields a fine-grained caption,
five candidate complex questions, one randomly chosen question and its detailed answer."""
from __future__ import annotations

from typing import Any

from allava.synth.base import (
    Item,
    ParseError,
    Request,
    Teacher,
    output_line,
    register_task,
)
from allava.synth.prompts import (
    ALLAVA_LAION_PROMPT,
    ALLAVA_LAION_SECTIONS,
    ALLAVA_LAION_VERSION,
    DETAILED_DESCRIPTION_INSTRUCTIONS,
)
from allava.synth.tasks.common import (
    SynthTask,
    call,
    image_of,
    numbered_list,
    pick,
    record,
    sections,
    strip_number,
    user,
)

N_CANDIDATES = 5


def parse(raw: str) -> dict[str, Any]:
    """The tagged sections of an A.1 answer; ParseError names the section that is missing or short."""
    s = sections(raw, ALLAVA_LAION_SECTIONS)
    candidates = numbered_list(s["candidate questions"])
    if len(candidates) != N_CANDIDATES:
        raise ParseError(f"expected {N_CANDIDATES} candidate questions, got {len(candidates)}", raw)
    question = strip_number(s["question"])
    if not question:
        raise ParseError("empty section 'question'", raw)
    norm = [c.casefold() for c in candidates]
    index = norm.index(question.casefold()) if question.casefold() in norm else None
    return {"description": s["description"], "candidate_questions": candidates, "question": question,
            "question_index": index, "answer": s["answer"]}


def caption_turns(line: dict[str, Any], description: str) -> list[tuple[str, str]]:
    """Stage-1 record: a LLaVA table-9 instruction picked from the id, answered with the description."""
    return [(pick(DETAILED_DESCRIPTION_INSTRUCTIONS, line["id"]), description)]


@register_task
class AllavaLaion(SynthTask):
    name = "allava-laion"
    prompt_version = ALLAVA_LAION_VERSION

    def request(self, item: Item) -> Request:
        return Request([user(ALLAVA_LAION_PROMPT, image_of(self, item))], self.name, item)

    async def run(self, item: Item, teacher: Teacher) -> dict[str, Any]:
        done = await call(teacher, self.request(item))
        return output_line(self, item, [done], parse(done.text), done.text)

    def to_llava(self, line: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        out = line["output"]
        return {
            "caption": [record(line, "cap", caption_turns(line, out["description"]))],
            "instruction": [record(line, "inst", [(out["question"], out["answer"])],
                                   candidate_questions=out["candidate_questions"])],
        }
