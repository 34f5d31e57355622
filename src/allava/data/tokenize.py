"""Turn a LLaVA conversation into input ids and labels: the rendered prompt, tokenized whole.

The template's segments are joined into one string (the text its saved chat template renders) and
tokenized in ONE call, exactly as ``processor.apply_chat_template(..., tokenize=True)`` and vLLM
tokenize it, so what is trained is what inference feeds, for every tokenizer (byte-level BPE,
SentencePiece legacy or not, Gemma's). Tokenizing segment by segment instead gives SentencePiece
an extra ``▁`` at every segment start (LLaVA-style ``['▁','▁','P','urple']`` for ``['▁','P','urple']``).

Labels come from the characters: a token is trained when its character span (the fast tokenizer's
offsets) overlaps an answer or its stop. So the trained tokens are exactly each answer plus its
stop, with one exception no masking can avoid: when the tokenizer merges the last prompt
characters and the first answer characters into one token (a byte-level BPE merges the space of
``"ASSISTANT: "`` into ``" Purple"``, as LLaVA's ``preprocess_v1`` also trains it; a BPE without a
pre-tokenizer may merge ``":"`` or ``"\\n"`` with the answer's first letters), that token is
trained, prompt characters and all, and the generation prompt, tokenized on its own, then ends
in a different token than training saw there (tests/test_templates.py shows both cases).

The ``<image>`` marker is one added token in the tokenizer; each becomes the exact number of image
tokens the vision tower yields, and truncation never cuts that block.
"""
from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from allava.data.templates import IMAGE_MARKER, ChatTemplate, Segment, TemplateError, get_template

IGNORE_INDEX = -100


class EncodeError(ValueError):
    """A record that cannot become a training sample; the message is the reason."""


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    n_image_tokens: int


def leading_bos(tokenizer: PreTrainedTokenizerBase) -> str:
    """The bos text a registered template writes first: the tokenizer's bos when ``tokenizer(x)``
    adds one and ``bos + x`` tokenized as text gives the same ids (byte-level BPE, legacy
    SentencePiece), so vLLM (which tokenizes a chat prompt without adding special tokens) feeds
    what training saw. '' when the tokenizer adds none, or when a written bos changes the next
    token (non-legacy SentencePiece drops the first word's ``▁`` after it): the tokenizer then adds
    the bos itself, as ``processor.apply_chat_template`` does for a prompt without one."""
    bos = tokenizer.bos_token
    probe = "Hello world. USER: hi"
    added = tokenizer(probe, add_special_tokens=True)["input_ids"]
    if bos is None or not added or added[0] != tokenizer.bos_token_id:
        return ""
    written = tokenizer(bos + probe, add_special_tokens=False)["input_ids"]
    return bos if written == added else ""


def chat_template_for(template, tokenizer: PreTrainedTokenizerBase) -> str:
    """The processor's ``chat_template`` for a template name or object and this tokenizer."""
    template = get_template(template) if isinstance(template, str) else template
    if isinstance(template, ChatTemplate):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("template 'chat_template' needs a tokenizer with a chat_template")
        return template.jinja(tokenizer)
    return template.jinja(bos=bool(leading_bos(tokenizer)))


def stop_token_ids(template: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The token(s) `template` trains as an answer's stop (the eos; Gemma's ``<end_of_turn>`` where the
    tokenizer's eos is ``<eos>``; plain's ``\n``), found by encoding a probe: generation must stop there."""
    enc = ConversationEncoder(tokenizer, template, max_length=10_000)
    probe = [{"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Hello there"}]
    labels = [x for x in enc.encode(probe).labels if x != IGNORE_INDEX]
    return sorted({labels[-1]} | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()))


class ConversationEncoder:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, template: str, image_token: str = IMAGE_MARKER,
                 num_image_tokens: int = 0, max_length: int = 2048):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"{type(tokenizer).__name__}: the encoder needs a fast tokenizer (character offsets); "
                             "load it with AutoTokenizer (use_fast=True)")
        self.tokenizer = tokenizer
        self.template = get_template(template)
        self.image_token = image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.num_image_tokens = num_image_tokens
        self.max_length = max_length
        self.bos_text = "" if isinstance(self.template, ChatTemplate) else leading_bos(tokenizer)

    def render(self, conversations: list[dict], add_generation_prompt: bool = False
               ) -> tuple[str, list[tuple[int, int]], list[int]]:
        """The prompt text, the character spans trained, and the positions whose first token is trained."""
        try:
            segs: list[Segment] = self.template.segments(conversations, self.tokenizer, add_generation_prompt)
        except TemplateError as e:
            raise EncodeError(str(e)) from None
        text, spans, firsts = self.bos_text, [], []
        for seg in segs:
            start = len(text)
            text += seg.text.replace(IMAGE_MARKER, self.image_token)
            if seg.append_stop:
                text += self.tokenizer.eos_token
            if seg.trainable:
                spans.append((start, len(text)))
            if seg.train_first_token:
                firsts.append(start)
        return text, spans, firsts

    def _tokenize(self, text: str, spans: list[tuple[int, int]], firsts: list[int]) -> tuple[list[int], list[int]]:
        bos = self.tokenizer.bos_token
        # as ProcessorMixin.apply_chat_template: a prompt that opens with the bos gets no second one
        out = self.tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)), return_offsets_mapping=True)
        ids, offsets = out["input_ids"], out["offset_mapping"]
        train = [False] * len(ids)
        for k, (s, e) in enumerate(offsets):
            if s == e:  # zero-width (an added bos, a lone prepended '▁'): trained only inside a span
                train[k] = any(a <= s < b for a, b in spans) and (s, e) != (0, 0)
            else:
                train[k] = any(s < b and a < e for a, b in spans)
        for p in firsts:
            k = next((k for k, (s, e) in enumerate(offsets) if e > p), None)
            if k is not None:
                train[k] = True
        full, labels = [], []
        for i, t in zip(ids, train):
            if i == self.image_token_id:
                full += [i] * self.num_image_tokens
                labels += [IGNORE_INDEX] * self.num_image_tokens
            else:
                full.append(i)
                labels.append(i if t else IGNORE_INDEX)
        return full, labels

    def encode(self, conversations: list[dict]) -> Encoded:
        ids, labels = self._tokenize(*self.render(conversations))
        n_image = sum(1 for i in ids if i == self.image_token_id)
        if len(ids) > self.max_length:
            ids, labels = self._truncate(ids, labels, n_image)
        if all(label == IGNORE_INDEX for label in labels):
            raise EncodeError("no assistant tokens to train on")
        return Encoded(ids, labels, n_image)

    def _truncate(self, ids: list[int], labels: list[int], n_image: int) -> tuple[list[int], list[int]]:
        if n_image:
            image_end = max(k for k, i in enumerate(ids) if i == self.image_token_id) + 1
            if image_end >= self.max_length:
                raise EncodeError(f"image block ends at token {image_end}, beyond max_length {self.max_length}")
        ids, labels = ids[: self.max_length], labels[: self.max_length]
        if all(label == IGNORE_INDEX for label in labels):
            raise EncodeError(f"no assistant tokens left after truncation to {self.max_length}")
        return ids, labels

    def prompt_ids(self, conversations: list[dict]) -> list[int]:
        """Ids for generation: the conversation so far (ending with a human turn) + assistant prefix."""
        return self._tokenize(*self.render(conversations, add_generation_prompt=True))[0]
