"""Stage 0b: pretrain a tiny Llama-architecture LM from scratch (Phi-2 stand-in).

A plain PyTorch loop: on a 2-core CPU it is faster and more predictable than `Trainer`.
Lines are tokenized once, each followed by eos, concatenated and cut into fixed-length blocks
(no padding, every token is a training token).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerBase

from allava.model.presets import TinyLM
from allava.train.loop import random_batches, train_steps


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
) -> dict:
    """Train a randomly initialised LM on next-token prediction and save it (with tokenizer) to `out_dir`.

    Returns stats: steps, final_loss (mean of the last 10 steps), tokens_per_s, steps_per_s,
    wall_s (whole call), num_blocks, num_params and the per-step loss history.
    """
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if cfg.seq_len > preset.max_position_embeddings:
        raise ValueError(f"seq_len {cfg.seq_len} > max_position_embeddings {preset.max_position_embeddings}")
    blocks = pack_blocks(texts, tokenizer, cfg.seq_len)
    model = build_lm(tokenizer, preset)
    model.train()

    batches = random_batches(len(blocks), cfg.batch_size, torch.Generator().manual_seed(cfg.seed))

    def step_loss() -> torch.Tensor:
        ids = blocks[next(batches)]
        return model(input_ids=ids, labels=ids).loss  # labels are shifted inside the model

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
        "tokens_per_s": cfg.max_steps * cfg.batch_size * cfg.seq_len / train_s,
        "steps_per_s": cfg.max_steps / train_s,
        "wall_s": time.perf_counter() - t0,
        "num_blocks": len(blocks),
        "num_params": sum(p.numel() for p in model.parameters()),
        "bf16": bf16,
        "loss_history": losses,
    }
