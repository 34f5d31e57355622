"""Model references in QC configs: a hub id (`org/name`) or a local path."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from allava.config import ConfigError
from allava.model.refs import local_model_path


def check_model(ref: str | None, op: str) -> str:
    """Fail with a readable message when `ref` is unset or names a local folder that is not there."""
    if not ref:
        raise ConfigError(f"{op}: no `model` set (a hub id or local path)")
    path = local_model_path(ref)
    if path is None:
        return ref
    if not path.exists():
        raise OSError(f"{op}: model folder {ref} not found (`allava quickstart --out DIR` makes the offline "
                      f"DIR/lm and DIR/clip; or set `model:` to a hub id or local path)")
    return str(path)


# A model smaller than this runs its forward passes on one thread (`threads: 0`, auto): its matrices
# are too small to split, and on 2 cores shared with other work two threads made the quickstart's
# 0.8M-parameter LM 8x slower than one (text_readability on 1,100 records: 3.3 vs 0.4 s).
SMALL_MODEL_PARAMS = 20_000_000


def thread_count(model: Any, threads: int) -> int | None:
    """Intra-op threads for `model`: `threads` when > 0; 0 = auto (1 for a small model, else None,
    torch's own default)."""
    if threads > 0:
        return threads
    n = sum(p.numel() for p in model.parameters())
    return 1 if n < SMALL_MODEL_PARAMS else None


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` torch intra-op threads (None: unchanged), restoring them after."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
