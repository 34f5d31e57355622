"""Turn a LLaVA conversation into input ids and labels, segment by segment.

The loss mask comes from the template's segments, never from re-counting lengths afterwards, so
there is no "tokenization mismatch" case to silently ignore. The ``<image>`` marker becomes the
exact number of image tokens the vision tower yields, and truncation never cuts that block.
"""
from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from allava.data.templates import ChatTemplate, Segment, get_template

IGNORE_INDEX = -100
IMAGE_MARKER = "<image>"


class EncodeError(ValueError):
    """A record that cannot become a training sample; the message is the reason."""


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    n_image_tokens: int


class ConversationEncoder:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, template: str, image_token: str = IMAGE_MARKER,
                 num_image_tokens: int = 0, max_length: int = 2048):
        self.tokenizer = tokenizer
        self.template = get_template(template)
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.num_image_tokens = num_image_tokens
        self.max_length = max_length
        # What ``tokenizer(text)`` puts in front (a bos for Llama-style tokenizers, nothing for GPT-2 style).
        self.prefix_ids: list[int] = (
            [] if isinstance(self.template, ChatTemplate)
            else [i for i in tokenizer("", add_special_tokens=True)["input_ids"] if i != tokenizer.eos_token_id]
        )

    def _text_ids(self, text: str) -> list[int]:
        ids: list[int] = []
        for k, piece in enumerate(text.split(IMAGE_MARKER)):
            if k:
                ids.extend([self.image_token_id] * self.num_image_tokens)
            if piece:
                ids.extend(self.tokenizer(piece, add_special_tokens=False)["input_ids"])
        return ids

    def _segment_ids(self, seg: Segment) -> tuple[list[int], list[int]]:
        ids = self._text_ids(seg.text)
        if seg.trainable:
            labels = list(ids)
        else:
            labels = [IGNORE_INDEX] * len(ids)
            if seg.train_first_token and ids:
                labels[0] = ids[0]
        if seg.append_stop:
            ids.append(self.tokenizer.eos_token_id)
            labels.append(self.tokenizer.eos_token_id)
        return ids, labels

    def encode(self, conversations: list[dict]) -> Encoded:
        ids, labels = list(self.prefix_ids), [IGNORE_INDEX] * len(self.prefix_ids)
        for seg in self.template.segments(conversations, self.tokenizer):
            seg_ids, seg_labels = self._segment_ids(seg)
            ids += seg_ids
            labels += seg_labels
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
        ids = list(self.prefix_ids)
        for seg in self.template.segments(conversations, self.tokenizer, add_generation_prompt=True):
            ids += self._segment_ids(seg)[0]
        return ids
