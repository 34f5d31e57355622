"""The attention kernel of a training step on CPU (``allava.train.attention``): short bf16 rows
avoid PyTorch's CPU flash kernel (its backward has a large fixed cost there), with the same loss
and gradients to bf16 rounding; every other step keeps PyTorch's choice."""
from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import TrainingArguments

from allava.data.dataset import Collator, ConversationDataset, DataSource
from allava.data.tokenize import ConversationEncoder
from allava.model.build import ModelSpec, build_model
from allava.train import attention
from allava.train.trainer import AllavaTrainer, set_trainable

FLASH = "_scaled_dot_product_flash_attention_for_cpu"
# bf16 autocast: the two kernels accumulate in another order, so agreement is to bf16 rounding
LOSS_TOL = dict(rel=2e-2, abs=2e-3)


def test_the_rule():
    short, long = attention.SHORT_ROWS, attention.SHORT_ROWS + 1
    assert attention.use_math_kernel("cpu", True, short)
    assert not attention.use_math_kernel("cpu", True, long)  # the flash kernel wins from ~192 tokens
    assert not attention.use_math_kernel("cpu", False, short)  # fp32: the flash kernel is as fast
    assert not attention.use_math_kernel("cuda", True, short)  # GPUs keep PyTorch's choice
    assert not attention.use_math_kernel("cpu", True, 0)


def step(trainer: AllavaTrainer, batch: dict) -> tuple[float, dict[str, torch.Tensor], set[str]]:
    """One bf16 forward + backward through the trainer's compute_loss; the ops it ran."""
    trainer.model.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
    grads = {k: p.grad.float().clone() for k, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.item(), grads, {e.key for e in prof.key_averages()}


def test_a_short_bf16_step_on_cpu_runs_the_math_kernel_with_the_same_loss(backbones, tiny_data, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model, processor = build_model(ModelSpec(vision_tower=backbones["clip"], language_model=backbones["lm"],
                                             template="human_assistant"))
    assert model.config.text_config._attn_implementation == "sdpa"
    set_trainable(model, ["projector", "language_model"])
    model.train()
    enc = ConversationEncoder(processor.tokenizer, "human_assistant", "<image>", model.config.image_seq_length, 512)
    ds = ConversationDataset([DataSource(tiny_data["vqa"], tiny_data["images"]), DataSource(tiny_data["text"])], enc,
                             processor.image_processor)
    batch = Collator(processor.tokenizer.pad_token_id, 8)([ds[i] for i in (0, 1, 30, 31)])
    assert batch["input_ids"].shape[1] <= attention.SHORT_ROWS
    args = TrainingArguments(output_dir=str(tmp_path / "t"), use_cpu=True, bf16=True, report_to=[])
    trainer = AllavaTrainer(model=model, args=args, data_collator=Collator(processor.tokenizer.pad_token_id))
    loss, grads, ops = step(trainer, batch)
    assert not any(FLASH in op for op in ops), "a short bf16 row on CPU ran the flash kernel"
    monkeypatch.setattr(attention, "SHORT_ROWS", 0)  # PyTorch's own choice: the flash kernel
    ref_loss, ref_grads, ref_ops = step(trainer, batch)
    assert any(FLASH in op for op in ref_ops)
    assert loss == pytest.approx(ref_loss, **LOSS_TOL)
    assert grads.keys() == ref_grads.keys() and grads
    for k in grads:  # relative to the tensor's scale: bf16 keeps ~3 significant digits
        scale = ref_grads[k].abs().max().item() or 1.0
        assert (grads[k] - ref_grads[k]).abs().max().item() <= 5e-2 * scale, k
    trainer.hooks.remove()
