"""Principle 2 (correctness, matching degree): CLIP similarity between the image and its text.

CLIP reads at most 77 tokens. Scoring a long answer in one go truncates it, so only the first
sentence or two are ever judged (data-juicer's `image_text_similarity_filter` pitfall): a
detailed answer that goes wrong in its fourth sentence scores as well as a correct one. Here the
text is split into sentences, each packed into <= 77-token chunks (long sentences are windowed),
every chunk is scored against the image, and the op reports `mean`, `min` and `first` (what a
truncating scorer would have seen). Thresholding `min` catches a wrong sentence anywhere.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from allava.quality.base import Op, OpSettings, QCRecord, Stats, no_cache, register_op

SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")


class Encoder(Protocol):
    """What the op needs from a CLIP: token ids of a text, and unit-norm embeddings."""

    max_tokens: int

    def token_ids(self, text: str) -> list[int]: ...
    def encode_texts(self, ids: list[list[int]]) -> np.ndarray: ...
    def encode_images(self, paths: list[Path]) -> np.ndarray: ...


def chunk_text(text: str, token_ids, max_tokens: int, min_words: int = 3) -> list[list[int]]:
    """Sentence chunks as token ids (specials excluded), each <= max_tokens - 2 tokens.

    Sentences shorter than `min_words` are joined to the next one (so "Yes." is judged in context);
    a sentence longer than the budget is cut into consecutive windows.
    """
    budget = max_tokens - 2  # room for the start / end tokens
    sentences, pending = [], ""
    for s in SENTENCE.split(text.strip()):
        s = (pending + " " + s).strip() if pending else s.strip()
        if not s:
            continue
        if len(s.split()) < min_words:
            pending = s
            continue
        sentences.append(s)
        pending = ""
    if pending:
        if sentences:
            sentences[-1] = sentences[-1] + " " + pending
        else:
            sentences.append(pending)
    chunks: list[list[int]] = []
    for s in sentences:
        ids = token_ids(s)
        chunks += [ids[i:i + budget] for i in range(0, max(1, len(ids)), budget) if ids[i:i + budget]]
    return chunks


def aggregate(sims: list[float]) -> Stats:
    if not sims:
        return {}
    return {"mean": float(np.mean(sims)), "min": float(np.min(sims)), "first": float(sims[0]), "chunks": len(sims)}


class HFClip:
    """A CLIP by hub id or local path (`CLIPModel` + its tokenizer and image processor)."""

    def __init__(self, path: str, device: str = "cpu", threads: int = 0):
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        from allava.quality.models import check_model, thread_count

        path = check_model(path, "clip")
        self.model = CLIPModel.from_pretrained(path).to(device).eval()
        self.tok = AutoTokenizer.from_pretrained(path)
        self.proc = AutoImageProcessor.from_pretrained(path)
        self.device = device
        self.threads = thread_count(self.model, threads)  # 0 = auto: one thread for a small CLIP
        self.max_tokens = int(self.model.config.text_config.max_position_embeddings)
        self.bos, self.eos = self.tok.bos_token_id, self.tok.eos_token_id
        self.pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.eos

    def token_ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    @staticmethod
    def _tensor(out):
        return out if hasattr(out, "norm") else out.pooler_output  # transformers 5 may return an output object

    def encode_texts(self, ids: list[list[int]]) -> np.ndarray:
        import torch

        from allava.quality.models import torch_threads

        rows = [([self.bos] if self.bos is not None else []) + x[: self.max_tokens - 2] + [self.eos] for x in ids]
        n = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), n), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        with torch.no_grad(), torch_threads(self.threads):
            e = self._tensor(self.model.get_text_features(input_ids=input_ids.to(self.device),
                                                          attention_mask=mask.to(self.device)))
        return torch.nn.functional.normalize(e.float(), dim=-1).cpu().numpy()

    def encode_images(self, paths: list[Path]) -> np.ndarray:
        import torch
        from PIL import Image

        from allava.quality.models import torch_threads

        ims = []
        for p in paths:
            with Image.open(p) as im:
                ims.append(im.convert("RGB"))
        px = self.proc(ims, return_tensors="pt")["pixel_values"].to(self.device)
        with torch.no_grad(), torch_threads(self.threads):
            e = self._tensor(self.model.get_image_features(pixel_values=px))
        return torch.nn.functional.normalize(e.float(), dim=-1).cpu().numpy()


@dataclass
class ClipMatchSettings(OpSettings):
    model: str | None = None  # hub id or local path of a CLIP (required)
    field: str = "responses"  # responses | all (instructions too)
    min_words: int = 3  # shorter sentences are joined to the next; texts shorter than this are not scored
    device: str = no_cache("cpu")
    batch_size: int = no_cache(32)
    threads: int = no_cache(0)  # torch intra-op threads; 0 = auto (1 for a model under 20M parameters)


def embed_chunks(get_encoder: Callable[[], Any], batch: list[QCRecord], text_of: Callable[[QCRecord], str],
                 min_words: int) -> list[tuple[int, QCRecord, np.ndarray, np.ndarray]]:
    """(batch index, record, image embedding, chunk embeddings) for records with an image and enough
    words. Unreadable images are skipped here: image_readability reports them."""
    todo = [(i, r) for i, r in enumerate(batch) if r.image_file is not None and len(text_of(r).split()) >= min_words]
    if not todo:
        return []
    enc = get_encoder()
    try:
        images, ok = list(enc.encode_images([r.image_file for _, r in todo])), todo
    except Exception:  # noqa: BLE001 - one unreadable image: encode one by one, skip the bad ones
        images, ok = [], []
        for i, r in todo:
            try:
                images.append(enc.encode_images([r.image_file])[0])
                ok.append((i, r))
            except Exception:  # noqa: BLE001, S112
                continue
    chunks = [chunk_text(text_of(r), enc.token_ids, enc.max_tokens, min_words) for _, r in ok]
    flat = [c for cs in chunks for c in cs]
    if not flat:
        return []
    emb = np.concatenate([enc.encode_texts(flat[k:k + 256]) for k in range(0, len(flat), 256)])
    out, pos = [], 0
    for (i, r), img, cs in zip(ok, images, chunks):
        out.append((i, r, img, emb[pos:pos + len(cs)]))
        pos += len(cs)
    return out


class ClipScored:
    """What the CLIP operators share: the encoder, loaded on first use (batches without images never
    need it), and the text they score (`settings.field`). `settings` comes from the op class."""

    encoder: Any
    settings: Any

    def _encoder(self) -> Any:
        if self.encoder is None:  # loaded on first use: batches without images never need it
            self.encoder = HFClip(self.settings.model, self.settings.device, getattr(self.settings, "threads", 0))
        return self.encoder

    def _text(self, r: QCRecord) -> str:
        return "\n".join(r.responses) if self.settings.field == "responses" else r.text()


@register_op("clip_match")
class ClipMatch(ClipScored, Op):
    Settings = ClipMatchSettings
    primary = "min"
    needs_image = True
    VERSION = "1"
    required = {"model": "a CLIP by hub id or path, e.g. the quickstart's OUT/clip"}

    def __init__(self, settings: ClipMatchSettings | None = None, encoder: Encoder | None = None):
        super().__init__(settings)
        self.encoder = encoder  # injected in tests; otherwise loaded on first use

    def compute(self, batch: list[QCRecord]) -> list[Stats]:
        out: list[Stats] = [{} for _ in batch]
        for i, _, img, chunk_emb in embed_chunks(self._encoder, batch, self._text, self.settings.min_words):
            out[i] = aggregate((chunk_emb @ img).tolist())
        return out

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        v = [s["mean"] for s in stats if "mean" in s]
        return {"matching_degree": float(np.mean(v))} if v else {}

    def close(self) -> None:
        self.encoder = None
