"""`caption-expand`: LLaVA's naive expansion (section 3). An (image, caption) pair becomes
`Human: X_q <image> / Assistant: X_c` with X_q from the brief (table 8) or, for long captions,
the detailed (table 9) instruction list. No teacher call, no cost: the stage-1 data of LLaVA."""
from __future__ import annotations

from typing import Any

from allava.synth.base import Item, SynthError, Teacher, output_line, register_task
from allava.synth.prompts import (
    BRIEF_DESCRIPTION_INSTRUCTIONS,
    DETAILED_DESCRIPTION_INSTRUCTIONS,
)
from allava.synth.tasks.common import SynthTask, opt, pick, record

LONG_CAPTION_WORDS = 40  # CC3M captions are ~10 words; ALLaVA/ShareGPT4V-style captions are 100+


@register_task
class CaptionExpand(SynthTask):
    name = "caption-expand"
    requires = (("caption",),)
    prompt_version = "caption-expand/1"
    long_caption_words = LONG_CAPTION_WORDS

    def bind(self, out_dir: Any, args: Any = None) -> None:
        super().bind(out_dir, args)
        self.long_caption_words = int(opt(args, "long_caption_words", LONG_CAPTION_WORDS))

    def instruction(self, item_id: str, caption: str) -> tuple[str, str]:
        """(kind, instruction): the list follows the caption length, the choice follows the id."""
        if len(caption.split()) >= self.long_caption_words:
            return "detailed", pick(DETAILED_DESCRIPTION_INSTRUCTIONS, item_id)
        return "brief", pick(BRIEF_DESCRIPTION_INSTRUCTIONS, item_id)

    async def run(self, item: Item, teacher: Teacher) -> dict[str, Any]:
        caption = item.fields.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            raise SynthError(f"{self.name} needs fields['caption'] (item {item.id!r} has none)")
        if item.image is None:
            raise SynthError(f"{self.name} needs an image and item {item.id!r} has none")
        kind, instruction = self.instruction(item.id, caption)
        parsed = {"instruction": instruction, "instruction_list": kind, "caption": caption.strip()}
        return output_line(self, item, [], parsed, caption)

    def to_llava(self, line: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        out = line["output"]
        return {"caption": [record(line, "cap", [(out["instruction"], out["caption"])],
                                   instruction_list=out["instruction_list"])]}
