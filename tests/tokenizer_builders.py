"""Tokenizers of the real families, trained offline on a small corpus with the `tokenizers` library:
byte-level BPE (Phi-2's GPT-2 style, Qwen2's regex split + ChatML), Llama SentencePiece BPE in its
legacy form (``▁`` prepended to every piece) and its non-legacy form (Metaspace, ``▁`` only at the
start of the text), and Gemma's (no prepended ``▁``, bos in its chat template)."""
from __future__ import annotations

import random
import string

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

WORDS = ("what colour is the circle square triangle red blue green purple there are shapes how many "
         "describe image picture in detail a an of and it its left right top bottom is it a photo no yes "
         "answer using single word or phrase the cat sat on mat Purple Yes No 3 2 1 12 chat between curious user "
         "artificial intelligence assistant gives helpful detailed polite answers to user's questions USER ASSISTANT "
         "Human Assistant model").split()

QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
GEMMA = ("{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
         "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
         "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) for _ in range(n)]
    return lines + [f"{w}: {v}.\n{w}?" for w in ("USER", "ASSISTANT", "Human", "Assistant") for v in WORDS[:20]]


def _train(tok: Tokenizer, specials: list[str], vocab_size: int, alphabet: list[str] | None = None) -> None:
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=alphabet or [])
    tok.train_from_iterator(corpus(), trainer=trainer)


def byte_level(kind: str = "phi2", vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """Phi-2 (GPT-2 regex, bos = eos = <|endoftext|>, nothing added) or Qwen2 (its regex, ChatML)."""
    tok = Tokenizer(models.BPE())
    if kind == "qwen2":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        specials = ["<|endoftext|>"]
    tok.decoder = decoders.ByteLevel()
    _train(tok, specials, vocab_size, pre_tokenizers.ByteLevel.alphabet())
    if kind == "qwen2":
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                     clean_up_tokenization_spaces=False)
        hf.chat_template = CHATML
    else:
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                     clean_up_tokenization_spaces=False)
    return hf


def sentencepiece(kind: str = "llama_legacy", vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """Llama's BPE over ``▁``-joined words (legacy: every piece gets a ``▁`` prepended; non-legacy: only the
    text's start), or Gemma's (spaces become ``▁``, nothing prepended, bos in the chat template)."""
    bos, eos = ("<bos>", "<eos>") if kind == "gemma" else ("<s>", "</s>")
    specials = ["<unk>", bos, eos] + (["<pad>", "<start_of_turn>", "<end_of_turn>"] if kind == "gemma" else [])
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False, fuse_unk=True))
    # train on ▁-split words (SentencePiece splits by whitespace while learning), then set the runtime form
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    _train(tok, specials, vocab_size, sorted(set(string.printable) - set(" \t\r\x0b\x0c")) + ["▁"])
    tok.pre_tokenizer = None
    if kind == "llama_legacy":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    elif kind == "llama":
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    else:  # gemma
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token="<unk>",
                                 clean_up_tokenization_spaces=False)
    if kind == "gemma":
        hf.pad_token = "<pad>"
        hf.eos_token = "<end_of_turn>"
        hf.chat_template = GEMMA
    return hf


PHI3 = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


def phi3() -> PreTrainedTokenizerFast:
    """Phi-3: Llama's SentencePiece (legacy) with <|user|> / <|assistant|> / <|end|> turns."""
    hf = sentencepiece("llama_legacy")
    hf.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>", "<|end|>", "<|system|>"]})
    hf.eos_token = "<|end|>"
    hf.chat_template = PHI3
    return hf


def llama3() -> PreTrainedTokenizerFast:
    """Llama-3: byte-level BPE (tiktoken-style regex), <|begin_of_text|> added, header/eot turns."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    _train(tok, specials, 600, pre_tokenizers.ByteLevel.alphabet())
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                 clean_up_tokenization_spaces=False)
    hf.chat_template = LLAMA3
    return hf


FAMILIES = {
    "phi2": lambda: byte_level("phi2"),
    "qwen2": lambda: byte_level("qwen2"),
    "llama_legacy": lambda: sentencepiece("llama_legacy"),
    "llama": lambda: sentencepiece("llama"),
    "gemma": lambda: sentencepiece("gemma"),
    "phi3": phi3,
    "llama3": llama3,
    "stablelm2": lambda: byte_level("phi2"),  # Arcade100k: byte-level BPE, <|endoftext|>, nothing added
}


def build(family: str, image_token: str = "<image>") -> PreTrainedTokenizerFast:
    tok = FAMILIES[family]()
    tok.add_tokens([image_token], special_tokens=True)
    if tok.pad_token is None:
        tok.add_special_tokens({"pad_token": "<pad>"})
    return tok
