"""Modality-length grouping (LLaVA's ``group_by_modality_length``).

Each batch holds only image samples or only text samples, so a text batch never runs the vision
tower, and samples of similar length share a batch to waste less padding. The order depends only
on (seed, epoch), which is what lets a resumed run skip exactly the batches it already saw.
"""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


class ModalityGroupedSampler(Sampler[int]):
    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, megabatch: int = 8):
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.megabatch = megabatch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def _batches(self, indices: list[int], g: torch.Generator) -> tuple[list[list[int]], list[int]]:
        perm = [indices[i] for i in torch.randperm(len(indices), generator=g).tolist()]
        span = self.batch_size * self.megabatch
        batches: list[list[int]] = []
        for start in range(0, len(perm), span):
            mega = sorted(perm[start:start + span], key=lambda i: -abs(self.lengths[i]))
            batches += [mega[k:k + self.batch_size] for k in range(0, len(mega), self.batch_size)]
        if batches and len(batches[-1]) < self.batch_size:
            return batches[:-1], batches[-1]
        return batches, []

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        image = [i for i, n in enumerate(self.lengths) if n > 0]
        text = [i for i, n in enumerate(self.lengths) if n <= 0]
        image_batches, image_rest = self._batches(image, g)
        text_batches, text_rest = self._batches(text, g)
        batches = image_batches + text_batches
        order = torch.randperm(len(batches), generator=g).tolist()
        out = [i for b in order for i in batches[b]]
        return iter(out + image_rest + text_rest)  # the leftovers make the last (mixed) batch
