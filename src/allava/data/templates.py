"""Conversation templates: how a list of human/gpt turns becomes text, and which part is trained.

A template renders a conversation into *segments*: text pieces that are either prompt (masked
from the loss) or assistant answers (trained), plus the stop token id that ends each answer.
The tokenizer then encodes segment by segment, so the loss mask is exact by construction.
Add your own with ``@register_template("name")``.
"""
from __future__ import annotations

from dataclasses import dataclass
from transformers import PreTrainedTokenizerBase


@dataclass
class Segment:
    text: str
    trainable: bool
    append_stop: bool = False  # after the text, append the tokenizer's eos as the answer's stop (trained)
    train_first_token: bool = False  # the text opens with the answer's stop token (chat templates): train it


TEMPLATES: dict[str, "Template"] = {}


@dataclass
class Template:
    """A role-prefix template (LLaVA's ``conv_templates`` style)."""

    name: str
    system: str
    user: str
    assistant: str
    user_end: str  # between the user's message and the assistant prefix
    answer_lead: str  # whitespace that starts the assistant text (a word boundary, trained)
    turn_end: str  # text after the stop token, before the next user turn (masked)

    def segments(self, conversations: list[dict], tokenizer: PreTrainedTokenizerBase,
                 add_generation_prompt: bool = False) -> list[Segment]:
        segs: list[Segment] = []
        prefix = self.system
        for i, turn in enumerate(conversations):
            if turn["from"] == "human":
                text = prefix + self.user + turn["value"]
                if i + 1 < len(conversations) or add_generation_prompt:
                    text += self.user_end + self.assistant
                segs.append(Segment(text, False))
            else:
                segs.append(Segment(self.answer_lead + turn["value"], True, append_stop=True))
                prefix = self.turn_end
        return segs

    def jinja(self) -> str:
        """The same format as a Hugging Face chat template, saved with the processor so plain
        ``processor.apply_chat_template`` builds the prompt the model was trained on."""
        def lit(s: str) -> str:
            return s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")

        return (
            "{% set ns = namespace(prefix='" + lit(self.system) + "') %}"
            "{% for message in messages %}"
            "{% if message['content'] is string %}{% set text = message['content'] %}"
            "{% else %}{% set text = namespace(v='') %}"
            "{% for part in message['content'] %}"
            "{% if part['type'] == 'image' %}{% set text.v = text.v + '<image>\\n' %}"
            "{% elif part['type'] == 'text' %}{% set text.v = text.v + part['text'] %}{% endif %}"
            "{% endfor %}{% set text = text.v %}{% endif %}"
            "{% if message['role'] == 'user' %}"
            "{{ ns.prefix + '" + lit(self.user) + "' + text }}"
            "{% if not loop.last or add_generation_prompt %}{{ '" + lit(self.user_end + self.assistant) + "' }}{% endif %}"
            "{% elif message['role'] == 'assistant' %}"
            "{{ '" + lit(self.answer_lead) + "' + text + eos_token }}"
            "{% set ns.prefix = '" + lit(self.turn_end) + "' %}"
            "{% endif %}{% endfor %}"
        )


def register_template(template: Template) -> Template:
    TEMPLATES[template.name] = template
    return template


VICUNA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the human's questions.")

# LLaVA-1.5 (``conv_vicuna_v1``): "SYSTEM USER: q ASSISTANT: a</s>USER: ..."
register_template(Template(name="vicuna_v1", system=VICUNA_SYSTEM + " ", user="USER: ", assistant="ASSISTANT:",
                           user_end=" ", answer_lead=" ", turn_end=""))

# For base LMs (ALLaVA trains from base Phi-2): bare role tags, no system prompt.
register_template(Template(name="plain", system="", user="Human: ", assistant="Assistant:",
                           user_end="\n", answer_lead=" ", turn_end="\n"))


class ChatTemplate:
    """The tokenizer's own ``chat_template``: segments are the differences between the renders
    of successive conversation prefixes; each assistant message's content and the first token
    after it (its end-of-turn token) are trained, the role header and the rest are masked."""

    name = "chat_template"

    def segments(self, conversations: list[dict], tokenizer: PreTrainedTokenizerBase,
                 add_generation_prompt: bool = False) -> list[Segment]:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("template 'chat_template' needs a tokenizer with a chat_template")
        messages = [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]}
                    for t in conversations]
        segs: list[Segment] = []
        done = ""
        for i, msg in enumerate(messages):
            gen = msg["role"] == "user" and (i + 1 < len(messages) or add_generation_prompt)
            text = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False, add_generation_prompt=gen)
            if not text.startswith(done):
                raise ValueError("chat template is not prefix-stable; use a registered template instead")
            piece, done = text[len(done):], text
            if msg["role"] == "user":
                segs.append(Segment(piece, False))
                continue
            at = piece.find(msg["content"])
            if at < 0:
                raise ValueError("chat template rewrites assistant content; cannot mask it exactly")
            end = at + len(msg["content"])
            segs.append(Segment(piece[:at], False))
            segs.append(Segment(piece[at:end], True))
            segs.append(Segment(piece[end:], False, train_first_token=True))
        return [s for s in segs if s.text]

    def jinja(self) -> None:
        return None  # the tokenizer's own


TEMPLATES["chat_template"] = ChatTemplate()  # type: ignore[assignment]


def get_template(name: str):
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown template {name!r}; known: {', '.join(sorted(TEMPLATES))}") from None
