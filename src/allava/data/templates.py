"""Conversation templates: how a list of human/gpt turns becomes text, and which part is trained.

A template renders a conversation into *segments*: text pieces that are either prompt (masked
from the loss) or assistant answers (trained), with the stop that ends each answer. The encoder
(``allava.data.tokenize``) joins the segments into ONE string and tokenizes it whole, so the ids
are those inference feeds; the segments only say which characters are trained.

Every template also writes itself as a Hugging Face chat template (``jinja``), saved as the
processor's ``chat_template``: ``processor.apply_chat_template`` on OpenAI-style messages then
renders exactly the text we trained on, and vLLM / SGLang serve the checkpoint as it is.

Shipped: ``vicuna_v1`` (LLaVA-1.5's ``conv_vicuna_v1``), ``plain`` (LLaVA's pretraining format,
``conv_llava_plain``), ``human_assistant`` (bare role tags for base LMs such as Phi-2), and
``chat_template`` (the tokenizer's own). Add your own with ``register_template(Template(...))``.
"""
from __future__ import annotations

from dataclasses import dataclass
from transformers import PreTrainedTokenizerBase

IMAGE_MARKER = "<image>"


class TemplateError(ValueError):
    """A conversation the template cannot render (the message is the reason)."""


@dataclass
class Segment:
    text: str
    trainable: bool
    append_stop: bool = False  # after the text, the tokenizer's eos (written as text) stops the answer (trained)
    train_first_token: bool = False  # the text opens with the answer's stop token (chat templates): train it


TEMPLATES: dict[str, "Template"] = {}


def _lit(s: str) -> str:
    """`s` as a single-quoted Jinja string literal's body."""
    return s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")


# OpenAI-style content (a string, or parts {"type": "image"|"image_url"|"text"}) as our data's text:
# one "<image>\n" per image first (LLaVA's preprocess_multimodal order), then the text parts.
_CONTENT_TEXT = (
    "{% macro content_text(content) %}"
    "{% if content is string %}{{ content }}{% else %}"
    "{% for part in content %}{% if part['type'] in ('image', 'image_url') %}{{ '<image>\\n' }}{% endif %}{% endfor %}"
    "{% for part in content %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}{% endmacro %}"
)


@dataclass
class Template:
    """A role-prefix template (LLaVA's ``conv_templates`` style, separator style TWO)."""

    name: str
    system: str  # the text before the first user turn, separator included
    user: str
    assistant: str
    user_end: str  # between the user's message and the assistant prefix
    answer_lead: str  # between the assistant prefix and the answer (masked; merges into the answer's first token)
    turn_end: str  # text after the stop token, before the next user turn (masked)
    system_sep: str = ""  # after a system message given in the messages (replacing `system`)

    def segments(self, conversations: list[dict], tokenizer: PreTrainedTokenizerBase | None,
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
                if segs and not segs[-1].trainable:
                    segs[-1].text += self.answer_lead
                else:
                    segs.append(Segment(self.answer_lead, False))
                segs.append(Segment(turn["value"], True, append_stop=True))
                prefix = self.turn_end
        return segs

    def jinja(self, bos: bool = False) -> str:
        """The same format as a Hugging Face chat template. `bos`: open with ``bos_token`` (when the
        tokenizer adds one and writing it as text leaves the tokens after it unchanged; see
        ``tokenize.leading_bos``)."""
        return (
            _CONTENT_TEXT
            + ("{{ bos_token }}" if bos else "")
            + "{% set ns = namespace(prefix='" + _lit(self.system) + "') %}"
            "{% for message in messages %}"
            "{% if message['role'] == 'system' %}"
            "{% set ns.prefix = content_text(message['content']) + '" + _lit(self.system_sep) + "' %}"
            "{% elif message['role'] == 'user' %}"
            "{{ ns.prefix + '" + _lit(self.user) + "' + content_text(message['content']) }}"
            "{% if not loop.last or add_generation_prompt %}{{ '" + _lit(self.user_end + self.assistant) + "' }}{% endif %}"
            "{% elif message['role'] == 'assistant' %}"
            "{{ '" + _lit(self.answer_lead) + "' + content_text(message['content']) + eos_token }}"
            "{% set ns.prefix = '" + _lit(self.turn_end) + "' %}"
            "{% endif %}{% endfor %}"
        )


def register_template(template):
    TEMPLATES[template.name] = template
    return template


# LLaVA-1.5 (llava/conversation.py ``conv_vicuna_v1``, what ``--version v1`` trains with):
# "SYSTEM USER: q ASSISTANT: a</s>USER: ..."; the generation prompt ends with "ASSISTANT:".
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
register_template(Template(name="vicuna_v1", system=VICUNA_SYSTEM + " ", user="USER: ", assistant="ASSISTANT:",
                           user_end=" ", answer_lead=" ", turn_end="", system_sep=" "))

# For base LMs (ALLaVA trains from base Phi-2): bare role tags, no system prompt.
register_template(Template(name="human_assistant", system="", user="Human: ", assistant="Assistant:",
                           user_end="\n", answer_lead=" ", turn_end="\n", system_sep="\n"))


@dataclass
class PlainTemplate:
    """LLaVA's pretraining format (``conv_llava_plain``, ``preprocess_plain`` in llava/train/train.py):
    the human turn becomes its ``<image>`` marker alone (the instruction text is dropped), then the
    caption and the separator ``\\n``, which is the answer's stop and trained with it. One image and
    one answer per record, as LLaVA asserts; anything else is refused with the reason."""

    name: str = "plain"
    stop: str = "\n"

    def segments(self, conversations: list[dict], tokenizer: PreTrainedTokenizerBase | None,
                 add_generation_prompt: bool = False) -> list[Segment]:
        roles = [t["from"] for t in conversations]
        if roles not in (["human", "gpt"], ["human"]):
            raise TemplateError(f"template 'plain' (LLaVA pretraining) takes one human turn and one answer, "
                                f"got {len(conversations)} turns")
        markers = conversations[0]["value"].count(IMAGE_MARKER)
        if markers != 1:
            raise TemplateError(f"template 'plain' (LLaVA pretraining) needs exactly one <image> in the human turn, "
                                f"found {markers}")
        segs = [Segment(IMAGE_MARKER, False)]
        if len(conversations) == 2:
            segs.append(Segment(conversations[1]["value"] + self.stop, True))
        return segs

    def jinja(self, bos: bool = False) -> str:
        return (
            _CONTENT_TEXT + ("{{ bos_token }}" if bos else "")
            + "{% for message in messages %}"
            "{% if message['role'] == 'user' %}{{ '<image>' }}"
            "{% elif message['role'] == 'assistant' %}{{ content_text(message['content']) + '" + _lit(self.stop) + "' }}"
            "{% endif %}{% endfor %}"
        )


register_template(PlainTemplate())


class ChatTemplate:
    """The tokenizer's own ``chat_template``: the conversation is rendered once; each assistant
    message's content is found after the render of the conversation before it (with the generation
    prompt), and that content plus the first token after it (its end-of-turn token) are trained."""

    name = "chat_template"

    @staticmethod
    def messages(conversations: list[dict]) -> list[dict]:
        return [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]}
                for t in conversations]

    def segments(self, conversations: list[dict], tokenizer: PreTrainedTokenizerBase,
                 add_generation_prompt: bool = False) -> list[Segment]:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("template 'chat_template' needs a tokenizer with a chat_template")
        messages = self.messages(conversations)
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        segs: list[Segment] = []
        done = 0
        for i, msg in enumerate(messages):
            if msg["role"] != "assistant":
                continue
            before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
            if not text.startswith(before):
                raise TemplateError("chat template is not prefix-stable; use a registered template instead")
            at = text.find(msg["content"], max(done, len(before)))
            if at < 0:
                raise TemplateError("chat template rewrites assistant content; cannot mask it exactly")
            end = at + len(msg["content"])
            segs += [Segment(text[done:at], False), Segment(text[at:end], True)]
            segs.append(Segment("", False, train_first_token=True))  # the stop: the first token from `end`
            done = end
        segs.append(Segment(text[done:], False))
        return [s for s in segs if s.text or s.train_first_token]

    @staticmethod
    def jinja(tokenizer: PreTrainedTokenizerBase) -> str:
        """The tokenizer's template behind a header that turns OpenAI-style content parts into our
        data's text (``<image>\\n`` per image, then the text), so it takes both message shapes."""
        if tokenizer.chat_template.startswith(_CONTENT_TEXT):  # a checkpoint's tokenizer: already wrapped
            return tokenizer.chat_template
        return (
            _CONTENT_TEXT
            + "{% set ns = namespace(messages=[]) %}{% for message in messages %}"
            "{% set ns.messages = ns.messages + [{'role': message['role'], "
            "'content': content_text(message['content']) | string}] %}{% endfor %}"
            "{% set messages = ns.messages %}"
            + tokenizer.chat_template
        )


TEMPLATES["chat_template"] = ChatTemplate()  # type: ignore[assignment]


def resolve_template(name: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """``auto``: the tokenizer's own chat template where it has one (instruct LMs), else
    ``human_assistant`` (base LMs); any other name as given."""
    if name != "auto":
        return name
    return "chat_template" if getattr(tokenizer, "chat_template", None) else "human_assistant"


def get_template(name: str):
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown template {name!r}; known: {', '.join(sorted(TEMPLATES))}") from None
