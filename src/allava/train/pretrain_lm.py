"""Stage 0b: pretrain a tiny Llama-architecture LM from scratch (Phi-2 stand-in).

A plain PyTorch loop: on a 2-core CPU it is faster and more predictable than `Trainer`.
Lines are tokenized once, each followed by eos, concatenated and cut into fixed-length blocks
(no padding, every token is a training token).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerBase, get_cosine_schedule_with_warmup

from allava.model.presets import TinyLM


@dataclass
class LMPretrainConfig:
    max_steps: int = 60
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


def _batches(num_blocks: int, batch_size: int, gen: torch.Generator):
    """Endless random batches of block indices, one reshuffle per epoch."""
    while True:
        perm = torch.randperm(num_blocks, generator=gen)
        for i in range(0, num_blocks - batch_size + 1, batch_size):
            yield perm[i : i + batch_size]
        if num_blocks < batch_size:  # tiny corpus: sample with replacement
            yield torch.randint(num_blocks, (batch_size,), generator=gen)


def use_bf16(flag: bool | None) -> bool:
    """bf16 autocast roughly halves step time on CPUs with native bf16 (AVX512-BF16/AMX) and is slow elsewhere."""
    if flag is not None:
        return flag
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


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

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(cfg.warmup_ratio * cfg.max_steps), cfg.max_steps)
    batches = _batches(len(blocks), cfg.batch_size, torch.Generator().manual_seed(cfg.seed))

    bf16 = use_bf16(cfg.bf16)
    losses: list[float] = []
    t_train = time.perf_counter()
    bar = tqdm(range(cfg.max_steps), desc="pretrain LM", disable=not progress, unit="step")
    for _ in bar:
        ids = blocks[next(batches)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss  # labels are shifted inside the model
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    train_s = time.perf_counter() - t_train

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
