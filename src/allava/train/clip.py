"""Stage 0c: train a tiny CLIP contrastively from scratch (CLIP-ViT-L/14-336 stand-in).

The saved folder is laid out like `openai/clip-vit-large-patch14-336`, so the LLaVA builder loads the
frozen vision tower with `CLIPVisionModel.from_pretrained` / `CLIPImageProcessor.from_pretrained`.

Speed: every image goes through the image processor once (resize + center crop, kept as uint8);
each step only rescales/normalizes a batch with the processor's own constants.
Text: captions are `<s> caption </s>`; the text config's `eos_token_id` is the tokenizer's eos, so
`CLIPTextTransformer` pools at the first eos position (transformers treats `eos_token_id == 2`
as a legacy config and pools at argmax(input_ids) instead, hence the check below).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoTokenizer, CLIPModel, PreTrainedTokenizerBase

from allava.model.presets import TinyCLIP
from allava.train.loop import random_batches, train_steps

ImageLike = str | Path | Image.Image
# (image, caption), (image, caption, hard-negative captions) or
# (image, caption, negatives, {label name: one class id per patch, -100 = none})
Pair = tuple[ImageLike, str] | tuple[ImageLike, str, list[str]] | tuple[ImageLike, str, list[str], dict[str, list[int]]]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass
class CLIPTrainConfig:
    """Defaults: the quickstart's ~90 s budget (about 1.6 steps/s on 2 Zen 4 cores with bf16)."""

    max_steps: int = 140
    batch_size: int = 128
    lr: float = 1e-3
    warmup_ratio: float = 0.1
    seed: int = 0
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_size: int = 256  # held-out pairs (capped at 20% of the data)
    eval_batch: int = 64  # retrieval is top-1 among this many captions
    # Each image is also contrasted with its own hard-negative captions (one shape, colour or cell
    # changed; NegCLIP), so shape and position must be encoded, not just what tells random scenes apart.
    hard_negatives: bool = True
    # Std of the learned position embeddings at init. CLIP's default (0.02) is ~50x weaker than a
    # patch embedding, and contrastive training never restores it: patch tokens then hardly say where
    # they are, which a LLaVA LM (RoPE: positions reach only attention scores) needs to read off.
    position_init_std: float | None = 1.0
    # Dense supervision: where pairs carry per-patch labels, a probe per label name on the patch
    # outputs of `dense_layer` (the layer LLaVA feeds its projector) adds `dense_weight` x its
    # cross-entropy. The probes are dropped at save: the tower stays a plain CLIPVisionModel.
    dense_weight: float = 1.0
    dense_layer: int = -2
    # > 0: the probes are cosine classifiers (unit features . unit class vectors x this scale), so a
    # label must be a large share of the patch token's direction, not a faint linearly decodable one.
    dense_cosine_scale: float = 0.0
    dense_position: bool = False  # also a "cell" label per patch: its own index (where am I)
    # A label's weight in the mean of the probes' losses (1 when absent): what the LM must read
    # hardest (shape) can be made a larger share of the token than what it reads easily (colour).
    dense_label_weights: dict[str, float] = field(default_factory=dict)
    bf16: bool | None = None  # bf16 autocast; None = when the CPU has native bf16


def make_image_processor(image_size: int):
    """A CLIP image processor for `image_size` (the slow PIL backend when torchvision is absent)."""
    try:
        import torchvision  # noqa: F401

        from transformers import CLIPImageProcessor as cls
    except ImportError:  # transformers 5.x: CLIPImageProcessor would warn and fall back to this
        from transformers import CLIPImageProcessorPil as cls
    return cls(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )


def cache_images(images: list[ImageLike], processor, chunk: int = 256) -> torch.Tensor:
    """Resize + center-crop every image once with `processor`; returns a uint8 (N, 3, H, W) tensor."""
    out = []
    for i in range(0, len(images), chunk):
        pil = [_load(im) for im in images[i : i + chunk]]
        px = processor(pil, do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"]
        out.append(px if px.dtype == torch.uint8 else px.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def _load(im: ImageLike) -> Image.Image:
    if isinstance(im, Image.Image):
        return im.convert("RGB")
    with Image.open(im) as f:
        return f.convert("RGB")


def normalize(pixels: torch.Tensor, processor) -> torch.Tensor:
    """uint8 cache -> model input, with the processor's exact rescale/mean/std."""
    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    return (pixels.float() * processor.rescale_factor - mean) / std


def tokenize_captions(
    captions: list[str], tokenizer: PreTrainedTokenizerBase, max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`<s> caption </s>` padded with pad; truncation keeps the final eos. Returns (ids, lengths)."""
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    rows = [[bos] + ids[: max_len - 2] + [eos] for ids in tokenizer(captions, add_special_tokens=False)["input_ids"]]
    lengths = torch.tensor([len(r) for r in rows])
    ids = torch.full((len(rows), int(lengths.max())), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return ids, lengths


def _text_batch(ids: torch.Tensor, lengths: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows `idx`, trimmed to the longest caption in the batch (causal text model: padding is inert)."""
    n = int(lengths[idx].max())
    mask = (torch.arange(n)[None, :] < lengths[idx][:, None]).long()
    return ids[idx, :n], mask


def build_clip(tokenizer: PreTrainedTokenizerBase, preset: TinyCLIP) -> CLIPModel:
    if tokenizer.eos_token_id == 2:
        raise ValueError("eos_token_id == 2 makes transformers' CLIP pool at argmax(input_ids); use another eos id")
    cfg = preset.config(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    return CLIPModel(cfg)


@torch.no_grad()
def retrieval_accuracy(model: CLIPModel, processor, pixels: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor,
                       captions: list[str], batch: int) -> tuple[float, float]:
    """Image->text top-1 within consecutive chunks of `batch` pairs; returns (accuracy, chance).

    A hit is picking a caption whose text equals the true one, so duplicate captions are not misses.
    """
    model.eval()
    hits, chance, n = 0.0, 0.0, len(captions)
    for s in range(0, n, batch):
        idx = torch.arange(s, min(s + batch, n))
        input_ids, mask = _text_batch(ids, lengths, idx)
        px = normalize(pixels[idx], processor)
        logits = model(input_ids=input_ids, attention_mask=mask, pixel_values=px).logits_per_image
        chunk = [captions[i] for i in idx]
        for row, pred in enumerate(logits.argmax(dim=-1).tolist()):
            hits += chunk[pred] == chunk[row]
            chance += chunk.count(chunk[row]) / len(chunk)
    model.train()
    return hits / n, chance / n


def _unit(out) -> torch.Tensor:
    """Unit-norm projected embeddings (transformers 5 returns an output object, 4.x a tensor)."""
    emb = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(emb, dim=-1)


def _contrastive_loss(model: CLIPModel, img: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                      neg_ids: torch.Tensor | None, neg_mask: torch.Tensor | None) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP's own loss without negatives); with negatives, image->text also ranks
    each image's hard negatives (extra columns shared by the batch, as NegCLIP does)."""
    img = _unit(img)
    txt = _unit(model.get_text_features(input_ids=ids, attention_mask=mask))
    scale = model.logit_scale.exp()
    cols = txt
    if neg_ids is not None and len(neg_ids):
        neg = _unit(model.get_text_features(input_ids=neg_ids, attention_mask=neg_mask))
        cols = torch.cat([txt, neg])
    target = torch.arange(len(img))
    i2t = torch.nn.functional.cross_entropy(scale * img @ cols.T, target)
    t2i = torch.nn.functional.cross_entropy(scale * txt @ img.T, target)
    return (i2t + t2i) / 2


def _dense_labels(pairs: list[tuple], n_patches: int) -> dict[str, torch.Tensor]:
    """{name: (N, n_patches) long} from the pairs' label dicts; every pair must carry the same names."""
    names = sorted(pairs[0][3]) if pairs and pairs[0][3] else []
    out = {}
    for name in names:
        rows = []
        for i, p in enumerate(pairs):
            row = (p[3] or {}).get(name)
            if row is None or len(row) != n_patches:
                got = "no labels" if row is None else f"{len(row)} labels"
                raise ValueError(f"pair {i} ({p[0]}): patch label {name!r} needs {n_patches} values (one per patch), got {got}")
            rows.append(row)
        out[name] = torch.tensor(rows, dtype=torch.long)
    return out


class CosineProbe(torch.nn.Module):
    """scale x cos(feature, class vector): the loss falls only as the label's share of the feature grows."""

    def __init__(self, hidden: int, classes: int, scale: float):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(classes, hidden) * hidden ** -0.5)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.nn.functional.normalize(x.float(), dim=-1)
        return self.scale * f @ torch.nn.functional.normalize(self.weight, dim=-1).T


def check_label_weights(weights: dict[str, float], labels: set[str]) -> None:
    """A weight for a label no pair carries is a mistake (a typo weighs nothing): say which."""
    unknown = sorted(set(weights) - labels)
    if unknown:
        raise ValueError(f"clip.dense_label_weights: no per-patch label {', '.join(unknown)} "
                         f"(labels: {', '.join(sorted(labels)) or 'none'})")


def _dense_loss(heads: torch.nn.ModuleDict, patches: torch.Tensor, labels: dict[str, torch.Tensor],
                weights: dict[str, float]) -> torch.Tensor:
    """Mean over label names of the probes' cross-entropy on labelled patches, each x its weight."""
    losses = [weights.get(k, 1.0) * torch.nn.functional.cross_entropy(
        heads[k](patches).flatten(0, 1).float(), y.flatten(), ignore_index=-100)
        for k, y in labels.items() if (y != -100).any()]
    return torch.stack(losses).mean()


@torch.no_grad()
def _probe_accuracy(model: CLIPModel, heads: torch.nn.ModuleDict, processor, pixels: torch.Tensor,
                    labels: dict[str, torch.Tensor], layer: int, batch: int) -> dict[str, float]:
    """Held-out accuracy of each dense probe on the patches that carry its label."""
    model.eval()
    hits = {k: 0 for k in labels}
    for s in range(0, len(pixels), batch):
        hs = model.vision_model(pixel_values=normalize(pixels[s:s + batch], processor), output_hidden_states=True)
        patches = hs.hidden_states[layer][:, 1:]
        for k, y in labels.items():
            y = y[s:s + batch]
            hits[k] += int(((heads[k](patches).argmax(-1) == y) & (y != -100)).sum())
    model.train()
    return {k: hits[k] / max(1, int((y != -100).sum())) for k, y in labels.items()}


def train_clip(
    pairs: list[Pair],
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    preset: TinyCLIP,
    cfg: CLIPTrainConfig,
    progress: bool = True,
) -> dict:
    """Train a CLIP from scratch with the symmetric InfoNCE loss; save model, processor and tokenizer.

    Returns stats: steps, final_loss (mean of the last 10 steps), retrieval_acc and retrieval_chance
    on the held-out slice, steps_per_s, cache_s (image preprocessing), wall_s, loss_history.
    """
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    processor = make_image_processor(preset.image_size)
    model = build_clip(tokenizer, preset)
    if cfg.position_init_std is not None:
        torch.nn.init.normal_(model.vision_model.embeddings.position_embedding.weight, std=cfg.position_init_std)
    model.train()

    pairs = [(p[0], p[1], list(p[2]) if len(p) > 2 and cfg.hard_negatives else [], p[3] if len(p) > 3 else None)
             for p in pairs]
    random.Random(cfg.seed).shuffle(pairs)  # held-out slice must not depend on input order
    n_eval = min(cfg.eval_size, len(pairs) // 5)
    n_train = len(pairs) - n_eval
    captions = [p[1] for p in pairs]
    t_cache = time.perf_counter()
    pixels = cache_images([p[0] for p in pairs], processor)  # uint8; normalized per batch
    cache_s = time.perf_counter() - t_cache
    ids, lengths = tokenize_captions(captions, tokenizer, preset.max_text_positions)
    negatives = [n for p in pairs[:n_train] for n in p[2]]
    owner = torch.tensor([i for i, p in enumerate(pairs[:n_train]) for _ in p[2]], dtype=torch.long)
    n_patches = (preset.image_size // preset.patch_size) ** 2
    dense = _dense_labels(pairs, n_patches) if cfg.dense_weight > 0 else {}
    if cfg.dense_weight > 0 and cfg.dense_position:
        dense["cell"] = torch.arange(n_patches).expand(len(pairs), -1).clone()

    def probe(classes: int) -> torch.nn.Module:
        if cfg.dense_cosine_scale > 0:
            return CosineProbe(preset.vision_hidden, classes, cfg.dense_cosine_scale)
        return torch.nn.Linear(preset.vision_hidden, classes)

    check_label_weights(cfg.dense_label_weights, set(dense))
    heads = torch.nn.ModuleDict({k: probe(int(y.max()) + 1) for k, y in dense.items()})
    neg_ids, neg_lengths = tokenize_captions(negatives, tokenizer, preset.max_text_positions) if negatives else (None, None)

    batches = random_batches(n_train, cfg.batch_size, torch.Generator().manual_seed(cfg.seed))

    def step_loss() -> torch.Tensor:
        idx = next(batches)
        input_ids, mask = _text_batch(ids, lengths, idx)
        px = normalize(pixels[idx], processor)
        neg = torch.nonzero(torch.isin(owner, idx)).flatten()
        n_ids, n_mask = _text_batch(neg_ids, neg_lengths, neg) if len(neg) else (None, None)
        vision = model.vision_model(pixel_values=px, output_hidden_states=bool(dense))
        loss = _contrastive_loss(model, model.visual_projection(vision.pooler_output), input_ids, mask, n_ids, n_mask)
        if dense:
            patches = vision.hidden_states[cfg.dense_layer][:, 1:]
            loss = loss + cfg.dense_weight * _dense_loss(heads, patches, {k: y[idx] for k, y in dense.items()},
                                                         cfg.dense_label_weights)
        return loss

    losses, train_s, bf16 = train_steps(
        torch.nn.ModuleDict({"clip": model, "probes": heads}), step_loss, max_steps=cfg.max_steps, lr=cfg.lr, warmup_ratio=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip, betas=(0.9, 0.98), bf16=cfg.bf16,
        desc="train CLIP", progress=progress)

    acc, chance = (float("nan"), float("nan"))
    if n_eval:
        ev = slice(n_train, None)
        acc, chance = retrieval_accuracy(
            model, processor, pixels[ev], ids[ev], lengths[ev], captions[ev], cfg.eval_batch
        )

    probe_acc = _probe_accuracy(model, heads, processor, pixels[n_train:], {k: y[n_train:] for k, y in dense.items()},
                                cfg.dense_layer, cfg.eval_batch) if dense and n_eval else {}

    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "steps": cfg.max_steps,
        "final_loss": sum(losses[-10:]) / max(1, len(losses[-10:])),
        "retrieval_acc": acc,
        "retrieval_chance": chance,
        "num_eval": n_eval,
        "steps_per_s": cfg.max_steps / train_s,
        "cache_s": cache_s,
        "wall_s": time.perf_counter() - t0,
        "bf16": bf16,
        "hard_negatives": len(negatives),
        "dense_probe_acc": probe_acc,  # held-out, per label name
        "loss_history": losses,
    }
