"""The plain training loop of stage 0 (tiny LM, tiny CLIP): AdamW, cosine with warm-up, gradient
clipping, bf16 autocast where native, a progress bar with loss, rate and ETA."""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

import torch
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from allava.train.attention import module_configs, short_rows_eager
from allava.train.precision import use_bf16


def random_batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless random batches of indices in [0, n), reshuffled each epoch (with replacement if n < batch_size)."""
    while True:
        if n < batch_size:
            yield torch.randint(n, (batch_size,), generator=gen)
            continue
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i : i + batch_size]


def train_steps(model: torch.nn.Module, step_loss: Callable[[], torch.Tensor], *, max_steps: int, lr: float,
                warmup_ratio: float, weight_decay: float, grad_clip: float, betas: tuple[float, float],
                bf16: bool | None, desc: str, progress: bool) -> tuple[list[float], float, bool]:
    """Run ``max_steps`` optimizer steps of ``step_loss()``; returns (losses, seconds, bf16 used)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=betas)
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(warmup_ratio * max_steps), max_steps)
    bf16 = use_bf16(bf16)
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(range(max_steps), desc=desc, disable=not progress, unit="step")
    on_cpu = next(model.parameters()).device.type == "cpu"
    # bf16 on CPU: short rows' attention eagerly, as the stages do (train/attention.py: the SDPA kernels are slow there)
    with short_rows_eager(model, bf16 and on_cpu, module_configs(model)):
        for _ in bar:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = step_loss()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses, time.perf_counter() - t0, bf16
