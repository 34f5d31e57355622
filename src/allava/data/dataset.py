"""Training data: sources mixed by ratio, encoded lazily, batched with the vision tower skipped
for text-only samples.

ALLaVA mixes "one copy of caption data and two copies of textual data" (stage 1) and "one copy of
VQA data and one copy of textual data" (stage 2), then samples randomly: a ``repeat`` per source,
fractional repeats taking a seeded subset, and the sampler shuffles the union.

With a feature cache (``features``: image path -> the frozen tower's selected features, see
``allava.train.feature_cache``) an image sample carries ``image_features`` instead of
``pixel_values`` and no image is decoded during training.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from allava.data.records import DataError, image_path, load_records
from allava.data.tokenize import IGNORE_INDEX, ConversationEncoder, EncodeError

log = logging.getLogger(__name__)


@dataclass
class DataSource:
    path: str
    image_folder: str | None = None
    repeat: float = 1.0


@dataclass
class LoadReport:
    """What was skipped and why: counted, never silent."""

    total: int = 0
    used: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def add(self, record_id: str, reason: str) -> None:
        kind = reason.split(":")[0]
        self.skipped[kind] = self.skipped.get(kind, 0) + 1
        if len(self.examples) < 20:
            self.examples.append(f"{record_id}: {reason}")

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())


def mix_indices(sizes: list[int], repeats: list[float], seed: int) -> list[tuple[int, int]]:
    """(source, record) pairs: ``floor(repeat)`` full copies plus a seeded subset for the fraction."""
    rng = random.Random(seed)
    out: list[tuple[int, int]] = []
    for s, (n, r) in enumerate(zip(sizes, repeats)):
        whole, frac = int(r), r - int(r)
        out += [(s, i) for _ in range(whole) for i in range(n)]
        out += [(s, i) for i in sorted(rng.sample(range(n), round(frac * n)))]
    return out


def read_image(path: str | Path) -> Image.Image:
    """The RGB image a sample trains on; EncodeError (a skip reason) when it cannot be read."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Exception as e:  # corrupt or vanished since validation
        raise EncodeError(f"corrupt image: {path} ({type(e).__name__})") from e


class ConversationDataset(Dataset):
    def __init__(self, sources: list[DataSource], encoder: ConversationEncoder, image_processor,
                 seed: int = 0, check_images: str = "exists", images_only: bool = False,
                 features: Callable[[str], torch.Tensor] | None = None):
        self.encoder = encoder
        self.image_processor = image_processor
        self.features = features  # set by the stage once the cache is ready; raises EncodeError for bad images
        self.report = LoadReport()
        self.records: list[list[dict]] = []
        self.folders: list[str] = []  # the records' image folder (default: the data file's folder)
        for src in sources:
            records, problems = load_records(src.path, image_folder=src.image_folder, check_images=check_images)
            self.report.total += len(records) + len(problems)
            for p in problems:
                self.report.add(p.record_id, p.reason)
            if images_only:  # e.g. a projector-only stage: text-only samples would give no gradient
                for r in (r for r in records if not r.get("image")):
                    self.report.add(str(r["id"]), "text-only record in a stage that trains only image parts")
                records = [r for r in records if r.get("image")]
            self.records.append(records)
            self.folders.append(src.image_folder or str(Path(src.path).parent))
        self.index = mix_indices([len(r) for r in self.records], [s.repeat for s in sources], seed)
        self.report.used = sum(len(r) for r in self.records)
        if self.report.n_skipped:
            log.warning("skipped %d invalid records (%s)", self.report.n_skipped, self.report.skipped)
        if not self.index:
            raise DataError("no valid training records in " + ", ".join(s.path for s in sources))
        for src, records in zip(sources, self.records):
            self._check_fits(src, records)

    PROBE = 32  # records encoded per source up front: enough to tell "none fits" from "a few are long"

    def _check_fits(self, src: DataSource, records: list[dict]) -> None:
        """Refuse a source none of whose first records can be encoded (typically `model_max_length`
        below the image block or the first answer): otherwise every sample is skipped one by one
        while the run trains on the other sources, or fails after the model is built."""
        reasons = []
        for rec in records[: self.PROBE]:
            try:
                self.encoder.encode(rec["conversations"])
                return
            except EncodeError as e:
                reasons.append(str(e))
        if reasons:
            raise DataError(f"{src.path}: none of its first {len(reasons)} records can be encoded "
                            f"with model_max_length={self.encoder.max_length} ({reasons[0]})")

    def __len__(self) -> int:
        return len(self.index)

    def record(self, i: int) -> tuple[dict, str]:
        s, k = self.index[i]
        return self.records[s][k], self.folders[s]

    def image_files(self) -> list[str]:
        """Distinct image paths of the records in the mix (what a feature cache must cover)."""
        out: dict[str, None] = {}
        for s, k in dict.fromkeys(self.index):
            rec = self.records[s][k]
            if rec.get("image"):
                out[str(image_path(rec, self.folders[s]))] = None
        return list(out)

    @property
    def modality_lengths(self) -> list[int]:
        """Rough token counts, negative for text-only (LLaVA's convention for modality grouping)."""
        out = []
        for i in range(len(self)):
            rec, _ = self.record(i)
            words = sum(len(t["value"].split()) for t in rec["conversations"])
            out.append(words + self.encoder.num_image_tokens if rec.get("image") else -words)
        return out

    def _load(self, i: int) -> dict:
        rec, folder = self.record(i)
        enc = self.encoder.encode(rec["conversations"])
        item = {"id": str(rec["id"]), "input_ids": torch.tensor(enc.input_ids),
                "labels": torch.tensor(enc.labels), "pixel_values": None}
        if rec.get("image"):
            path = image_path(rec, folder)
            if self.features is not None:
                item["image_features"] = self.features(str(path))
            else:
                item["pixel_values"] = self.image_processor(read_image(path), return_tensors="pt")["pixel_values"][0]
            if enc.n_image_tokens != self.encoder.num_image_tokens:
                raise EncodeError(f"expected 1 image marker, found {enc.n_image_tokens // max(1, self.encoder.num_image_tokens)}")
        return item

    def __getitem__(self, i: int) -> dict:
        # A record that fails here is reported and replaced by the next one, so one bad file
        # never stops a long run (the count is in ``report``).
        for k in range(len(self)):
            j = (i + k) % len(self)
            try:
                return self._load(j)
            except EncodeError as e:
                rec, _ = self.record(j)
                self.report.add(str(rec["id"]), str(e))
                log.warning("skipping %s: %s", rec["id"], e)
        raise RuntimeError("every record failed to load")


def _stack_images(samples: list[dict], out: dict) -> dict:
    """Images (pixels, or cached features) of the samples that have one, in the samples' order:
    the order their ``<image>`` blocks appear in the batch, row by row, which is the order the
    model scatters them in."""
    images = [b["pixel_values"] for b in samples if b["pixel_values"] is not None]
    if images:
        out["pixel_values"] = torch.stack(images)
    features = [b["image_features"] for b in samples if b.get("image_features") is not None]
    if features:
        out["image_features"] = torch.stack(features)
    return out


class Collator:
    """Right-pads a batch to its longest sample, rounded up to a multiple of ``pad_to_multiple_of``
    (a few distinct shapes keep kernel caches and the allocator from growing with every length;
    8 wastes little once batches are length-grouped); stacks images (pixels, or cached features)
    only for samples that have one."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 1):
        self.pad_token_id = pad_token_id
        self.multiple = max(1, pad_to_multiple_of)

    def _empty(self, rows: int, longest: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = -(-longest // self.multiple) * self.multiple
        return (torch.full((rows, n), self.pad_token_id, dtype=torch.long),
                torch.full((rows, n), IGNORE_INDEX, dtype=torch.long))

    def __call__(self, batch: list[dict]) -> dict:
        ids, labels = self._empty(len(batch), max(len(b["input_ids"]) for b in batch))
        mask = torch.zeros_like(ids)
        for r, b in enumerate(batch):
            k = len(b["input_ids"])
            ids[r, :k], labels[r, :k], mask[r, :k] = b["input_ids"], b["labels"], 1
        return _stack_images(batch, {"input_ids": ids, "labels": labels, "attention_mask": mask})


class PackingCollator(Collator):
    """Packs a batch's samples into as few rows as fit, each sample whole (first-fit decreasing;
    a row holds at most the batch's longest sample, so attention never spans more than unpacked and
    a sample is never split, its image block included: the encoder truncated it already, exactly as
    unpacked). Position ids restart at 0 in each sample and no attention mask is passed:
    ``transformers`` then keeps attention inside each sample (``find_packed_sequence_indices``:
    the variable-length path of flash attention, a block-diagonal mask for sdpa / eager). Each
    sample's first label is ignored (unpacked, the shift drops it), so every sample's loss terms are
    its unpacked ones. ``num_tokens`` (the real tokens, for the tokens/s count) rides along."""

    def __call__(self, batch: list[dict]) -> dict:
        longest = max(len(b["input_ids"]) for b in batch)
        rows: list[list[int]] = []  # sample indices per row
        room: list[int] = []
        for i in sorted(range(len(batch)), key=lambda i: -len(batch[i]["input_ids"])):
            n = len(batch[i]["input_ids"])
            r = next((r for r, free in enumerate(room) if free >= n), None)
            if r is None:
                rows.append([])
                room.append(longest)
                r = len(rows) - 1
            rows[r].append(i)
            room[r] -= n
        ids, labels = self._empty(len(rows), longest)
        positions = torch.zeros_like(ids)
        order: list[dict] = []
        for r, members in enumerate(rows):
            at = 0
            for i in members:
                b = batch[i]
                k = len(b["input_ids"])
                ids[r, at:at + k], labels[r, at:at + k] = b["input_ids"], b["labels"]
                labels[r, at] = IGNORE_INDEX
                positions[r, at:at + k] = torch.arange(k)
                at += k
                order.append(b)
            # the row's tail of padding is one more "sample" (positions from 0), seen by nothing else
            positions[r, at:] = torch.arange(ids.shape[1] - at)
        out = {"input_ids": ids, "labels": labels, "position_ids": positions,
               "num_tokens": torch.tensor(sum(len(b["input_ids"]) for b in batch))}
        return _stack_images(order, out)
