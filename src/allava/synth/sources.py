"""Where items come from: `--images` SOURCE.

- a folder (recursive; ids are paths relative to it),
- a JSONL / JSON file of records `{id, image?, question?, answer?, caption?, boxes?, ...}`,
- `scenes:N` or `scenes:N@SEED`: the procedural renderer (image rendered when the item is processed),
- `abilities:N`: N text-only items per ability (tasks that make their own images, e.g. stablellava),
- `t2i:FILE`: text-to-image prompts (JSONL `{id, prompt, ...}` or one prompt per line), each rendered
  by the image generator (`--imagegen`) when processed, so any task can run on generated images.

A source enumerates twice-cheap: `ids()` only names items (progress totals, `merge` checks),
`items(keep)` builds the items whose id passes `keep` (the shard), lazily, so memory does not
grow with the source. Per-item work that touches files (reading image headers, rendering) happens
in `prepare`, inside the worker, where a failure rejects that item and nothing else.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import re
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allava.synth.base import Item, SynthError
from allava.synth.config import SynthConfigError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass
class Rejected:
    """A source entry that cannot become an item (invalid JSON line, record without id)."""

    id: str
    reason: str


def shard_of(item_id: str, n: int) -> int:
    """Stable across machines and Python processes (unlike hash()), independent of position."""
    return int.from_bytes(hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest(), "big") % n


def selector(shard: tuple[int, int]) -> Callable[[str], bool]:
    i, n = shard
    return (lambda _id: True) if n == 1 else (lambda _id: shard_of(_id, n) == i)


def check_image(path: Path, min_short_edge: int = 0) -> None:
    """Raise SynthError when the image cannot be opened or is smaller than the short-edge filter."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError:
        raise SynthError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise SynthError(f"unreadable image {path}: {e}") from None
    if min(w, h) < min_short_edge:
        raise SynthError(f"filtered: short edge {min(w, h)}px < --min-short-edge {min_short_edge}")


class Source(ABC):
    spec: str

    @abstractmethod
    def entries(self, keep: Callable[[str], bool]) -> Iterator[Item | Rejected]:
        """Items (or Rejected entries) in a stable order, only those whose id passes `keep`."""

    def ids(self) -> Iterator[str]:
        for e in self.entries(lambda _id: True):
            yield e.id

    async def prepare(self, item: Item) -> None:
        """Per-item file work before the task runs; raise SynthError to reject the item."""


class FolderSource(Source):
    def __init__(self, folder: Path, min_short_edge: int = 0):
        self.folder, self.min_short_edge, self.spec = folder, min_short_edge, str(folder)

    def _paths(self) -> Iterator[str]:
        for root, dirs, files in os.walk(self.folder):
            dirs.sort()
            for f in sorted(files):
                if os.path.splitext(f)[1].lower() in IMAGE_EXTS:
                    yield Path(os.path.relpath(os.path.join(root, f), self.folder)).as_posix()

    def ids(self) -> Iterator[str]:
        return self._paths()

    def entries(self, keep: Callable[[str], bool]) -> Iterator[Item | Rejected]:
        for rel in self._paths():
            if keep(rel):
                yield Item(id=rel, image=rel, image_root=self.folder)

    async def prepare(self, item: Item) -> None:
        await asyncio.to_thread(check_image, item.image_file(), self.min_short_edge)


class RecordsSource(Source):
    """JSONL or JSON array; relative image paths resolve against --image-folder or the file's folder."""

    def __init__(self, path: Path, image_folder: Path | None = None, min_short_edge: int = 0):
        self.path, self.spec = path, str(path)
        self.image_root = image_folder or path.parent
        self.min_short_edge = min_short_edge

    def _raw(self) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
        from allava.data.records import DataError, iter_raw

        try:
            rows = iter_raw(self.path)
        except DataError as e:
            raise SynthConfigError(str(e)) from None
        for pos, rec, problem in rows:
            if problem is not None:
                yield f"{self.path.name}:{problem.record_id}", None, problem.reason
                continue
            rid = rec.get("id")
            if rid is None or isinstance(rid, (dict, list)) or str(rid).strip() == "":
                yield f"{self.path.name}:entry:{pos}", None, "record has no id"
                continue
            yield str(rid), rec, None

    def ids(self) -> Iterator[str]:
        for rid, _, _ in self._raw():
            yield rid

    def entries(self, keep: Callable[[str], bool]) -> Iterator[Item | Rejected]:
        for rid, rec, problem in self._raw():
            if not keep(rid):
                continue
            if rec is None:
                yield Rejected(rid, problem or "unreadable entry")
                continue
            image = rec.get("image")
            fields = {k: v for k, v in rec.items() if k not in ("id", "image")}
            yield Item(id=rid, image=str(image) if image else None, image_root=self.image_root, fields=fields)

    async def prepare(self, item: Item) -> None:
        if item.image is not None:
            await asyncio.to_thread(check_image, item.image_file(), self.min_short_edge)


class SceneSource(Source):
    """Procedural scenes: `scene-{i:06d}` with seed SEED + i; PNGs go to OUT/images/ on demand."""

    def __init__(self, n: int, seed: int, out: Path, spec: str):
        self.n, self.seed, self.out, self.spec = n, seed, out, spec

    def ids(self) -> Iterator[str]:
        return (f"scene-{i:06d}" for i in range(self.n))

    def entries(self, keep: Callable[[str], bool]) -> Iterator[Item | Rejected]:
        from allava.scenes.graph import sample_scene

        for i in range(self.n):
            sid = f"scene-{i:06d}"
            if keep(sid):
                yield Item(id=sid, image=f"images/{sid}.png", image_root=self.out,
                           fields={"scene": sample_scene(self.seed + i).to_dict(), "seed": self.seed + i})

    async def prepare(self, item: Item) -> None:
        path = item.image_file()
        if not path.exists():
            await asyncio.to_thread(_render, item.fields["scene"], path)


def _render(scene: dict[str, Any], path: Path) -> None:
    from allava.scenes.graph import Scene
    from allava.scenes.render import render

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    render(Scene.from_dict(scene)).save(tmp, "PNG")
    os.replace(tmp, path)  # a kill never leaves half a PNG under the final name


class AbilitySource(Source):
    """N items per ability of the scene world, interleaved so --limit gives a mix."""

    def __init__(self, n: int, spec: str):
        from allava.scenes.abilities import ABILITIES

        self.n, self.spec, self.names = n, spec, list(ABILITIES)

    def ids(self) -> Iterator[str]:
        return (f"{a}-{i:05d}" for i in range(self.n) for a in self.names)

    def entries(self, keep: Callable[[str], bool]) -> Iterator[Item | Rejected]:
        for i in range(self.n):
            for a in self.names:
                aid = f"{a}-{i:05d}"
                if keep(aid):
                    yield Item(id=aid, fields={"ability": a, "index": i})


class PromptsSource(Source):
    """StableLLaVA's generated images as a source: a prompt per item, rendered by the image generator
    to OUT/images/ when the item is processed. With the procedural `scenes` generator the parsed scene
    graph goes into `fields["scene"]`, so the offline scene teacher can describe the image too."""

    def __init__(self, path: Path, out: Path, generator_options: dict[str, Any], spec: str):
        from allava.synth.imagegen import build_generator

        self.path, self.out, self.spec = path, out, spec
        opts = dict(generator_options)
        # built up front: a wrong model stops the run with one line before anything is paid for
        self.generator = build_generator(opts.pop("name", None) or "scenes", **opts)

    def _rows(self) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
        if self.path.suffix.lower() == ".txt":
            with open(self.path, encoding="utf-8") as fh:
                for n, line in enumerate(fh):
                    if line.strip():
                        yield f"prompt-{n:06d}", {"prompt": line.strip()}, None
            return
        for rid, rec, problem in RecordsSource(self.path)._raw():
            if rec is not None and not str(rec.get("prompt") or "").strip():
                rec, problem = None, "record has no prompt"
            yield rid, rec, problem

    def ids(self) -> Iterator[str]:
        for rid, _, _ in self._rows():
            yield rid

    def entries(self, keep: Callable[[str], bool]) -> Iterator[Item | Rejected]:
        for rid, rec, problem in self._rows():
            if not keep(rid):
                continue
            if rec is None:
                yield Rejected(rid, problem or "unreadable entry")
                continue
            name = re.sub(r"[^\w.-]", "_", rid)
            fields = {k: v for k, v in rec.items() if k not in ("id", "image")}
            yield Item(id=rid, image=f"images/{name}.png", image_root=self.out, fields=fields)

    async def prepare(self, item: Item) -> None:
        generator = self.generator
        prompt, seed = str(item.fields["prompt"]), zlib.crc32(item.id.encode("utf-8"))
        path = item.image_file()
        if not path.exists():
            await generator.asave(prompt, path, seed)
        if generator.name == "scenes":
            from allava.synth.scene_prompt import prompt_to_scene

            item.fields["scene"] = prompt_to_scene(prompt, generator.image_size, seed).to_dict()


_GEN = re.compile(r"^(scenes|abilities):(\d+)(?:@(\d+))?$")


def open_source(spec: str, out: Path, image_folder: Path | None = None, min_short_edge: int = 0,
                generator_options: dict[str, Any] | None = None) -> Source:
    if spec.startswith("t2i:"):
        path = Path(spec[4:])
        if not path.is_file():
            raise SynthConfigError(f"--images {spec!r}: prompt file {path} not found")
        return PromptsSource(path, Path(out), generator_options or {}, spec)
    m = _GEN.match(spec.strip())
    if m:
        kind, n, seed = m.group(1), int(m.group(2)), int(m.group(3) or 0)
        return SceneSource(n, seed, Path(out), spec) if kind == "scenes" else AbilitySource(n, spec)
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path, min_short_edge)
    if path.is_file():
        return RecordsSource(path, Path(image_folder) if image_folder else None, min_short_edge)
    raise SynthConfigError(f"--images {spec!r}: not a folder, a JSON/JSONL file, scenes:N[@SEED], abilities:N or t2i:FILE")


def selected_ids(source: Source, shard: tuple[int, int], limit: int | None) -> Iterator[str]:
    """The ids one shard works on, in order (duplicates included; callers dedupe)."""
    keep = selector(shard)
    n = 0
    for _id in source.ids():
        if limit is not None and n >= limit:
            return
        if keep(_id):
            n += 1
            yield _id


def selected_entries(source: Source, shard: tuple[int, int], limit: int | None) -> Iterator[Item | Rejected]:
    n = 0
    for e in source.entries(selector(shard)):
        if limit is not None and n >= limit:
            return
        n += 1
        yield e
