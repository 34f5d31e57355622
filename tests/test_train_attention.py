"""The LM's attention while a stage trains on CPU in bf16 (``allava.train.attention``): short rows
are computed in transformers' eager form instead of PyTorch's CPU SDPA kernels (slow there), with
the same attention; everything else is transformers' ``sdpa_attention_forward`` unchanged."""
from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import TrainingArguments
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from allava.data.dataset import Collator, ConversationDataset, DataSource, PackingCollator
from allava.data.tokenize import ConversationEncoder
from allava.model.build import ModelSpec, build_model
from allava.train import attention
from allava.train.trainer import AllavaTrainer, set_trainable

SDPA_OPS = ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math")
# bf16 against the fp32 reference: bf16 keeps ~3 significant digits
BF16_TOL = dict(rtol=2e-2, atol=2e-2)


def test_what_takes_the_eager_form():
    q = torch.zeros(2, 4, 40, 16, dtype=torch.bfloat16)
    assert attention.eager_fits(q, q, {})
    assert not attention.eager_fits(q.float(), q.float(), {})  # fp32: the flash kernel is fast
    with torch.autocast("cpu", dtype=torch.bfloat16):  # fp32 queries (after the rotary embedding) under bf16 autocast
        assert attention.eager_fits(q.float(), q.float(), {})
    assert not attention.eager_fits(q[:, :, :1], q, {})  # decoding with a cache
    long = torch.zeros(1, 4, attention.SHORT_ROWS + 1, 16, dtype=torch.bfloat16)
    assert not attention.eager_fits(long, long, {})
    for k in ("softcap", "s_aux", "sinks", "position_bias"):
        assert not attention.eager_fits(q, q, {k: 1.0})


class Module(torch.nn.Module):
    is_causal = True
    num_key_value_groups = 2


@pytest.mark.parametrize("mask", ["causal", "padding", "packed", "additive"])
def test_the_eager_form_is_sdpa_attention(mask):
    """Against transformers' sdpa_attention_forward in fp32 on the same inputs, grouped-query heads
    (8 query, 4 key/value), each mask shape the LMs hand it."""
    g = torch.Generator().manual_seed(0)
    b, t = 3, 24
    q, k, v = (torch.randn(b, h, t, 16, generator=g) for h in (8, 4, 4))
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    m = None
    if mask == "padding":  # right padding: the last 5 keys of row 1 are pads
        m = causal.expand(b, 1, t, t).clone()
        m[1, :, :, -5:] = False
    elif mask == "packed":  # two samples of 10 and 14 tokens in each row
        seq = torch.tensor([0] * 10 + [1] * 14)
        m = (causal & (seq[:, None] == seq[None, :])).expand(b, 1, t, t)
    elif mask == "additive":
        m = torch.where(causal, 0.0, torch.finfo(torch.float32).min).expand(b, 1, t, t)
    ref, _ = sdpa_attention_forward(Module(), q, k, v, m, scaling=0.25)
    got, _ = attention.sdpa_or_eager(Module(), q.bfloat16(), k.bfloat16(), v.bfloat16(),
                                     m if m is None or m.dtype == torch.bool else m.bfloat16(), scaling=0.25)
    assert got.dtype == torch.bfloat16 and got.shape == ref.shape == (b, t, 8, 16)
    keep = slice(None) if mask != "padding" else slice(0, t - 5)  # padded queries are ignored by the loss
    torch.testing.assert_close(got.float()[:, keep], ref[:, keep], **BF16_TOL)


def step(trainer: AllavaTrainer, batch: dict) -> tuple[float, dict[str, torch.Tensor], int]:
    """One bf16 forward + backward through the trainer's compute_loss; its SDPA kernel calls."""
    trainer.model.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
    grads = {k: p.grad.float().clone() for k, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.item(), grads, sum(e.count for e in prof.key_averages() if e.key in SDPA_OPS)


@pytest.mark.parametrize("packed", [False, True])
def test_a_short_bf16_step_on_cpu_trains_the_sdpa_loss_without_the_sdpa_kernels(backbones, tiny_data, tmp_path,
                                                                                 packed):
    torch.manual_seed(0)
    model, processor = build_model(ModelSpec(vision_tower=backbones["clip"], language_model=backbones["lm"],
                                             template="human_assistant"))
    assert model.config.text_config._attn_implementation == "sdpa"
    set_trainable(model, ["projector", "language_model"])
    model.train()
    enc = ConversationEncoder(processor.tokenizer, "human_assistant", "<image>", model.config.image_seq_length, 512)
    ds = ConversationDataset([DataSource(tiny_data["vqa"], tiny_data["images"]), DataSource(tiny_data["text"])], enc,
                             processor.image_processor)
    collate = (PackingCollator if packed else Collator)(processor.tokenizer.pad_token_id, 8)
    batch = collate([ds[i] for i in (0, 1, 30, 31)])
    assert batch["input_ids"].shape[1] <= attention.SHORT_ROWS
    args = TrainingArguments(output_dir=str(tmp_path / "t"), use_cpu=True, bf16=True, report_to=[])
    trainer = AllavaTrainer(model=model, args=args, data_collator=collate)
    ref_loss, ref_grads, ref_calls = step(trainer, batch)  # plain sdpa
    lm_layers = model.config.text_config.num_hidden_layers
    tower_layers = model.config.vision_config.num_hidden_layers  # the frozen tower's own attention: sdpa
    assert ref_calls == lm_layers + tower_layers
    with attention.short_rows_eager(model, True) as on:
        assert on and {c._attn_implementation for c in attention._lm_configs(model)} == {attention.NAME}
        loss, grads, calls = step(trainer, batch)
    assert model.config.text_config._attn_implementation == "sdpa"  # put back: what is saved is untouched
    assert model.model.language_model.config._attn_implementation == "sdpa"
    assert calls == tower_layers, "a short bf16 LM row on CPU ran an SDPA kernel"
    assert model.config.vision_config._attn_implementation == "sdpa"
    assert loss == pytest.approx(ref_loss, rel=2e-2, abs=2e-3)
    assert grads.keys() == ref_grads.keys() and grads
    for k in grads:  # relative to the tensor's scale
        scale = ref_grads[k].abs().max().item() or 1.0
        assert (grads[k] - ref_grads[k]).abs().max().item() <= 5e-2 * scale, k
    with attention.short_rows_eager(model, False) as on:  # GPU or fp32: nothing changes
        assert not on and model.config.text_config._attn_implementation == "sdpa"
    trainer.hooks.remove()


@pytest.mark.parametrize("kind", ["lm", "clip"])
def test_stage0_models_train_short_rows_without_the_sdpa_kernels(kind):
    """Stage 0 trains a whole Llama or CLIP (train/loop.py): every config of it takes the eager form,
    the loss is sdpa's to bf16 rounding, and each config is put back afterwards."""
    from transformers import CLIPModel, LlamaForCausalLM

    from allava.model.presets import PRESETS

    torch.manual_seed(0)
    lm_preset, clip_preset = PRESETS["test"]
    ids = torch.randint(3, 60, (4, 12))
    if kind == "lm":
        model = LlamaForCausalLM(lm_preset.config(64, 1, 2, 0))

        def loss_fn():
            return model(input_ids=ids, labels=ids).loss
    else:
        model = CLIPModel(clip_preset.config(64, 1, 3, 0))
        pixels = torch.randn(4, 3, clip_preset.image_size, clip_preset.image_size)
        mask = torch.ones_like(ids)
        mask[1, 8:] = 0  # a padded caption

        def loss_fn():
            return model(input_ids=ids, attention_mask=mask, pixel_values=pixels, return_loss=True).loss
    configs = attention.module_configs(model)
    assert configs and {c._attn_implementation for c in configs} == {"sdpa"}

    def run() -> tuple[float, int]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = loss_fn()
            loss.backward()
        return loss.item(), sum(e.count for e in prof.key_averages() if e.key in SDPA_OPS)

    ref, ref_calls = run()
    assert ref_calls > 0
    with attention.short_rows_eager(model, True, configs) as on:
        assert on
        loss, calls = run()
    assert calls == 0, f"{kind}: a short bf16 row ran an SDPA kernel"
    assert loss == pytest.approx(ref, rel=2e-2, abs=2e-3)
    assert {c._attn_implementation for c in configs} == {"sdpa"}  # put back: what is saved is untouched
