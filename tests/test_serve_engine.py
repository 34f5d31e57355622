"""The continuous-batching engine against `generate` alone: rows that join a decoding batch (their
cache padded on the left and concatenated) and rows that leave it (dropped, leading padding cut)
must see the same logits at every step as the same prompt run by itself, not only the same argmax
(a random tiny model's greedy answers are too flat to catch a wrong position or mask). Rows prefilled
from the cached shared prefix must match a whole prefill too."""
from __future__ import annotations

import asyncio

import pytest
import torch
from PIL import Image

from allava.evaluate.generate import Answerer
from allava.serve.batching import Job
from allava.serve.engine import Engine, sample
from allava.serve.protocol import ChatRequest

from serve_helpers import tiny_checkpoint


class Recording(Engine):
    """Keeps every row's logits per step; never stops on EOS, so lengths are the schedule's."""

    def __init__(self, answerer):
        super().__init__(answerer)
        self.eos = set()
        self.logits: dict[int, list[torch.Tensor]] = {}

    def choose(self, logits, jobs):
        for row, job in zip(logits, jobs):
            if not job.done:
                self.logits.setdefault(id(job), []).append(row.clone())
        return super().choose(logits, jobs)


@pytest.fixture(scope="module")
def answerer(backbones, tmp_path_factory):
    return Answerer(tiny_checkpoint(backbones, tmp_path_factory.mktemp("engine") / "tiny-llava"))


def job(engine, text, max_tokens, image=None, loop=None, system=None, **sampling):
    value = f"<image>\n{text}" if image is not None else text
    conv = [{"from": "human", "value": value}]
    request = ChatRequest(conv, [image] if image is not None else [], system, max_tokens, **sampling)
    return Job(request, engine.prompt_ids(request), max_tokens, loop)


def alone(answerer, j, n):
    """Transformers' own loop (`GenerationMixin._sample`) on the one prompt: n steps' logits."""
    inputs = answerer.batch_inputs([j.prompt], j.request.images)
    out = answerer.model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                  output_logits=True, return_dict_in_generate=True,
                                  pad_token_id=answerer.tokenizer.pad_token_id)
    return [s[0] for s in out.logits], out.sequences[0, inputs["input_ids"].shape[1]:].tolist()


def test_rows_joining_and_leaving_see_the_logits_they_would_alone(answerer):
    loop = asyncio.new_event_loop()
    try:
        engine = Recording(answerer)
        red, blue = Image.new("RGB", (30, 20), (200, 30, 30)), Image.new("RGB", (20, 28), (20, 40, 220))
        a = job(engine, "what colour is the shape at the top left and the one below it", 9, red, loop)
        b = job(engine, "describe", 3, loop=loop)
        c = job(engine, "what is the image", 7, blue, loop)
        d = job(engine, "answer the question using a single word or phrase green", 6, loop=loop)
        e = job(engine, "what colour", 5, red, loop, system="Answer in one word.")  # its own system prompt
        assert engine.prefix is not None and len(engine.prefix.ids) > 10
        assert all(engine.prefix.matches(j.prompt) for j in (a, b, c, d)) and not engine.prefix.matches(e.prompt)
        rows = engine.prefill([a])
        engine.decode(rows)
        new = engine.prefill([b, c])  # join a batch that is two tokens in, shorter and longer prompts
        rows.extend(new)
        for _ in range(3):
            engine.decode(rows)
            rows.retire()
        assert b not in rows.jobs and b.finish_reason == "length"  # b left after its 3 tokens
        rows.extend(engine.prefill([d, e]))  # one from the shared prefix, one prefilled whole
        while rows.jobs:
            engine.decode(rows)
            rows.retire()
        assert rows.mask.shape[1] >= 1
        for j in (a, b, c, d, e):
            want_logits, want_tokens = alone(answerer, j, j.max_tokens)
            got = engine.logits[id(j)]
            assert len(got) == j.max_tokens and j.tokens == want_tokens
            for step, (x, y) in enumerate(zip(got, want_logits)):
                assert torch.allclose(x, y, atol=1e-4, rtol=1e-4), (step, (x - y).abs().max())
    finally:
        loop.close()


def test_retire_cuts_padding_no_row_uses():
    """Dropping the longest row leaves columns that are padding in every row: they go. The last
    live row takes the place of a row that left; every job keeps its own cache row and state."""
    from allava.serve.engine import Rows, new_cache

    class J:
        def __init__(self, done):
            self.done = done

    cache = new_cache()
    keys = torch.arange(4 * 5, dtype=torch.float).reshape(4, 1, 5, 1)
    cache.update(keys, keys + 100, 0)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1], [0, 0, 1, 1, 1]])
    jobs = [J(True), J(False), J(False), J(False)]
    rows = Rows(list(jobs), cache, mask, torch.tensor([5, 3, 2, 3]), torch.tensor([7, 8, 9, 10]))
    assert rows.retire() == [jobs[0]]
    assert rows.jobs == [jobs[3], jobs[1], jobs[2]]  # the last row moved into the first
    assert rows.mask.tolist() == [[1, 1, 1], [1, 1, 1], [0, 1, 1]] and rows.positions.tolist() == [3, 3, 2]
    assert cache.layers[0].keys[:, 0, :, 0].tolist() == [[17, 18, 19], [7, 8, 9], [12, 13, 14]]
    assert cache.layers[0].values[:, 0, :, 0].tolist() == [[117, 118, 119], [107, 108, 109], [112, 113, 114]]
    assert rows.last.tolist() == [10, 8, 9]
    jobs[2].done = True  # the last row leaves: nothing moves
    rows.retire()
    assert rows.jobs == [jobs[3], jobs[1]] and cache.layers[0].keys[:, 0, :, 0].tolist() == [[17, 18, 19], [7, 8, 9]]


def test_rows_join_a_batch_in_place():
    """Joining rows are written into the running batch's slab (spare rows, left padding zeroed) and
    equal what concatenating padded tensors gives; a longer newcomer pads the running rows instead."""
    from allava.serve.engine import Rows, new_cache

    def rows_of(length, n, base):
        cache = new_cache()
        k = base + torch.arange(n * length, dtype=torch.float).reshape(n, 1, length, 1)
        cache.update(k, -k, 0)
        return Rows([object()] * n, cache, torch.ones(n, length, dtype=torch.long), torch.full((n,), length),
                    torch.zeros(n, dtype=torch.long))

    running = rows_of(4, 2, 0)
    for length, n, base in ((2, 3, 100), (6, 1, 200), (6, 9, 300)):  # shorter, longer, beyond the spare rows
        keys_before = running.cache.layers[0].keys.clone()
        new = rows_of(length, n, base)
        want_k = new.cache.layers[0].keys.clone()
        running.extend(new)
        width = running.mask.shape[1]
        got = running.cache.layers[0].keys
        assert got.shape[0] == len(running.jobs) and got.shape[2] == width
        pad_old, pad_new = width - keys_before.shape[2], width - length
        assert torch.equal(got[:keys_before.shape[0], :, pad_old:], keys_before)
        assert torch.equal(got[keys_before.shape[0]:, :, pad_new:], want_k)
        assert not got[:keys_before.shape[0], :, :pad_old].any() and not got[keys_before.shape[0]:, :, :pad_new].any()
        assert torch.equal(running.cache.layers[0].values, -got)
        assert running.mask[keys_before.shape[0]:, :pad_new].sum() == 0
    step = torch.ones(len(running.jobs), 1, 1, 1)
    with torch.inference_mode():  # as Engine.decode runs it
        k, _ = running.cache.layers[0].update(step, step)  # a decode step still grows in place
    assert k.shape[2] == width + 1 and torch.equal(k[:, :, -1], step[:, :, 0])


def test_sampling_follows_temperature_and_top_p_as_transformers_does():
    """`sample` against transformers' own warpers (`TemperatureLogitsWarper`, `TopPLogitsWarper`
    in `generation/logits_process.py`): the same support and the same distribution."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    ref = TopPLogitsWarper(0.8)(None, TemperatureLogitsWarper(0.7)(None, logits[None].clone()))[0].softmax(-1)
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.tensor([sample(logits, 0.7, 0.8, g) for _ in range(4000)]), minlength=6)
    assert set(torch.nonzero(counts).flatten().tolist()) == set(torch.nonzero(ref).flatten().tolist())
    assert torch.allclose(counts / counts.sum(), ref, atol=0.03)
    same = [sample(logits, 1.0, 1.0, torch.Generator().manual_seed(5)) for _ in range(3)]
    assert len(set(same)) == 1  # a seeded generator reproduces


def test_slab_layer_grows_in_place_and_follows_replaced_tensors():
    """`SlabLayer` returns what transformers' `DynamicLayer.update` (a `torch.cat`) returns, writes
    steps into its spare room without copying, and starts a new slab when `Rows` replaced the tensors."""
    from transformers.cache_utils import DynamicLayer

    from allava.serve.engine import SlabLayer

    slab, plain = SlabLayer(), DynamicLayer()
    first = torch.randn(2, 1, 5, 3)
    for layer in (slab, plain):
        layer.update(first, first + 1)
    where = slab.keys.data_ptr()
    for _ in range(3):
        step = torch.randn(2, 1, 1, 3)
        k, v = slab.update(step, step + 1)
        want_k, want_v = plain.update(step, step + 1)
        assert torch.equal(k, want_k) and torch.equal(v, want_v)
    assert slab.keys.data_ptr() == where  # no copy per step
    replaced = torch.randn(2, 1, 8, 3)  # same rows and length, other content (what Rows may assign)
    slab.keys, slab.values = replaced, replaced + 1
    step = torch.randn(2, 1, 1, 3)
    k, _ = slab.update(step, step)
    assert torch.equal(k, torch.cat([replaced, step], -2))


def test_vision_tower_trimmed_to_the_layer_the_projector_reads(answerer, backbones, tmp_path):
    """The engine drops the vision layers after `vision_feature_layer` (LLaVA's -2: the last layer's
    output is never read); image features equal an untrimmed copy's, bit for bit."""
    from allava.serve.engine import trim_vision_tower

    fresh = Answerer(tiny_checkpoint(backbones, tmp_path / "fresh"))
    tower = fresh.model.model.vision_tower
    layers = len(getattr(tower, "vision_model", tower).encoder.layers)
    pixels = fresh.processor.image_processor([Image.new("RGB", (30, 20), (200, 30, 30))],
                                             return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        want = fresh.model.model.get_image_features(pixel_values=pixels).pooler_output
    assert fresh.model.config.vision_feature_layer == -2
    assert trim_vision_tower(fresh.model) == 1 and len(getattr(tower, "vision_model", tower).encoder.layers) == layers - 1
    with torch.inference_mode():
        got = fresh.model.model.get_image_features(pixel_values=pixels).pooler_output
    assert torch.equal(torch.cat(list(got)) if isinstance(got, (list, tuple)) else got,
                       torch.cat(list(want)) if isinstance(want, (list, tuple)) else want)
    assert trim_vision_tower(fresh.model) == 0  # nothing more to drop
