"""The operator contract and registry.

Two kinds, because some principles are properties of one record (is the image sharp?) and some
only exist across records (is this image a near-copy of another one?):

* `Op.compute(batch)` returns one stats dict per record; cached per (record hash, op key).
* `DatasetOp` splits the work in two: `features(batch)` per record (the expensive part: decoding,
  hashing, embedding; cached per record like an `Op`) and `finalize(features)` over the whole
  dataset (cheap; cached per (dataset hash, op key)). Both may also return dataset `indicators`.

An op's *key* is its name plus the settings that change its numbers; thresholds and batch size are
not part of it, which is what makes a thresholds-only rerun free.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

Stats = dict[str, Any]


@dataclass
class QCRecord:
    """One LLaVA record as the operators see it. `raw` is what kept.jsonl / removed.jsonl write."""

    id: str
    conversations: list[dict[str, Any]]
    image: str | None = None
    image_file: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    hash: str = ""

    def turns(self, role: str) -> list[str]:
        """Values of one side of the conversation ("human" or "gpt"), `<image>` markers removed."""
        return [str(t.get("value", "")).replace("<image>", "").strip()
                for t in self.conversations if t.get("from") == role]

    @property
    def instructions(self) -> list[str]:
        return self.turns("human")

    @property
    def responses(self) -> list[str]:
        return self.turns("gpt")

    def text(self) -> str:
        return "\n".join(str(t.get("value", "")).replace("<image>", "").strip() for t in self.conversations)


class ImageMemo:
    """Results that depend on the image file alone, kept per op for the run and keyed by the file's
    identity (path, size, mtime): LLaVA data asks many questions about one image (the quickstart:
    ~9), and the stats cache is per record, so without this each image was decoded once per question.

    `size` (distinct files) is far above a dataset's image count: shuffled records revisit an image
    anywhere in the run, and at the old 8,192 a 100K-record run over 13K images recomputed a third of
    its image features (image_dedup's features 2.0 s at 10K, 43 s at 100K). With `copy=False` every
    record gets the same object (a dataset op's features, never changed afterwards), so the features
    of N records cost the memory of their distinct images, not N copies."""

    def __init__(self, size: int = 1 << 17, copy: bool = True):
        from collections import OrderedDict

        self.size, self.copy, self._d = size, copy, OrderedDict()

    def get(self, path: Path, fn: Callable[[], Any]) -> Any:
        import copy
        import os

        try:
            st = os.stat(path)
            key = (str(path), st.st_size, st.st_mtime_ns)
        except OSError:
            return fn()
        if key in self._d:
            self._d.move_to_end(key)
            return copy.deepcopy(self._d[key]) if self.copy else self._d[key]  # callers may add to what they get
        value = fn()
        self._d[key] = copy.deepcopy(value) if self.copy else value
        if len(self._d) > self.size:
            self._d.popitem(last=False)
        return value


def per_image(batch: list[QCRecord], fn: Callable[[QCRecord], Any], memo: ImageMemo | None = None) -> list[Any]:
    """`fn(record)` per record, None where it has no image or `fn` fails on it: unreadable images
    are image_readability's business, a dataset op just leaves them out. With `memo`, `fn` runs
    once per image file (it must depend on the image only)."""
    out: list[Any] = []
    for r in batch:
        if r.image_file is None:
            out.append(None)
            continue
        try:
            out.append(fn(r) if memo is None else memo.get(r.image_file, lambda r=r: fn(r)))
        except Exception:  # noqa: BLE001 - see above
            out.append(None)
    return out


def by_image_file(features: list[Any], key: str) -> tuple[dict[str, int], list[Any]]:
    """({file: index}, [feature[key] per distinct file]) over `{"file": ..., key: ...}` features,
    first one per file: records that share an image count it once."""
    files: dict[str, int] = {}
    values: list[Any] = []
    for f in features:
        if f is not None and f["file"] not in files:
            files[f["file"]] = len(values)
            values.append(f[key])
    return files, values


def no_cache(default: Any = None, **kw: Any) -> Any:
    """A settings field that does not change the numbers (batch size, device): left out of the cache key."""
    return field(default=default, metadata={"cache": False}, **kw)


@dataclass
class OpSettings:
    """Base of every op's settings dataclass."""

    batch_size: int = no_cache(64)


class Op:
    """A per-record operator: `compute` returns one stats dict per record of the batch."""

    name: ClassVar[str]
    Settings: ClassVar[type[OpSettings]] = OpSettings
    primary: ClassVar[str] = ""  # the stat that plain `min` / `max` in the YAML refer to
    needs_image: ClassVar[bool] = False
    # stats an op gives only to some records (e.g. none on flat images): a threshold on one is valid
    # even when no record of this input has it
    optional_stats: ClassVar[tuple[str, ...]] = ()
    # settings that have no default and must be given (e.g. {"model": "a causal LM by hub id or path"}):
    # a config that leaves one unset fails when it is parsed, naming the op and the `--set` that fixes it
    required: ClassVar[dict[str, str]] = {}

    def __init__(self, settings: OpSettings | None = None):
        self.settings = settings or self.Settings()

    @classmethod
    def version(cls) -> str:
        """Bump (class attribute `VERSION`) when the computation changes, to invalidate old caches."""
        return str(getattr(cls, "VERSION", "1"))

    def key(self) -> str:
        """Name + version + the settings that change the numbers."""
        cached = {f.name: getattr(self.settings, f.name) for f in dataclasses.fields(self.settings)
                  if f.metadata.get("cache", True)}
        blob = json.dumps({"op": self.name, "v": self.version(), "settings": cached}, sort_keys=True, default=str)
        return f"{self.name}:{hashlib.sha256(blob.encode()).hexdigest()[:16]}"

    def compute(self, batch: list[QCRecord]) -> list[Stats]:
        raise NotImplementedError

    def indicators(self, stats: list[Stats]) -> dict[str, Any]:
        """Dataset-level numbers from the per-record stats (e.g. mean readability). Cheap, never cached."""
        return {}

    def select(self, stats: list[Stats], alive: list[bool]) -> list[bool] | None:
        """Optional decision beyond thresholds (balance resampling): which survivors to keep; None = all."""
        return None

    def close(self) -> None:
        """Release models."""


class DatasetOp(Op):
    """An operator whose stats depend on the whole dataset (dedup, diversity, clusters)."""

    def features(self, batch: list[QCRecord]) -> list[Any]:
        """Per-record JSON-serialisable features (cached per record)."""
        raise NotImplementedError

    def finalize(self, features: list[Any]) -> list[Stats]:
        """Per-record stats, in input order, from all the records' features (indicators come from
        `indicators`, as for every op)."""
        raise NotImplementedError


OPS: dict[str, type[Op]] = {}


def register_op(name: str):
    """Class decorator: make an operator available by `name` in QC YAML files."""
    def wrap(cls: type[Op]) -> type[Op]:
        cls.name = name
        OPS[name] = cls
        return cls
    return wrap


def load_builtin_ops() -> None:
    """Import every module under `allava.quality.ops` so their `@register_op` run."""
    import importlib
    import pkgutil

    import allava.quality.ops as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{mod.name}")
