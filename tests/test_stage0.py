"""Stage 0 (tokenizer, LM pretraining, CLIP training) on tiny synthetic data with the `test` preset."""
from __future__ import annotations

import random

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPImageProcessor, CLIPModel, CLIPVisionModel

from allava.model.presets import PRESETS
from allava.train.clip import CLIPTrainConfig, cache_images, make_image_processor, normalize, train_clip
from allava.train.pretrain_lm import LMPretrainConfig, pretrain_lm
from allava.train.tokenizer import train_tokenizer

LM_PRESET, CLIP_PRESET = PRESETS["test"]
COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}
SHAPES = ["square", "circle"]


def _sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        f"There is a {rng.choice(list(COLORS))} {rng.choice(SHAPES)} at the {rng.choice(['left', 'right', 'top'])}."
        for _ in range(n)
    ]


def _shape_image(color: str, rng: random.Random, size: int = 40) -> Image.Image:
    """A coloured square at a random place on a random dark background."""
    im = Image.new("RGB", (size, size), (rng.randint(0, 60),) * 3)
    x, y = rng.randint(0, size // 3), rng.randint(0, size // 3)
    ImageDraw.Draw(im).rectangle([x, y, x + size // 2, y + size // 2], fill=COLORS[color])
    return im


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    texts = _sentences(300) + [f"a {c} square" for c in COLORS] + ["Héllo wörld, 日本語 🙂"]
    train_tokenizer(texts, out, vocab_size=400)
    return out


def test_tokenizer_roundtrip_and_reload(tok_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert tok.is_fast
    assert (tok.bos_token, tok.eos_token, tok.unk_token, tok.pad_token) == ("<s>", "</s>", "<unk>", "<pad>")
    assert tok.eos_token_id != 2  # see allava.train.clip: eos id 2 breaks CLIP pooling
    assert "<image>" not in tok.get_vocab()
    for text in ["a red square", "  spaces\tand\nnewlines  ", "unseen: Ωμέγα ✓ 中文 🚀 ﷽", ""]:
        ids = tok.encode(text)
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text
    assert tok.encode("a red square")[0] != tok.bos_token_id  # no automatic bos/eos
    again = train_tokenizer(_sentences(300) + [f"a {c} square" for c in COLORS] + ["Héllo wörld, 日本語 🙂"],
                            tmp_path, vocab_size=400)
    assert again.get_vocab() == tok.get_vocab()  # deterministic


def test_pretrain_lm(tok_dir, tmp_path):
    texts = _sentences(400)
    cfg = LMPretrainConfig(max_steps=40, batch_size=16, seq_len=32, lr=3e-3)
    stats = pretrain_lm(texts, tok_dir, tmp_path, LM_PRESET, cfg, progress=False)
    hist = stats["loss_history"]
    assert len(hist) == stats["steps"] == 40
    assert sum(hist[-5:]) / 5 < 0.6 * sum(hist[:5]) / 5
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    prompt = tok("There is a", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > prompt["input_ids"].shape[1]
    assert isinstance(tok.decode(out[0]), str)


@pytest.fixture(scope="module")
def clip_run(tok_dir, tmp_path_factory):
    rng = random.Random(0)
    img_dir, out = tmp_path_factory.mktemp("imgs"), tmp_path_factory.mktemp("clip")
    pairs = []
    for i in range(200):
        color = rng.choice(list(COLORS))
        path = img_dir / f"{i}.png"
        _shape_image(color, rng).save(path)
        pairs.append((path, f"a {color} square"))
    cfg = CLIPTrainConfig(max_steps=30, batch_size=32, lr=1e-3, eval_size=48, eval_batch=16)
    return train_clip(pairs, tok_dir, out, CLIP_PRESET, cfg, progress=False), out, pairs


def test_clip_learns(clip_run):
    stats, _, _ = clip_run
    hist = stats["loss_history"]
    assert sum(hist[-5:]) / 5 < 0.8 * sum(hist[:5]) / 5
    assert 0.2 < stats["retrieval_chance"] < 0.5  # 4 colours, 16 captions per retrieval batch
    assert stats["retrieval_acc"] > 0.8


def test_clip_folder_loads_like_openai_clip(clip_run):
    _, out, pairs = clip_run
    vision = CLIPVisionModel.from_pretrained(out)
    processor = CLIPImageProcessor.from_pretrained(out)
    assert vision.config.image_size == processor.crop_size["height"] == CLIP_PRESET.image_size
    images = [Image.open(p) for p, _ in pairs[:3]]
    px = processor(images, return_tensors="pt")["pixel_values"]
    assert torch.allclose(px, normalize(cache_images(images, processor), processor), atol=1e-5)
    hidden = vision(pixel_values=px, output_hidden_states=True).hidden_states[-2]
    n_patches = (CLIP_PRESET.image_size // CLIP_PRESET.patch_size) ** 2
    assert hidden.shape == (3, n_patches + 1, CLIP_PRESET.vision_hidden)
    # The trained weights, not a fresh init (transformers 5.x CLIPVisionModel has no `.vision_model` level).
    clip_sd = CLIPModel.from_pretrained(out).state_dict()
    for name, value in vision.state_dict().items():
        torch.testing.assert_close(value, clip_sd[f"vision_model.{name}"])


def test_clip_text_pools_at_eos(clip_run):
    _, out, _ = clip_run
    model, tok = CLIPModel.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    assert model.config.text_config.eos_token_id == tok.eos_token_id != 2
    # Two captions of different lengths, padded: the pooled state must be the eos position's.
    captions = ["a red square", "a blue square at the top"]
    rows = [[tok.bos_token_id] + tok.encode(c) + [tok.eos_token_id] for c in captions]
    ids = torch.full((2, max(map(len, rows))), tok.pad_token_id)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    text = model.text_model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long())
    eos_pos = torch.tensor([len(r) - 1 for r in rows])
    torch.testing.assert_close(text.pooler_output, text.last_hidden_state[torch.arange(2), eos_pos])


def test_make_image_processor_matches_requested_size():
    p = make_image_processor(96)
    assert p.size == {"shortest_edge": 96} and p.crop_size == {"height": 96, "width": 96}
    px = p(Image.new("RGB", (150, 120), (255, 0, 0)), return_tensors="pt")["pixel_values"]
    assert px.shape == (1, 3, 96, 96)


def test_clip_hard_negatives_enter_the_loss(tok_dir, tmp_path):
    """Each image is also ranked against its own negative captions: with the negative equal to the
    true caption the image->text term cannot fall below log 2, so the loss is measurably higher."""
    import torch

    from allava.train.clip import _contrastive_loss, build_clip, make_image_processor, normalize, tokenize_captions
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    model = build_clip(tok, CLIP_PRESET).eval()
    proc = make_image_processor(CLIP_PRESET.image_size)
    rng = random.Random(1)
    imgs = [_shape_image(c, rng) for c in ("red", "green", "blue", "yellow")]
    px = normalize(proc(imgs, do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"].float(), proc)
    caps = [f"a {c} square" for c in ("red", "green", "blue", "yellow")]
    ids, lengths = tokenize_captions(caps, tok, 16)
    mask = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
    with torch.no_grad():
        img = model.get_image_features(pixel_values=px)
        plain = _contrastive_loss(model, img, ids, mask, None, None)
        same = _contrastive_loss(model, img, ids, mask, ids, mask)  # negatives identical to the positives
    assert torch.isclose(plain, model(input_ids=ids, attention_mask=mask, pixel_values=px, return_loss=True).loss,
                         atol=1e-5)
    assert same > plain + 0.1

    pairs = [(img, cap, [cap.replace("square", "circle")]) for img, cap in zip(imgs * 10, caps * 10)]
    cfg = CLIPTrainConfig(max_steps=2, batch_size=8, eval_size=4, eval_batch=4, position_init_std=1.0)
    stats = train_clip(pairs, tok_dir, tmp_path / "clip", CLIP_PRESET, cfg, progress=False)
    assert stats["hard_negatives"] == len(pairs) - stats["num_eval"]
    from transformers import CLIPModel

    pos = CLIPModel.from_pretrained(tmp_path / "clip").vision_model.embeddings.position_embedding.weight
    assert pos.std() > 0.5  # the large init, not CLIP's 0.02


def _patch_grid_image(colors: list[str], side: int, patch: int) -> Image.Image:
    """One flat colour per ViT patch, row-major."""
    im = Image.new("RGB", (side, side))
    draw, per_row = ImageDraw.Draw(im), side // patch
    for k, c in enumerate(colors):
        r, col = divmod(k, per_row)
        draw.rectangle([col * patch, r * patch, (col + 1) * patch - 1, (r + 1) * patch - 1], fill=COLORS[c])
    return im


def test_clip_dense_labels_train_probes_on_the_projector_layer(tok_dir, tmp_path):
    """Per-patch labels train a linear probe on `dense_layer`'s patch outputs (held-out accuracy
    reported); with dense_weight 0 no probe is trained; the saved tower has no probe weights."""
    rng = random.Random(0)
    side, patch = CLIP_PRESET.image_size, CLIP_PRESET.patch_size
    n = (side // patch) ** 2
    names = list(COLORS)
    pairs = []
    for _ in range(160):
        cells = [rng.choice(names) for _ in range(n)]
        pairs.append((_patch_grid_image(cells, side, patch), " ".join(cells), [], {"color": [names.index(c) for c in cells]}))
    cfg = CLIPTrainConfig(max_steps=40, batch_size=32, lr=2e-3, eval_size=32, eval_batch=16, dense_layer=-2)
    stats = train_clip(pairs, tok_dir, tmp_path / "dense", CLIP_PRESET, cfg, progress=False)
    assert stats["dense_probe_acc"]["color"] > 0.9  # chance 0.25
    assert not any("probe" in k for k in CLIPModel.from_pretrained(tmp_path / "dense").state_dict())
    off = train_clip(pairs, tok_dir, tmp_path / "off", CLIP_PRESET,
                     CLIPTrainConfig(max_steps=1, batch_size=32, eval_size=32, dense_weight=0.0), progress=False)
    assert off["dense_probe_acc"] == {}


def test_cosine_probes_and_the_where_am_i_label(tok_dir, tmp_path):
    """Cosine probes score scale x cos(feature, class vector), so a token's length cannot buy a low
    loss; `dense_position` adds a "cell" label (the patch's own index) that the tower learns to say."""
    from allava.train.clip import CosineProbe

    probe = CosineProbe(8, 3, scale=10.0)
    x = torch.randn(5, 8)
    torch.testing.assert_close(probe(x), probe(100 * x))
    assert probe(x).abs().max() <= 10.0 + 1e-5
    rng = random.Random(1)
    side, patch = CLIP_PRESET.image_size, CLIP_PRESET.patch_size
    n = (side // patch) ** 2
    pairs = []
    for _ in range(96):
        cells = [rng.choice(list(COLORS)) for _ in range(n)]
        pairs.append((_patch_grid_image(cells, side, patch), " ".join(cells)))
    cfg = CLIPTrainConfig(max_steps=40, batch_size=32, lr=2e-3, eval_size=32, eval_batch=16,
                          dense_cosine_scale=10.0, dense_position=True)
    stats = train_clip(pairs, tok_dir, tmp_path / "cell", CLIP_PRESET, cfg, progress=False)
    assert set(stats["dense_probe_acc"]) == {"cell"}
    assert stats["dense_probe_acc"]["cell"] > 0.5, stats["dense_probe_acc"]  # chance 1/16 after 40 steps


def test_clip_dense_labels_of_the_wrong_length_name_the_pair(tok_dir, tmp_path):
    img = Image.new("RGB", (CLIP_PRESET.image_size,) * 2)
    pairs = [(img, "a", [], {"color": [0]})] * 10
    with pytest.raises(ValueError, match=r"pair \d+ .*patch label 'color' needs \d+ values \(one per patch\), got 1 labels"):
        train_clip(pairs, tok_dir, tmp_path / "bad", CLIP_PRESET, CLIPTrainConfig(max_steps=1, batch_size=4), progress=False)


def test_dense_label_weights_scale_a_probe_loss_and_name_unknown_labels(tok_dir, tmp_path):
    """A label's weight multiplies its cross-entropy in the probes' mean (1 when absent); a weight
    for a label no pair carries is refused before training, naming the labels there are."""
    from allava.train.clip import _dense_loss

    torch.manual_seed(0)
    heads = torch.nn.ModuleDict({"color": torch.nn.Linear(8, 4), "size": torch.nn.Linear(8, 3)})
    patches = torch.randn(2, 5, 8)
    labels = {"color": torch.randint(4, (2, 5)), "size": torch.randint(3, (2, 5))}
    plain, weighted = _dense_loss(heads, patches, labels, {}), _dense_loss(heads, patches, labels, {"color": 3.0})
    color = torch.nn.functional.cross_entropy(heads["color"](patches).flatten(0, 1), labels["color"].flatten())
    torch.testing.assert_close(weighted - plain, color)  # (3c + s) / 2 - (c + s) / 2 = c
    img = Image.new("RGB", (CLIP_PRESET.image_size,) * 2)
    n = (CLIP_PRESET.image_size // CLIP_PRESET.patch_size) ** 2
    pairs = [(img, "a", [], {"color": [0] * n})] * 10
    with pytest.raises(ValueError, match=r"dense_label_weights: no per-patch label shape \(labels: color\)"):
        train_clip(pairs, tok_dir, tmp_path / "bad", CLIP_PRESET,
                   CLIPTrainConfig(max_steps=1, batch_size=4, dense_label_weights={"shape": 2.0}), progress=False)


def _colour_docs(n: int, seed: int = 0) -> list[dict]:
    """Scene-in-words documents whose answers need a look-up in their own description."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        colour, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
        docs.append({"id": f"d{i}", "conversations": [
            {"from": "human", "value": f"There is a {colour} {shape} at the left.\nWhat colour is the {shape}?"},
            {"from": "gpt", "value": colour},
            {"from": "human", "value": "What shape is it?"}, {"from": "gpt", "value": shape}]})
    return docs


def test_document_steps_are_spread_evenly():
    from allava.train.pretrain_lm import document_steps

    assert document_steps(8, 0.25) == [False, False, False, True] * 2
    assert document_steps(5, 0.0) == [False] * 5 and document_steps(5, 1.0) == [True] * 5
    assert sum(document_steps(400, 0.7)) == 280
    with pytest.raises(ValueError, match="document_share"):
        LMPretrainConfig(document_share=1.5)


def test_answer_rows_train_the_answers_only(tok_dir):
    from allava.data.dataset import Collator
    from allava.train.pretrain_lm import DOCUMENT_PAD_MULTIPLE, answer_rows

    tok = AutoTokenizer.from_pretrained(tok_dir)
    docs = _colour_docs(3)
    rows, cut = answer_rows(docs, tok, "human_assistant", max_len=512)
    assert cut == 0 and len(rows) == 3
    for doc, row in zip(docs, rows):
        trained = tok.decode([t for t in row.labels if t != -100])
        answers = [t["value"] for t in doc["conversations"][1::2]]
        assert trained.replace(tok.eos_token, " ").split() == answers  # each answer and its eos, nothing else
    batch = Collator(tok.pad_token_id, DOCUMENT_PAD_MULTIPLE)(
        [{"input_ids": torch.tensor(r.input_ids), "labels": torch.tensor(r.labels), "pixel_values": None} for r in rows])
    n = max(len(r.input_ids) for r in rows)
    assert batch["input_ids"].shape == (3, -(-n // 32) * 32)  # a few distinct shapes, not one per step
    assert batch["attention_mask"].sum().item() == sum(len(r.input_ids) for r in rows)
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    _, cut = answer_rows(docs[:1], tok, "human_assistant", max_len=len(rows[0].input_ids) - 1)
    assert cut == 1  # the last answer's eos is cut off
    with pytest.raises(ValueError, match="LM document bad"):
        answer_rows([{"id": "bad", "conversations": [{"from": "human", "value": "no answer"}]}], tok,
                    "human_assistant", max_len=512)


def test_pretrain_lm_on_documents_learns_the_look_up(tok_dir, tmp_path):
    """Half the steps on documents (loss on answers only): the answers, which copy a word of the
    description, are learnt; the document steps' loss falls far below their start."""
    cfg = LMPretrainConfig(max_steps=120, batch_size=16, seq_len=32, lr=3e-3, document_share=0.5)
    stats = pretrain_lm(_sentences(400), tok_dir, tmp_path, LM_PRESET, cfg, progress=False,
                        documents=_colour_docs(300), template="human_assistant")
    assert (stats["document_steps"], stats["document_rows"], stats["documents_cut"]) == (60, 300, 0)
    doc_losses = stats["loss_history"][1::2]  # share 0.5: every second step is a document step
    assert sum(doc_losses[-5:]) / 5 < 0.3 * sum(doc_losses[:5]) / 5
