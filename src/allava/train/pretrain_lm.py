"""Stage 0b: pretrain a tiny Llama-architecture LM from scratch (Phi-2 stand-in).

A plain PyTorch loop: on a 2-core CPU it is faster and more predictable than `Trainer`.
Lines are tokenized once, each followed by eos, concatenated and cut into fixed-length blocks
(no padding, every token is a training token). Conversation documents (a scene in words and its
questions) can take a share of the steps instead: each document whole in one row, the loss on its
answers only, as the stages train. Packed next-token loss on such documents is almost all scene
text, which the LM cannot predict; the answers, which need a look-up in that text, are ~4% of it.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerBase

from allava.data.dataset import Collator
from allava.data.tokenize import ConversationEncoder, EncodeError, Encoded
from allava.model.presets import TinyLM
from allava.train.loop import random_batches, train_steps
from allava.train.sampler import ModalityGroupedSampler


@dataclass
class LMPretrainConfig:
    """Defaults: the quickstart's ~60 s budget (about 1.6 steps/s on 2 Zen 4 cores with bf16)."""

    max_steps: int = 90
    batch_size: int = 32
    seq_len: int = 128
    lr: float = 2e-3
    warmup_ratio: float = 0.05
    seed: int = 0
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    bf16: bool | None = None  # bf16 autocast (fp32 master weights); None = when the CPU has native bf16
    document_share: float = 0.0  # share of the steps on whole documents with the loss on answers only

    def __post_init__(self) -> None:
        if not 0.0 <= self.document_share <= 1.0:
            raise ValueError(f"document_share must be within [0, 1], got {self.document_share}")


def pack_blocks(texts: list[str], tokenizer: PreTrainedTokenizerBase, seq_len: int) -> torch.Tensor:
    """Tokenize `texts`, join them with eos and cut into a (num_blocks, seq_len) id tensor."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for line in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.extend(line)
        ids.append(eos)
    n = len(ids) // seq_len
    if n == 0:
        raise ValueError(f"corpus has {len(ids)} tokens, fewer than one block of {seq_len}")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def conversation_texts(records: list[dict], template: str) -> list[str]:
    """LLaVA text-only records rendered in `template`, cut after each answer: `pack_blocks` then
    puts the eos after every answer, so the LM sees exactly the turn layout it is later tuned on."""
    from allava.data.templates import get_template

    tpl = get_template(template)
    texts: list[str] = []
    for rec in records:
        piece = ""
        for seg in tpl.segments(rec["conversations"], None):
            piece += seg.text
            if seg.append_stop:
                texts.append(piece)
                piece = ""
    return texts


def answer_rows(records: list[dict], tokenizer: PreTrainedTokenizerBase, template: str,
                max_len: int) -> tuple[list[Encoded], int]:
    """Each conversation encoded whole in `template` with labels on the assistant turns only
    (`ConversationEncoder`, the stages' own encoding); those longer than `max_len` are cut there.
    Returns the rows and how many reach `max_len` (cut, or exactly that long)."""
    enc = ConversationEncoder(tokenizer, template, max_length=max_len)
    rows = []
    for rec in records:
        try:
            rows.append(enc.encode(rec["conversations"]))
        except (EncodeError, KeyError, TypeError) as e:
            raise ValueError(f"LM document {rec.get('id', '?')}: {e}") from None
    return rows, sum(len(r.input_ids) == max_len for r in rows)


def grouped_batches(lengths: list[int], batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless random batches of similar lengths: the stages' length grouping
    (`ModalityGroupedSampler`, every row a text row) epoch after epoch, full batches only."""
    sampler = ModalityGroupedSampler([-n for n in lengths], batch_size, seed=seed)
    while True:
        order = list(sampler)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield order[i : i + batch_size]
        sampler.set_epoch(sampler.epoch + 1)


# Padded lengths rounded up to this: with a new shape every step the CPU allocator's peak kept
# growing (6.2 GiB after 400 steps of the quickstart's documents against 1.5 for packed blocks).
DOCUMENT_PAD_MULTIPLE = 32


def document_steps(max_steps: int, share: float) -> list[bool]:
    """Which steps train on documents: spread evenly, `floor(share * max_steps)` of them."""
    return [int((i + 1) * share + 1e-9) > int(i * share + 1e-9) for i in range(max_steps)]


def build_lm(tokenizer: PreTrainedTokenizerBase, preset: TinyLM) -> LlamaForCausalLM:
    cfg = preset.config(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    return LlamaForCausalLM(cfg)


def pretrain_lm(
    texts: list[str],
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    preset: TinyLM,
    cfg: LMPretrainConfig,
    progress: bool = True,
    documents: list[dict] | None = None,
    template: str = "human_assistant",
) -> dict:
    """Train a randomly initialised LM on next-token prediction and save it (with tokenizer) to `out_dir`.

    `documents` (LLaVA conversation records) take `cfg.document_share` of the steps, whole, with the
    loss on their answers (rendered in `template`); the other steps train on `texts` packed.
    Returns stats: steps, final_loss (mean of the last 10 steps), tokens_per_s, steps_per_s,
    wall_s (whole call), num_blocks, num_params and the per-step loss history.
    """
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if cfg.seq_len > preset.max_position_embeddings:
        raise ValueError(f"seq_len {cfg.seq_len} > max_position_embeddings {preset.max_position_embeddings}")
    on_docs = document_steps(cfg.max_steps, cfg.document_share if documents else 0.0)
    blocks = pack_blocks(texts, tokenizer, cfg.seq_len) if not all(on_docs) else torch.empty(0, cfg.seq_len)
    rows, cut = answer_rows(documents, tokenizer, template, preset.max_position_embeddings) if any(on_docs) else ([], 0)
    model = build_lm(tokenizer, preset)
    model.train()

    batches = random_batches(len(blocks), cfg.batch_size, torch.Generator().manual_seed(cfg.seed)) if len(blocks) else None
    doc_batches = grouped_batches([len(r.input_ids) for r in rows], cfg.batch_size, cfg.seed) if rows else None
    collate = Collator(tokenizer.pad_token_id, pad_to_multiple_of=DOCUMENT_PAD_MULTIPLE)
    samples = [{"input_ids": torch.tensor(r.input_ids), "labels": torch.tensor(r.labels), "pixel_values": None}
               for r in rows]  # the stages' text-only sample
    step = iter(on_docs)
    tokens = 0

    def step_loss() -> torch.Tensor:
        nonlocal tokens
        if next(step):
            batch = collate([samples[k] for k in next(doc_batches)])
            tokens += int(batch["attention_mask"].sum())
            return model(**batch).loss  # labels are shifted inside the model
        ids = blocks[next(batches)]
        tokens += ids.numel()
        return model(input_ids=ids, labels=ids).loss

    losses, train_s, bf16 = train_steps(
        model, step_loss, max_steps=cfg.max_steps, lr=cfg.lr, warmup_ratio=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip, betas=(0.9, 0.95), bf16=cfg.bf16,
        desc="pretrain LM", progress=progress)

    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "steps": cfg.max_steps,
        "final_loss": sum(losses[-10:]) / max(1, len(losses[-10:])),
        "tokens_per_s": tokens / train_s,
        "steps_per_s": cfg.max_steps / train_s,
        "wall_s": time.perf_counter() - t0,
        "num_blocks": len(blocks),
        "document_rows": len(rows),
        "document_steps": sum(on_docs),
        "documents_cut": cut,
        "num_params": sum(p.numel() for p in model.parameters()),
        "bf16": bf16,
        "loss_history": losses,
    }
