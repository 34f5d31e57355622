"""What is trained is what inference feeds: for every shipped template and five tokenizer families
built offline (Phi-2 and Qwen2 byte-level BPE, Llama SentencePiece legacy and non-legacy, Gemma),
the encoder's input ids are the tokenization of the whole rendered prompt (the processor's chat
template, tokenized in one call), and the trained tokens are exactly each answer plus its stop.

Reference: LLaVA's ``preprocess_v1`` / ``preprocess_plain`` (llava/train/train.py) with
``tokenizer_image_token`` (llava/mm_utils.py) and ``conv_vicuna_v1`` / ``conv_llava_plain``
(llava/conversation.py), reproduced below from their logic."""
from __future__ import annotations

import random

import pytest
from PIL import Image
from transformers import AutoProcessor, CLIPImageProcessor, LlavaProcessor

from allava.data.templates import TEMPLATES, VICUNA_SYSTEM, ChatTemplate
from allava.data.tokenize import IGNORE_INDEX, ConversationEncoder, EncodeError, chat_template_for

from tokenizer_builders import build

FAMILIES = ("phi2", "qwen2", "llama_legacy", "llama", "gemma", "phi3", "llama3")
HAS_CHAT_TEMPLATE = ("qwen2", "gemma", "phi3", "llama3")

CONV = [
    {"from": "human", "value": "<image>\nWhat colour is the circle?"},
    {"from": "gpt", "value": "The circle is red."},
    {"from": "human", "value": "How many shapes?"},
    {"from": "gpt", "value": "There are 3 shapes: 2 squares and 1 circle."},
]
CAPTION = [{"from": "human", "value": "<image>\nDescribe the image concisely."},
           {"from": "gpt", "value": "A purple cat sat on the mat."}]

ANSWER_WORDS = "Purple Yes No the cat sat on mat red blue 3 12 there are shapes it is a photo".split()


def conversations(n: int = 153, seed: int = 0) -> list[list[dict]]:
    """Varied LLaVA conversations: 1-3 rounds, an image in most, answers with digits, punctuation, lists."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        turns = []
        for r in range(rng.randint(1, 3)):
            q = " ".join(rng.choice(ANSWER_WORDS).lower() for _ in range(rng.randint(2, 8))) + "?"
            if r == 0 and rng.random() < 0.7:
                q = "<image>\n" + q
            words = [rng.choice(ANSWER_WORDS) for _ in range(rng.randint(1, 12))]
            a = " ".join(words) + rng.choice([".", "!", "", ":\n1. cat\n2. mat"])
            turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        out.append(turns)
    return out


def captions(n: int = 40, seed: int = 1) -> list[list[dict]]:
    rng = random.Random(seed)
    return [[{"from": "human", "value": "<image>\nDescribe the image."},
             {"from": "gpt", "value": " ".join(rng.choice(ANSWER_WORDS) for _ in range(rng.randint(2, 10))) + "."}]
            for _ in range(n)]


def templates_for(family: str) -> list[str]:
    return [n for n in sorted(TEMPLATES) if n != "chat_template" or family in HAS_CHAT_TEMPLATE]


def openai_messages(conv: list[dict]) -> list[dict]:
    """Our LLaVA turns as the OpenAI chat shape: an image part for each <image>, then the text."""
    out = []
    for t in conv:
        text = t["value"].replace("<image>\n", "").replace("<image>", "")
        parts = [{"type": "image"}] * t["value"].count("<image>") + [{"type": "text", "text": text}]
        out.append({"role": "user" if t["from"] == "human" else "assistant", "content": parts})
    return out


def whole(tok, text: str, image_id: int, n_image: int) -> list[int]:
    """The whole prompt tokenized in one call (bos added unless the text carries it), images expanded."""
    ids = tok(text, add_special_tokens=not text.startswith(tok.bos_token or "\0"))["input_ids"]
    return [j for i in ids for j in ([i] * n_image if i == image_id else [i])]


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


def stop_text(tok, name: str) -> str:
    return "\n" if name == "plain" else tok.eos_token


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param, build(request.param)


# --- the rendered prompt, tokenized whole ---------------------------------------------------------

def test_input_ids_are_the_whole_prompt_tokenized_and_labels_are_answer_plus_stop(family):
    name_f, tok = family
    image_id = tok.convert_tokens_to_ids("<image>")
    for name in templates_for(name_f):
        enc = ConversationEncoder(tok, name, num_image_tokens=3, max_length=10_000)
        template = chat_template_for(name, tok)
        for conv in (captions() if name == "plain" else conversations()):
            out = enc.encode(conv)
            text = tok.apply_chat_template(openai_messages(conv), chat_template=template, tokenize=False)
            assert out.input_ids == whole(tok, text, image_id, 3), (name_f, name, conv)
            spans = trained_spans(out.input_ids, out.labels)
            answers = [t["value"] for t in conv if t["from"] == "gpt"]
            assert len(spans) == len(answers), (name_f, name, conv)
            stop = stop_text(tok, name)  # chat templates: the end-of-turn token, which is the eos
            for span, answer in zip(spans, answers):
                decoded = tok.decode(span)
                # only a word-boundary space (merged into the answer's first token) may open the span
                assert decoded.lstrip(" ") == answer + stop, (name_f, name, decoded)
            assert all(lab == IGNORE_INDEX for i, lab in zip(out.input_ids, out.labels) if i == image_id)


def test_generation_prompt_is_the_training_prefix(family):
    name_f, tok = family
    for name in templates_for(name_f):
        enc = ConversationEncoder(tok, name, num_image_tokens=3, max_length=10_000)
        for conv in (captions(10) if name == "plain" else conversations(30)):
            full = enc.encode(conv).input_ids
            prompt = enc.prompt_ids(conv[:1])
            assert full[: len(prompt)] == prompt, (name_f, name)


def test_processor_chat_template_gives_the_encoders_prompt(family, tmp_path):
    """Issue 15: the processor saved with the checkpoint renders, from OpenAI-style messages, exactly the
    prompt the encoder trained on (what vLLM / SGLang then feed), for every template we ship."""
    name_f, tok = family
    image = Image.new("RGB", (20, 20), (200, 0, 0))
    for name in templates_for(name_f):
        enc = ConversationEncoder(tok, name, num_image_tokens=4, max_length=10_000)
        LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 16},
                                                           crop_size={"height": 16, "width": 16}),
                       tokenizer=tok, patch_size=8, vision_feature_select_strategy="full",
                       num_additional_image_tokens=0, chat_template=chat_template_for(name, tok)
                       ).save_pretrained(tmp_path / name)
        proc = AutoProcessor.from_pretrained(tmp_path / name)
        assert proc.chat_template == chat_template_for(name, tok)
        for conv in ([CAPTION] if name == "plain" else [CONV, CONV[:2], [CONV[2], CONV[3]]]):
            for upto in range(1, len(conv) + 1, 2):  # each generation prompt: history + a user turn
                msgs = openai_messages(conv[:upto])
                for m in msgs:
                    m["content"] = [dict(p, image=image) if p["type"] == "image" else p for p in m["content"]]
                out = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)
                assert list(out["input_ids"][0]) == enc.prompt_ids(conv[:upto]), (name_f, name, upto)
            text = proc.apply_chat_template(openai_messages(conv), tokenize=False)
            assert text == enc.render(conv)[0], (name_f, name)


# --- against LLaVA --------------------------------------------------------------------------------

def llava_tokenizer_image_token(prompt: str, tok, image_id: int) -> list[int]:
    """llava/mm_utils.py tokenizer_image_token: each chunk between <image> markers tokenized in its own
    call, the first chunk's bos kept, the image index between chunks."""
    chunks = [tok(c)["input_ids"] for c in prompt.split("<image>")]
    offset = 1 if chunks[0] and tok.bos_token_id is not None and chunks[0][0] == tok.bos_token_id else 0
    ids = chunks[0][:offset]
    for k, chunk in enumerate(chunks):
        if k:
            ids.append(image_id)
        ids += chunk[offset:]
    return ids


def llava_preprocess_v1(conv: list[dict], tok, image_id: int, legacy: bool) -> tuple[list[int], list[int]]:
    """llava/train/train.py preprocess_v1 with conv_vicuna_v1 (transformers >= 0.14 branch); sep2 is
    Vicuna's '</s>', i.e. the tokenizer's eos (Phi-2 ports of LLaVA put '<|endoftext|>' there)."""
    prompt, sep2 = VICUNA_SYSTEM + " ", tok.eos_token
    for k, t in enumerate(conv):
        prompt += ("USER" if t["from"] == "human" else "ASSISTANT") + ": " + t["value"] + (" ", sep2)[k % 2]
    has_image = "<image>" in prompt
    tokenize = (lambda s: llava_tokenizer_image_token(s, tok, image_id)) if has_image else (
        lambda s: tok(s)["input_ids"])
    ids = tokenize(prompt)
    target = list(ids)
    sep = " ASSISTANT: "
    cur = 1
    target[:cur] = [IGNORE_INDEX] * cur
    for i, rou in enumerate(prompt.split(sep2)):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len, instruction_len = len(tokenize(rou)), len(tokenize(parts[0])) - 2
        if i != 0 and not legacy:
            round_len, instruction_len = round_len - 1, instruction_len - 1
        target[cur: cur + instruction_len] = [IGNORE_INDEX] * len(target[cur: cur + instruction_len])
        cur += round_len
    target[cur:] = [IGNORE_INDEX] * len(target[cur:])
    if cur != len(ids):  # LLaVA's "WARNING: tokenization mismatch ... (ignored)"
        target = [IGNORE_INDEX] * len(ids)
    return ids, target


def llava_preprocess_plain(conv: list[dict], tok, image_id: int) -> tuple[list[int], list[int]]:
    """llava/train/train.py preprocess_plain: '<image>' + caption + conv_llava_plain.sep ('\\n')."""
    ids = llava_tokenizer_image_token("<image>" + conv[1]["value"] + "\n", tok, image_id)
    n = len(llava_tokenizer_image_token("<image>", tok, image_id))
    return ids, [IGNORE_INDEX] * n + ids[n:]


@pytest.mark.parametrize("name_f", ["llama_legacy", "llama", "phi2"])
def test_vicuna_v1_against_llava_preprocess_v1(name_f):
    """Legacy SentencePiece and byte-level BPE: ids AND labels equal LLaVA's on all 153 conversations.
    Non-legacy SentencePiece: LLaVA tokenizes the text after each <image> in a call of its own, which
    prepends a '▁' that the whole prompt (and so llava-hf's processor at inference) does not have:
    there the ids differ by exactly that, by design; the trained tokens are the same wherever LLaVA's
    own length arithmetic does not hit its 'tokenization mismatch' (which drops the whole sample)."""
    tok = build(name_f)
    image_id = tok.convert_tokens_to_ids("<image>")
    enc = ConversationEncoder(tok, "vicuna_v1", num_image_tokens=1, max_length=10_000)
    same_ids = same_labels = llava_dropped = 0
    convs = conversations()
    for conv in convs:
        ours = enc.encode(conv)
        ids, labels = llava_preprocess_v1(conv, tok, image_id, legacy=name_f != "llama")
        same_ids += ours.input_ids == ids
        if all(lab == IGNORE_INDEX for lab in labels):
            llava_dropped += 1
            continue
        if name_f == "phi2":
            continue  # no bos: LLaVA's masking arithmetic (cur_len = 1, len - 2) assumes one
        same_labels += [x for x in ours.labels if x != IGNORE_INDEX] == [x for x in labels if x != IGNORE_INDEX]
    n = len(convs)
    if name_f == "llama_legacy":
        assert same_ids == n and same_labels == n and llava_dropped == 0
    elif name_f == "phi2":
        assert same_ids == n
    else:
        with_image = sum("<image>" in conv[0]["value"] for conv in convs)
        assert same_ids == n - with_image  # differs exactly where LLaVA split at <image>
        assert same_labels == n - llava_dropped > 0


@pytest.mark.parametrize("name_f", ["llama_legacy", "llama", "phi2", "gemma"])
def test_plain_against_llava_preprocess_plain(name_f):
    """LLaVA's pretraining format: '<image>' + caption + '\\n', only the caption and '\\n' trained."""
    tok = build(name_f)
    image_id = tok.convert_tokens_to_ids("<image>")
    enc = ConversationEncoder(tok, "plain", num_image_tokens=1, max_length=10_000)
    for conv in captions():
        ours = enc.encode(conv)
        ids, labels = llava_preprocess_plain(conv, tok, image_id)
        if name_f in ("llama_legacy", "phi2"):
            assert (ours.input_ids, ours.labels) == (ids, labels)
        trained = tok.decode([x for x in ours.labels if x != IGNORE_INDEX])
        assert trained.lstrip(" ") == conv[1]["value"] + "\n"


def test_vicuna_v1_is_llava_15s_conv_vicuna_v1():
    tok = build("llama_legacy")
    enc = ConversationEncoder(tok, "vicuna_v1", num_image_tokens=1, max_length=4096)
    text = enc.render(CONV)[0]
    assert text == ("<s>A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                    "helpful, detailed, and polite answers to the user's questions. USER: <image>\nWhat colour is the "
                    "circle? ASSISTANT: The circle is red.</s>USER: How many shapes? ASSISTANT: There are 3 shapes: "
                    "2 squares and 1 circle.</s>")
    assert enc.render(CONV[:1], add_generation_prompt=True)[0].endswith("circle? ASSISTANT:")


def test_plain_refuses_what_llava_pretraining_cannot_take():
    enc = ConversationEncoder(build("phi2"), "plain", num_image_tokens=2)
    with pytest.raises(EncodeError, match="one human turn and one answer, got 4 turns"):
        enc.encode(CONV)
    with pytest.raises(EncodeError, match="exactly one <image>"):
        enc.encode([{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}])


def test_a_token_across_the_prompt_answer_boundary_is_trained_and_the_prompt_cannot_match():
    """The one case no masking can make exact: a BPE without a pre-tokenizer (Gemma-style) that has
    merged the header's last character with the answer's first ('\\n' + 'Yes' -> '\\nYes'). The ids
    are still the whole prompt's; that token is trained (it carries the answer's first letters), so
    the trained text opens with the header's '\\n'; and the generation prompt, ending in a lone '\\n',
    is not a prefix of the training ids (the model never saw that token there)."""
    from tokenizers import Tokenizer, models, normalizers
    from transformers import PreTrainedTokenizerFast

    from tokenizer_builders import GEMMA
    import string

    chars = sorted(set(string.printable) - set(" \t\r\x0b\x0c")) + ["▁"]
    vocab = {t: i for i, t in enumerate(["<unk>", "<bos>", "<end_of_turn>", "<start_of_turn>", "<pad>"] + chars
                                         + ["\nY", "es", "\nYes"])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("\n", "Y"), ("e", "s"), ("\nY", "es")], unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<end_of_turn>",
                                 unk_token="<unk>", pad_token="<pad>")
    hf.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<image>"]})
    hf.chat_template = GEMMA
    enc = ConversationEncoder(hf, "chat_template", num_image_tokens=1)
    conv = [{"from": "human", "value": "Is it red?"}, {"from": "gpt", "value": "Yes"}]
    out = enc.encode(conv)
    assert out.input_ids == hf(hf.apply_chat_template(ChatTemplate.messages(conv), tokenize=False),
                               add_special_tokens=False)["input_ids"]
    assert hf.convert_ids_to_tokens([x for x in out.labels if x != IGNORE_INDEX]) == ["\nYes", "<end_of_turn>"]
    prompt = enc.prompt_ids(conv[:1])
    assert out.input_ids[: len(prompt)] != prompt and out.input_ids[: len(prompt) - 1] == prompt[:-1]


@pytest.mark.parametrize("name", sorted(n for n in TEMPLATES if n != "chat_template"))
def test_truncation_never_cuts_the_image_block(name):
    tok = build("llama_legacy")
    n_image = 7
    enc = ConversationEncoder(tok, name, num_image_tokens=n_image, max_length=4096)
    conv = CAPTION if name == "plain" else CONV
    full = enc.encode(conv).input_ids
    for max_length in range(1, len(full) + 2):
        enc.max_length = max_length
        try:
            out = enc.encode(conv)
        except EncodeError as e:
            assert "max_length" in str(e) or "no assistant tokens" in str(e)
            continue
        assert len(out.input_ids) <= max_length
        assert out.input_ids.count(enc.image_token_id) == n_image
        assert any(label != IGNORE_INDEX for label in out.labels)


def test_unknown_template_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown template"):
        ConversationEncoder(build("phi2"), "nope")


def test_the_trained_stop_is_where_generation_stops():
    """Gemma's tokenizer ends text with <eos> but a turn with <end_of_turn>: the stop trained (the
    token after each answer) is what the checkpoint's generation config stops at, with the eos."""
    from allava.data.tokenize import stop_token_ids

    tok = build("gemma")
    tok.eos_token = "<eos>"
    assert stop_token_ids("chat_template", tok) == sorted({tok.convert_tokens_to_ids("<end_of_turn>"), tok.eos_token_id})
    assert stop_token_ids("vicuna_v1", build("llama_legacy")) == [build("llama_legacy").eos_token_id]
