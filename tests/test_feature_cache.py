"""The frozen-vision feature store and the labelled-positions-only LM head: same losses and
gradients as the plain path, invalidation, recovery from damaged shards, the disk budget, skipped
images, and stage summaries (tiny models, seconds each)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from allava.config import ConfigError
from allava.data.dataset import Collator, ConversationDataset, DataSource
from allava.data.tokenize import ConversationEncoder
from allava.model.build import ModelSpec, build_model
from allava.train import feature_cache as fc
from allava.train.trainer import HEAD_ROWS_MULTIPLE, AllavaTrainer, set_trainable

# fp32 on CPU. Cached features are computed in batches of 32 and the plain path recomputes them in
# training batches: the same math, possibly another summation order, so agreement is to rounding.
LOSS_TOL = dict(rel=1e-5, abs=1e-6)
GRAD_TOL = dict(rtol=1e-4, atol=1e-6)


@pytest.fixture()
def setup(backbones, tiny_data):
    torch.manual_seed(0)
    model, processor = build_model(ModelSpec(vision_tower=backbones["clip"], language_model=backbones["lm"],
                                             template="human_assistant"))
    set_trainable(model, ["projector", "language_model"])
    model.train()
    enc = ConversationEncoder(processor.tokenizer, "human_assistant", "<image>", model.config.image_seq_length, 512)
    return SimpleNamespace(model=model, processor=processor, enc=enc, data=tiny_data)


def dataset(s, *paths, image_folder=None, features=None):
    folder = image_folder or s.data["images"]
    return ConversationDataset([DataSource(p, folder) for p in paths], s.enc, s.processor.image_processor,
                               features=features)


def request(root, **kw) -> fc.CacheRequest:
    return fc.CacheRequest(root=root, progress=False, **kw)


def trainer(s, tmp_path, labels_only: bool) -> AllavaTrainer:
    args = TrainingArguments(output_dir=str(tmp_path / "t"), use_cpu=True, report_to=[], per_device_train_batch_size=4)
    return AllavaTrainer(model=s.model, args=args, lm_head_on_labels_only=labels_only,
                         data_collator=Collator(s.processor.tokenizer.pad_token_id))


def loss_and_grads(t: AllavaTrainer, batch: dict, n=None) -> tuple[float, dict[str, torch.Tensor]]:
    t.model.zero_grad(set_to_none=True)
    loss = t.compute_loss(t.model, dict(batch), num_items_in_batch=n)
    loss.backward()
    return loss.item(), {k: p.grad.clone() for k, p in t.model.named_parameters() if p.grad is not None}


def assert_same(a: tuple, b: tuple) -> None:
    assert a[0] == pytest.approx(b[0], **LOSS_TOL)
    assert a[1].keys() == b[1].keys() and a[1]
    for k in a[1]:
        torch.testing.assert_close(a[1][k], b[1][k], **GRAD_TOL, msg=k)


def test_cached_and_uncached_losses_and_grads_agree_and_the_tower_never_runs(setup, tmp_path):
    s = setup
    plain = dataset(s, s.data["vqa"], s.data["text"])
    lookup, stats = fc.prepare(s.model, s.processor.image_processor, plain.image_files(), request(tmp_path / "fc"))
    assert stats.used and stats.images == 24 and stats.computed == 4  # 4 colours: 4 distinct image contents
    cached = dataset(s, s.data["vqa"], s.data["text"], features=lookup)
    calls = []
    s.model.model.vision_tower.register_forward_hook(lambda *a: calls.append(1))
    collate = Collator(s.processor.tokenizer.pad_token_id, 8)
    for labels_only in (False, True):
        t = trainer(s, tmp_path, labels_only)
        for idx in ([0, 1, 2, 3], [5, 30, 6], [24, 25]):  # images only, mixed with text, text only
            a, b = collate([plain[i] for i in idx]), collate([cached[i] for i in idx])
            assert ("image_features" in b) == ("pixel_values" in a)
            n0 = len(calls)
            ref = loss_and_grads(t, a)
            assert len(calls) == n0 + ("pixel_values" in a)
            got = loss_and_grads(t, b)
            assert len(calls) == n0 + ("pixel_values" in a), "the cached path ran the vision tower"
            assert_same(got, ref)
        t.hooks.remove()


def test_cached_features_are_what_the_projector_sees(setup, tmp_path):
    """Stored features equal the tower's hidden states at vision_feature_layer (int or list), CLS
    dropped under "default", as LlavaModel.get_image_features selects them."""
    s = setup
    ds = dataset(s, s.data["vqa"])
    path = ds.image_files()[0]
    pixels = s.processor.image_processor(fc.read_image(path), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        hidden = s.model.model.vision_tower(pixels, output_hidden_states=True).hidden_states
    for layer, expect in ((-2, hidden[-2][0, 1:]), ([-3, -1], torch.cat([hidden[-3][0, 1:], hidden[-1][0, 1:]], -1))):
        s.model.config.vision_feature_layer = layer
        lookup, _ = fc.prepare(s.model, s.processor.image_processor, [path], request(tmp_path / "fc"))
        torch.testing.assert_close(lookup(path), expect, rtol=1e-5, atol=1e-6)


def test_reduced_lm_head_loss_and_gradients_equal_the_models(setup, tmp_path):
    s = setup
    ds = dataset(s, s.data["vqa"], s.data["text"])
    collate = Collator(s.processor.tokenizer.pad_token_id, 8)
    full, sparse = trainer(s, tmp_path, False), trainer(s, tmp_path, True)
    assert full.model_accepts_loss_kwargs  # so num_items_in_batch reaches the model's loss
    calls = []
    s.model.lm_head.register_forward_hook(lambda m, a, out: calls.append(out.shape))
    for idx in ([0, 1, 2, 3, 4, 5, 6, 7], [7, 40, 41]):
        batch = collate([ds[i] for i in idx])
        kept = int((batch["labels"][:, 1:] != -100).sum())
        for n in (None, torch.tensor(3 * kept)):  # per-batch mean; a share of an accumulated batch
            assert_same(loss_and_grads(sparse, batch, n), loss_and_grads(full, batch, n))
            rows, everything = calls[-2][0], batch["input_ids"].numel()
            # the labelled positions, rounded up to a multiple of 64 (few distinct shapes), never all of them
            assert rows == -(-kept // HEAD_ROWS_MULTIPLE) * HEAD_ROWS_MULTIPLE < everything, (rows, kept, everything)
            assert calls[-1][:-1] == batch["input_ids"].shape
    full.hooks.remove()
    sparse.hooks.remove()


def test_reuse_and_invalidation_by_tower_layer_strategy_and_processor(setup, tmp_path):
    s = setup
    paths = dataset(s, s.data["vqa"]).image_files()
    root = tmp_path / "fc"

    def run():
        return fc.prepare(s.model, s.processor.image_processor, paths, request(root))[1]

    first = run()
    assert (first.hits, first.computed) == (0, 4) and first.bytes_on_disk > 0
    again = run()
    assert (again.hits, again.computed) == (4, 0) and again.dir == first.dir
    with torch.no_grad():
        s.model.model.vision_tower.encoder.layers[0].mlp.fc1.weight[0, 0] += 1e-3
    changed = run()
    assert (changed.hits, changed.computed) == (0, 4) and changed.dir != first.dir
    s.model.config.vision_feature_layer = -1
    assert run().computed == 4
    s.model.config.vision_feature_select_strategy = "full"
    s.model.config.image_seq_length += 1
    full = run()
    assert full.computed == 4
    s.processor.image_processor.image_mean = [0.5, 0.5, 0.5]
    assert run().computed == 4
    assert len({p.name for p in root.iterdir()}) == 5  # five fingerprints, five stores side by side
    shape = json.loads((Path(full.dir) / "index.json").read_text())["shape"]
    assert shape[0] == s.model.config.image_seq_length  # "full" keeps the CLS token


def test_missing_or_corrupt_shards_are_recomputed_not_trusted(setup, tmp_path):
    s = setup
    folder = Path(s.data["root"]) / "distinct"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    from PIL import Image

    for i in range(6):  # six distinct contents
        Image.new("RGB", (32, 32), (40 * i, 10, 200 - 30 * i)).save(folder / f"{i}.png")
    paths = [str(folder / f"{i}.png") for i in range(6)]
    per_image = fc.feature_shape(s.model)[0] * fc.feature_shape(s.model)[1] * 4
    req = request(tmp_path / "fc", shard_bytes=2 * per_image, batch_size=4)  # 2 images per shard
    lookup, stats = fc.prepare(s.model, s.processor.image_processor, paths, req)
    before = {p: lookup(p).clone() for p in paths}
    store = Path(stats.dir)
    shards = sorted(store.glob("*.safetensors"))
    assert len(shards) == 3
    shards[0].unlink()
    raw = bytearray(shards[1].read_bytes())
    raw[-5] ^= 0xFF  # one flipped byte in the data, header intact
    shards[1].write_bytes(bytes(raw))
    lookup, stats = fc.prepare(s.model, s.processor.image_processor, paths, req)
    assert (stats.recovered_shards, stats.computed, stats.hits) == (2, 4, 2)
    for p in paths:
        assert torch.equal(lookup(p), before[p])
    (store / "index.json").write_text("{not json")
    lookup, stats = fc.prepare(s.model, s.processor.image_processor, paths, req)
    assert stats.computed == 6 and all(torch.equal(lookup(p), before[p]) for p in paths)
    # the shards of the unreadable index were swept, not left to fill the disk unseen
    on_disk = sum(p.stat().st_size for p in store.glob("*.safetensors"))
    assert len(list(store.glob("*.safetensors"))) == 3 and on_disk == stats.bytes_on_disk


def test_size_estimate_is_printed_and_the_budget_refuses_in_one_line(setup, tmp_path, capsys):
    s = setup
    paths = dataset(s, s.data["vqa"]).image_files()
    with pytest.raises(fc.FeatureCacheError) as err:
        fc.prepare(s.model, s.processor.image_processor, paths, request(tmp_path / "fc", max_gb=1e-9))
    msg = str(err.value)
    assert isinstance(err.value, ConfigError)  # the CLI prints it as one line, no traceback
    assert "\n" not in msg and "feature_cache_max_gb=1e-09" in msg and "exceeds the budget" in msg
    assert "raise it" in msg and not list((tmp_path / "fc").rglob("*.safetensors"))
    out = capsys.readouterr().out
    assert "vision features: 4 to compute" in out and "MB per image" in out
    # the figure: a CLIP-L/336 map (576 patches x 1024) in bf16 is ~1.2 MB per image
    clip_l = SimpleNamespace(config=SimpleNamespace(image_seq_length=576, vision_feature_layer=-2,
                                                    vision_config=SimpleNamespace(hidden_size=1024)))
    tokens, dim = fc.feature_shape(clip_l)
    assert tokens * dim * 2 == pytest.approx(1.2e6, rel=0.02)


def test_when_the_cache_is_used(setup):
    s = setup
    proc, tower = s.processor.image_processor, s.model.model.vision_tower
    assert fc.decide("auto", ["projector"], proc, tower)[0]
    assert not fc.decide("auto", ["projector", "vision_tower"], proc, tower)[0]
    assert not fc.decide("off", ["projector"], proc, tower)[0]
    assert not fc.decide(False, ["projector"], proc, tower)[0] and fc.decide(True, ["projector"], proc, tower)[0]
    assert not fc.decide("auto", ["projector"], object(), tower)[0]  # unknown processor: maybe random
    assert fc.decide("on", ["projector"], object(), tower)[0]
    with pytest.raises(ConfigError, match="trains the vision tower"):
        fc.decide("on", ["vision_tower"], proc, tower)
    with pytest.raises(ConfigError, match="one of"):
        fc.decide("yes", ["projector"], proc, tower)
    random_tower = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1))
    assert not fc.decide("auto", ["projector"], proc, random_tower)[0]  # training-mode features would be random


class CountTower(TrainerCallback):
    """Counts vision-tower forward calls while the Trainer trains."""

    def __init__(self):
        self.calls = 0

    def on_train_begin(self, args, state, control, model=None, **kw):
        model.model.vision_tower.register_forward_hook(lambda *a: setattr(self, "calls", self.calls + 1))


def test_stages_share_the_store_report_it_and_save_a_plain_checkpoint(backbones, tiny_data, tmp_path):
    from transformers import CLIPVisionModel, LlavaForConditionalGeneration

    from test_train import write_recipe

    from allava.train.stages import load_recipe, run_recipe

    bad = tmp_path / "vqa-bad.jsonl"
    images = tmp_path / "images"
    shutil.copytree(tiny_data["images"], images)
    tiny_data = {**tiny_data, "images": str(images)}
    shutil.copy(images / "0.png", images / "same-bytes.png")  # a second path with the same content
    (images / "garbage.png").write_bytes(b"not an image at all")
    rows = Path(tiny_data["vqa"]).read_text().splitlines()
    extra = [json.loads(rows[0]) | {"id": "dup", "image": "same-bytes.png"},
             json.loads(rows[1]) | {"id": "garbage", "image": "garbage.png"}]
    bad.write_text("\n".join(rows + [json.dumps(r) for r in extra]) + "\n")
    out = tmp_path / "run"
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", backbones, tiny_data, out, max_steps=3, save_steps=100,
                                      stage1_train=("projector",)),
                         [f"stages.stage2.data.0.path={bad}", "stages.stage2.group_by_modality=false"])
    counters = {"stage1": [CountTower()], "stage2": [CountTower()]}
    s1, s2 = run_recipe(recipe, progress=False, callbacks=counters)
    assert counters["stage1"][0].calls == counters["stage2"][0].calls == 0
    c1, c2 = s1.feature_cache, s2.feature_cache
    assert c1["used"] and (c1["images"], c1["computed"], c1["hits"]) == (24, 4, 0)
    assert c2["used"] and (c2["images"], c2["computed"], c2["hits"]) == (26, 0, 4)  # garbage: not computable
    assert c2["failed"] == 1 and c2["dir"] == c1["dir"] == str(Path(c1["dir"]))
    assert c1["bytes_on_disk"] > 0 and c1["compute_s"] > 0 and str(out / "feature_cache") in c1["dir"]
    saved = json.loads((out / "stage2" / "summary.json").read_text())
    assert saved["feature_cache"] == c2 and saved["samples_per_s"] > 0
    # the unreadable image is a skipped record with the dataset's reason, whenever it is drawn
    if s2.data["skipped"]:
        assert set(s2.data["skipped"]) == {"corrupt image"}
        assert all(e.startswith("garbage: corrupt image") for e in s2.data["skipped_examples"])
    # the checkpoint is a plain Llava model with its (unchanged) tower
    m = LlavaForConditionalGeneration.from_pretrained(s2.model_dir)
    ref = CLIPVisionModel.from_pretrained(backbones["clip"])
    for (k, a), (_, b) in zip(sorted(m.model.vision_tower.state_dict().items()), sorted(ref.state_dict().items())):
        assert torch.equal(a, b), k


def test_unreadable_images_are_reported_as_skipped_records(setup, tmp_path):
    s = setup
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(Path(s.data["images"]) / "1.png", images / "ok.png")
    (images / "bad.png").write_bytes(b"\x89PNG garbage")
    rec = json.loads(Path(s.data["vqa"]).read_text().splitlines()[0])
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(rec | {"id": "ok", "image": "ok.png"}) + "\n"
                    + json.dumps(rec | {"id": "bad", "image": "bad.png"}) + "\n")
    ds = dataset(s, str(data), image_folder=str(images))
    ds.features, stats = fc.prepare(s.model, s.processor.image_processor, ds.image_files(), request(tmp_path / "fc"))
    assert (stats.computed, stats.failed) == (1, 1)
    assert ds[1]["id"] == "ok"  # the bad record is replaced by the next one...
    assert ds.report.skipped == {"corrupt image": 1}  # ...and counted with the dataset's usual reason
    assert ds.report.examples[0].startswith(f"bad: corrupt image: {images / 'bad.png'}")
