"""Loss masking: for every template, the trained tokens are exactly the assistant answers plus
their stop token, and truncation never cuts the image block."""
from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from allava.data.templates import TEMPLATES
from allava.data.tokenize import IGNORE_INDEX, ConversationEncoder, EncodeError

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

CONV = [
    {"from": "human", "value": "<image>\nWhat colour is the circle?"},
    {"from": "gpt", "value": "The circle is red."},
    {"from": "human", "value": "How many shapes?"},
    {"from": "gpt", "value": "There are 3 shapes: 2 squares and 1 circle."},
]


@pytest.fixture(scope="module")
def tokenizer(backbones):
    tok = AutoTokenizer.from_pretrained(backbones["lm"])
    tok.add_tokens(["<image>"], special_tokens=True)
    tok.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
    tok.chat_template = CHATML
    return tok


def trained_spans(ids: list[int], labels: list[int]) -> list[list[int]]:
    spans, cur = [], []
    for i, label in zip(ids, labels):
        if label != IGNORE_INDEX:
            assert label == i
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    return spans + ([cur] if cur else [])


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_trained_tokens_are_answers_plus_stop(tokenizer, name):
    enc = ConversationEncoder(tokenizer, name, num_image_tokens=5, max_length=4096)
    out = enc.encode(CONV)
    spans = trained_spans(out.input_ids, out.labels)
    answers = [t["value"] for t in CONV if t["from"] == "gpt"]
    assert len(spans) == len(answers)
    stop = "<|im_end|>" if name == "chat_template" else tokenizer.eos_token
    for span, answer in zip(spans, answers):
        text = tokenizer.decode(span)
        lead = text[: len(text) - len(text.lstrip())]
        assert lead.strip() == ""  # only a word-boundary space may open the answer
        assert text.lstrip() == answer + stop
    assert out.input_ids.count(enc.image_token_id) == 5
    assert all(label == IGNORE_INDEX for i, label in zip(out.input_ids, out.labels) if i == enc.image_token_id)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_generation_prompt_is_training_prefix(tokenizer, name):
    enc = ConversationEncoder(tokenizer, name, num_image_tokens=5, max_length=4096)
    full = enc.encode(CONV).input_ids
    prompt = enc.prompt_ids(CONV[:1])
    assert full[: len(prompt)] == prompt


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_truncation_never_cuts_the_image_block(tokenizer, name):
    n_image = 7
    enc = ConversationEncoder(tokenizer, name, num_image_tokens=n_image, max_length=4096)
    full = enc.encode(CONV).input_ids
    for max_length in range(1, len(full) + 2):
        enc.max_length = max_length
        try:
            out = enc.encode(CONV)
        except EncodeError as e:
            assert "max_length" in str(e) or "no assistant tokens" in str(e)
            continue
        assert len(out.input_ids) <= max_length
        assert out.input_ids.count(enc.image_token_id) == n_image
        assert any(label != IGNORE_INDEX for label in out.labels)


def test_vicuna_v1_matches_llava_format(tokenizer):
    enc = ConversationEncoder(tokenizer, "vicuna_v1", num_image_tokens=1, max_length=4096)
    text = tokenizer.decode(enc.encode(CONV).input_ids)
    assert text.startswith("A chat between a curious human and an artificial intelligence assistant.")
    assert " USER: <image>\nWhat colour is the circle? ASSISTANT: The circle is red.</s>USER: How many shapes?" in text


def test_unknown_template_is_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match="unknown template"):
        ConversationEncoder(tokenizer, "nope")
