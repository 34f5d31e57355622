"""Modality-length grouping (LLaVA's ``group_by_modality_length``).

Each batch holds only image samples or only text samples, so a text batch never runs the vision
tower, and samples of similar length share a batch to waste less padding: the shuffled indices
of one modality are cut into megabatches of ``megabatch`` batches, each megabatch is sorted by
length and cut into batches, and the batches of both modalities are shuffled together.

The megabatch is counted in batches and is what makes grouping work: sorting a span of one batch
only reorders samples inside it and removes no padding, which is what LLaVA's sampler does on one
device without gradient accumulation (its megabatch is ``world_size x accumulation`` batches).
``default_megabatch`` follows ``transformers``' ``get_length_grouped_indices`` (50 batches, fewer
on small data so the order stays random), and is never below the batches of one optimizer step.

The order depends only on (seed, epoch), which is what lets a resumed run skip exactly the batches
it already saw. ``batch_size`` is the batch of all processes together (the data loader hands
consecutive per-device slices of it to the processes), so every process sees the same modality.
"""
from __future__ import annotations

import torch
from torch.utils.data import Sampler

MEGABATCH_MULT = 50  # transformers.trainer_pt_utils.get_length_grouped_indices


def default_megabatch(n: int, batch_size: int, accumulation: int = 1) -> int:
    """Batches sorted together: ``min(n // (4 batch), 50)`` as transformers, at least one step's worth."""
    return max(1, accumulation, min(n // (4 * batch_size), MEGABATCH_MULT))


class ModalityGroupedSampler(Sampler[int]):
    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, megabatch: int | None = None):
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.megabatch = megabatch if megabatch is not None else default_megabatch(len(lengths), batch_size)
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
        rest = [b for b in batches if len(b) < self.batch_size]
        return [b for b in batches if len(b) == self.batch_size], [i for b in rest for i in b]

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
