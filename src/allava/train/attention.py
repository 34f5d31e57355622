"""How a training step computes the LM's attention on CPU in bf16.

PyTorch's CPU flash-attention kernel (what ``attn_implementation="sdpa"`` picks) has a large fixed
cost in its bf16 *backward*, and its math kernel upcasts bf16 to fp32: for the short rows of VQA
data attention was the most expensive part of a step. Forward + backward in CPU ms, bf16, 1 thread
on the 2-core dev machine (AMD EPYC with AVX512-BF16) under load, causal bool mask:

    batch x heads x head dim   T     flash    math    eager (below)
    6 x 4 x 64                 40    4.2      1.7     0.9
    6 x 4 x 64                 128   11.1     10.3    3.8
    6 x 4 x 64                 256   20.1     24.9    11.3
    6 x 4 x 64                 384   42.2     55.5    27.0
    4 x 32 x 80 (Phi-2)        160   85.2     73.9    32.9
    4 x 32 x 80 (Phi-2)        256   135.2    205.6   114.5
    4 x 32 x 128 (Llama)       256   167.8    270.2   126.0

So while a stage trains on CPU, the LM runs ``allava_sdpa``: transformers' own
``sdpa_attention_forward`` (and its mask, ``sdpa_mask``), except that bf16 rows of at most
``SHORT_ROWS`` tokens on CPU are computed as transformers' eager attention computes them (bf16
matmuls, the mask added, softmax in fp32, then dropout). The same attention: the loss and gradients
equal the flash kernel's to bf16 rounding (tests/test_train_attention.py). The model's configured
implementation is put back when training ends, so what is saved is untouched; GPUs, fp32 and
anything the eager form here does not cover (soft-capping, attention sinks, position bias, a KV
cache longer than the query) go to ``sdpa_attention_forward`` unchanged.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "allava_sdpa"
SHORT_ROWS = 256  # tokens per row up to which the eager form beat both SDPA kernels (table above)
_NOT_EAGER = ("softcap", "s_aux", "sinks", "position_bias")


def bf16_on_cpu(query: torch.Tensor) -> bool:
    """bf16 tensors, or CPU autocast to bf16 (the rotary embedding hands fp32 queries to attention)."""
    return query.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu")
                                             and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def eager_fits(query: torch.Tensor, key: torch.Tensor, kwargs: dict) -> bool:
    """A bf16 training-shaped call on CPU (query length = key length, 2..SHORT_ROWS tokens)."""
    t = query.shape[2]
    return (query.device.type == "cpu" and bf16_on_cpu(query) and 1 < t <= SHORT_ROWS
            and key.shape[2] == t and not kwargs.get("output_attentions")
            and all(kwargs.get(k) is None for k in _NOT_EAGER))


def sdpa_or_eager(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                  is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention; short bf16 rows on CPU eagerly (the same math)."""
    if not eager_fits(query, key, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * (query.shape[-1] ** -0.5 if scaling is None else scaling)
    if attention_mask is None and (is_causal if is_causal is not None else getattr(module, "is_causal", True)):
        # sdpa's is_causal=True (the mask function left the mask out because it is purely causal)
        t = query.shape[2]
        attention_mask = torch.ones(t, t, dtype=torch.bool, device=query.device).tril()
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(scores.dtype)
    weights = F.dropout(weights, p=dropout, training=dropout > 0)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, sdpa_or_eager)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def _lm_configs(model: torch.nn.Module) -> list:
    """The language model's config object(s): the Llava config's text_config, and the LM module's
    own config where the model was assembled from separately loaded parts."""
    configs = [model.config.text_config]
    lm = getattr(getattr(model, "model", None), "language_model", None)
    if lm is not None and lm.config is not configs[0]:
        configs.append(lm.config)
    return configs


def module_configs(model: torch.nn.Module) -> list:
    """Every distinct config among a model's modules (a Llama's own, a CLIP's text and vision ones):
    stage 0 trains the whole model, so all its attention takes the eager short-row form."""
    seen = {id(m.config): m.config for m in model.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")}
    return list(seen.values())


@contextlib.contextmanager
def short_rows_eager(model: torch.nn.Module, enabled: bool, configs: list | None = None):
    """While training: ``sdpa`` attention as ``allava_sdpa`` (``enabled``: CPU and bf16), in the
    LLaVA model's language model, or in ``configs`` where given."""
    configs = [c for c in (_lm_configs(model) if configs is None else configs)
               if enabled and c._attn_implementation == "sdpa"]
    for c in configs:
        c._attn_implementation = NAME
    try:
        yield bool(configs)
    finally:
        for c in configs:
            c._attn_implementation = "sdpa"
