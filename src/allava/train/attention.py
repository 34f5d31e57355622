"""Which scaled-dot-product-attention kernel a training step uses on CPU.

PyTorch's CPU flash-attention kernel (what ``attn_implementation="sdpa"`` picks) has a large fixed
cost in its bf16 *backward*: for the short rows of VQA data it is the most expensive op of a step.
Measured on the 2-core dev machine (AMD EPYC with AVX512-BF16, 1 thread, under load; forward +
backward in ms, math / flash kernel):

    batch x heads x head dim   T=64       T=96       T=128      T=160       T=192       T=256
    8 x 4 x 64                 2.8/4.6    4.7/7.2    7.8/10.7   12.2/14.4   17.9/14.0   28.2/22.7
    8 x 8 x 64                 5.5/8.4    10.2/14.1  15.7/22.0  23.5/29.7   33.9/30.0   58.7/45.4
    4 x 32 x 80 (Phi-2)        12.0/22.2  23.6/41.2  39.3/51.6  63.0/96.2   83.2/77.2   187.3/114.1
    4 x 32 x 128 (Llama)       18.4/24.9  42.2/44.4  55.7/67.6  119.5/148.3 120.2/127.7 236.1/149.6

(at T=40, 8 x 4 x 64: 1.8 vs 6.0; the flash kernel switches to larger blocks at 192 tokens). In
fp32 the flash kernel is as fast as the math one at every length. So a bf16 step on CPU whose
rows are at most ``SHORT_ROWS`` tokens runs attention with the math kernel (the same attention,
written as matmul + softmax; the eager/sdpa numerics of transformers' own fallback), and every
other step keeps whatever PyTorch picks. GPUs are never touched.
"""
from __future__ import annotations

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

SHORT_ROWS = 160  # tokens per row at or below which the math kernel won on CPU in bf16 (table above)


def use_math_kernel(device: torch.device | str, bf16: bool, row_tokens: int, short_rows: int | None = None) -> bool:
    """Whether a step with rows of ``row_tokens`` should avoid the CPU flash kernel
    (``short_rows``: None reads ``SHORT_ROWS``)."""
    limit = SHORT_ROWS if short_rows is None else short_rows
    return torch.device(device).type == "cpu" and bf16 and 0 < row_tokens <= limit


def attention_kernel(device: torch.device | str, bf16: bool, row_tokens: int,
                     short_rows: int | None = None) -> contextlib.AbstractContextManager:
    """The context a training forward runs in (its backward follows the kernel chosen here)."""
    if use_math_kernel(device, bf16, row_tokens, short_rows):
        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()
