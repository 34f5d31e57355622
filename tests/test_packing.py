"""Multimodal packing: several samples share a row, attention stays inside each sample, and every
sample's loss is its unpacked one, with pixels or with cached features; a too-long sample is cut
exactly as unpacked, never split across rows or images; a packed stage trains the unpacked losses."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from allava.data.dataset import Collator, PackingCollator
from allava.data.tokenize import IGNORE_INDEX, ConversationEncoder
from allava.train import feature_cache as fc
from allava.train.trainer import BatchHooks
from tests.test_feature_cache import dataset, request, setup  # noqa: F401  (setup is a fixture)

# fp32 on CPU: the packed rows run sdpa with transformers' block-diagonal mask, the unpacked ones
# plain causal attention, so per-sample losses agree to rounding (measured: below 1e-6)
LOSS_TOL = dict(rel=1e-5, abs=1e-5)


def token_losses(model, hooks: BatchHooks, batch: dict) -> torch.Tensor:
    """Per-position cross-entropy of the next token ([rows, T], 0 where no label), the model's own
    shift (ForCausalLMLoss)."""
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "image_features", "num_tokens")}
    if "position_ids" in inputs:
        inputs["use_cache"] = False
    with torch.no_grad(), hooks.batch(batch["input_ids"], batch.get("image_features"), None):
        logits = model(**inputs).logits.float()
    shifted = F.pad(batch["labels"], (0, 1), value=IGNORE_INDEX)[:, 1:]
    ce = F.cross_entropy(logits.transpose(1, 2), shifted, ignore_index=IGNORE_INDEX, reduction="none")
    return ce * (shifted != IGNORE_INDEX)


def unpacked_losses(model, hooks, samples) -> dict[tuple, float]:
    """Each sample alone: its mean loss, keyed by its input ids."""
    collate = Collator(0)
    out = {}
    for s in samples:
        b = collate([s])
        ce = token_losses(model, hooks, b)
        n = (F.pad(b["labels"], (0, 1), value=IGNORE_INDEX)[:, 1:] != IGNORE_INDEX).sum()
        out[tuple(s["input_ids"].tolist())] = float(ce.sum() / n)
    return out


def packed_losses(model, hooks, batch) -> dict[tuple, float]:
    """The packed batch's per-sample mean losses (samples found by their restarting position ids)."""
    ce = token_losses(model, hooks, batch)
    shifted = F.pad(batch["labels"], (0, 1), value=IGNORE_INDEX)[:, 1:]
    out = {}
    for r in range(batch["input_ids"].shape[0]):
        starts = (batch["position_ids"][r] == 0).nonzero().squeeze(1).tolist() + [batch["input_ids"].shape[1]]
        for a, b in zip(starts, starts[1:]):
            n = int((shifted[r, a:b] != IGNORE_INDEX).sum())
            if n:  # the row's tail of padding has no labels
                out[tuple(batch["input_ids"][r, a:b].tolist())] = float(ce[r, a:b].sum() / n)
    return out


def check_same(setup, samples, cached: bool):
    s = setup
    s.model.eval()
    hooks = BatchHooks(s.model)
    try:
        batch = PackingCollator(s.processor.tokenizer.pad_token_id, 8)(samples)
        assert batch["input_ids"].shape[0] < len(samples)  # really packed
        assert ("image_features" in batch) == cached and ("pixel_values" in batch) != cached
        assert int(batch["num_tokens"]) == sum(len(x["input_ids"]) for x in samples)
        got, ref = packed_losses(s.model, hooks, batch), unpacked_losses(s.model, hooks, samples)
        assert got.keys() == ref.keys()
        for k in ref:
            assert got[k] == pytest.approx(ref[k], **LOSS_TOL)
        # the check can fail: the same rows with attention across samples give other losses
        crossed = packed_losses(s.model, hooks, {**batch, "position_ids": torch.arange(batch["input_ids"].shape[1])
                                                 .expand_as(batch["input_ids"]).contiguous()})
        assert max(abs(crossed.get(k, 0.0) - ref[k]) for k in ref) > 1e-3
    finally:
        hooks.remove()


def test_packed_per_sample_losses_equal_unpacked_with_pixels(setup):
    ds = dataset(setup, setup.data["captions"], setup.data["vqa"], setup.data["text"])
    # captions and VQA of different lengths, and text-only samples, packed together
    check_same(setup, [ds[i] for i in (0, 1, 24, 25, 26, 48, 49, 50)], cached=False)


def test_packed_per_sample_losses_equal_unpacked_with_cached_features(setup, tmp_path):
    plain = dataset(setup, setup.data["captions"], setup.data["vqa"], setup.data["text"])
    lookup, _ = fc.prepare(setup.model, setup.processor.image_processor, plain.image_files(), request(tmp_path / "fc"))
    ds = dataset(setup, setup.data["captions"], setup.data["vqa"], setup.data["text"], features=lookup)
    check_same(setup, [ds[i] for i in (0, 1, 24, 25, 26, 48, 49, 50)], cached=True)


def test_a_too_long_sample_is_cut_as_unpacked_and_never_split(setup):
    """The encoder cuts before packing (keeping the image block whole), so the packed row holds the
    unpacked truncation exactly; the packer never splits a sample over rows."""
    s = setup
    n_img = s.model.config.image_seq_length
    short = ConversationEncoder(s.processor.tokenizer, "human_assistant", "<image>", n_img, n_img + 64)
    ds = dataset(s, s.data["vqa"], s.data["captions"])
    ds.encoder = short
    samples = [ds[i] for i in (0, 24, 1, 25)]
    assert max(len(x["input_ids"]) for x in samples) == n_img + 64  # the VQA samples (95 tokens) were cut
    batch = PackingCollator(s.processor.tokenizer.pad_token_id, 8)(samples)
    rows = batch["input_ids"].shape[1]
    assert rows <= -(-(n_img + 64) // 8) * 8  # no row longer than the longest sample
    found = []
    for r in range(batch["input_ids"].shape[0]):
        starts = (batch["position_ids"][r] == 0).nonzero().squeeze(1).tolist() + [rows]
        for a, b in zip(starts, starts[1:]):
            seg = batch["input_ids"][r, a:b]
            if (seg == s.processor.tokenizer.pad_token_id).all():
                continue
            found.append(seg.tolist())
            image = (seg == s.model.config.image_token_id).nonzero().squeeze(1)
            assert len(image) == n_img and int(image[-1] - image[0]) == n_img - 1  # one whole image block
    assert sorted(found) == sorted(x["input_ids"].tolist() for x in samples)


def test_a_packed_stage_trains_the_unpacked_losses(backbones, tiny_data, tmp_path):
    """Same data order, same samples per step: packing changes the rows, not the loss. Batches mix
    text (36 tokens) and VQA (95) here (no modality grouping), so rows really hold several samples."""
    from allava.train.stages import load_recipe, run_stage
    from tests.test_train import write_recipe

    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", backbones, tiny_data, tmp_path / "run", bf16=False,
                                      group_by_modality=False))
    stage, spec = recipe.stages["stage2"], recipe.model
    plain = run_stage("stage2", stage, spec, tmp_path / "plain", spec, progress=False)
    from dataclasses import replace

    rows = []

    class Rows(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **kw):
            rows.extend(len(b["input_ids"]) for b, _ in zip(train_dataloader, range(6)))

    packed = run_stage("stage2", replace(stage, packing=True), spec, tmp_path / "packed", spec, progress=False,
                       callbacks=[Rows()])
    assert rows and min(rows) < 4  # 4 samples per batch, packed into fewer rows
    assert packed.feature_cache["used"] and packed.tokens == plain.tokens
    for (step, a), (_, b) in zip(plain.losses, packed.losses):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5), step
