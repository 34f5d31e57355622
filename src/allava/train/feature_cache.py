"""A store of frozen vision-tower features, so training never runs the tower (DESIGN decision 10).

Every recipe freezes the vision tower and CLIP / SigLIP preprocessing is deterministic, so an
image's *selected* features (the tensor ``LlavaModel.get_image_features`` hands to the projector:
``vision_feature_layer`` picked, int or list, CLS dropped under the "default" strategy) are the
same at every step, epoch, stage and rerun. They are computed once per distinct image content.

Layout (one folder per fingerprint, under the store root, so runs and studies can share a root and
a changed tower, layer, strategy, processor setting or dtype simply misses)::

    <root>/<fingerprint>/index.json            settings, per-image shape, shards (keys, size, sha256)
    <root>/<fingerprint>/<id>.safetensors      one tensor "features" [n, tokens, dim]

Keys are the sha256 of the image file's bytes: two paths with the same bytes share an entry.
Shards are checked (size and sha256) when a store opens; a missing or corrupt one is dropped and
its images are recomputed, never trusted. Shards and the index are written to a temporary file
and renamed, under a file lock, so a kill leaves the store consistent and concurrent runs do not
clobber each other.

Storage dtype: the tower's dtype, or bfloat16 when the stage trains in bf16 (the features are then
computed under the same autocast as training, and the projector's first linear layer casts its
input to bf16 under autocast anyway, so nothing is lost against the uncached path).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from allava.config import ConfigError
from allava.data.dataset import read_image
from allava.data.tokenize import EncodeError

log = logging.getLogger(__name__)

VERSION = 1
SETTINGS = ("auto", "on", "off")
# Resize + centre crop + rescale + normalise, no random augmentation: the same pixels every time.
DETERMINISTIC_PROCESSORS = {f"{m}ImageProcessor{b}" for m in ("CLIP", "Siglip") for b in ("", "Fast", "Pil")}
SHARD_BYTES = 256 * 2**20
_CONFIG_NOISE = {"_name_or_path", "transformers_version", "architectures", "_commit_hash", "name_or_path"}


class FeatureCacheError(ConfigError):
    """A cache the user has to act on (over budget, out of disk): printed as one line by the CLI."""


@dataclass
class CacheStats:
    """What the summary records about the cache for one stage."""

    used: bool = False
    reason: str = ""
    dir: str | None = None
    images: int = 0  # distinct image files in the stage's data
    hits: int = 0  # distinct image contents already in the store
    computed: int = 0  # distinct image contents computed by this stage
    failed: int = 0  # unreadable images (reported as skipped records when they are drawn)
    recovered_shards: int = 0  # missing or corrupt shards dropped (their images recomputed)
    bytes_on_disk: int = 0
    compute_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def decide(setting: str | bool, train: list[str], image_processor, tower: torch.nn.Module,
           deepspeed: str | None = None) -> tuple[bool, str]:
    """Whether a stage reads cached features, and why (said in the summary)."""
    if isinstance(setting, bool):  # YAML reads a bare on / off as a boolean
        setting = "on" if setting else "off"
    if setting not in SETTINGS:
        raise ConfigError(f"feature_cache must be one of {', '.join(SETTINGS)}, not {setting!r}")
    if setting == "off":
        return False, "feature_cache=off"
    if "vision_tower" in train:
        if setting == "on":
            raise ConfigError("feature_cache=on but this stage trains the vision tower; its features change every step")
        return False, "the vision tower is trained"
    if deepspeed and _zero3(deepspeed):  # the tower's weights are partitioned before the Trainer gathers them
        if setting == "on":
            raise ConfigError("feature_cache=on is not supported with DeepSpeed ZeRO-3; set feature_cache=off")
        return False, "DeepSpeed ZeRO-3"
    if setting == "on":
        return True, "feature_cache=on"
    kind = type(image_processor).__name__
    if kind not in DETERMINISTIC_PROCESSORS:
        return False, f"{kind} is not known to be deterministic (set feature_cache=on to cache anyway)"
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in tower.modules()):
        return False, "the vision tower has dropout (its training-mode features are random)"
    return True, "frozen tower, deterministic preprocessing"


def _zero3(deepspeed: str) -> bool:
    try:
        return json.loads(Path(deepspeed).read_text()).get("zero_optimization", {}).get("stage") == 3
    except (OSError, ValueError):
        return False


def _layers(layer: int | list[int]) -> list[int]:
    return [layer] if isinstance(layer, int) else list(layer)


def settings(model, image_processor, dtype: torch.dtype) -> dict:
    """Everything the stored features depend on, except the tower's weights (hashed separately)."""
    vision = model.config.vision_config.to_dict()
    proc = image_processor.to_dict()
    return {
        "version": VERSION,
        "tower_config": {k: v for k, v in sorted(vision.items()) if k not in _CONFIG_NOISE},
        "vision_feature_layer": model.config.vision_feature_layer,
        "vision_feature_select_strategy": model.config.vision_feature_select_strategy,
        "processor": {k: v for k, v in sorted(proc.items()) if k not in _CONFIG_NOISE | {"_processor_class"}},
        "processor_class": type(image_processor).__name__,
        "dtype": str(dtype).removeprefix("torch."),
    }


def tower_hash(tower: torch.nn.Module) -> str:
    """sha256 over the tower's parameters and buffers (names, shapes, dtypes, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(list(tower.named_parameters()) + list(tower.named_buffers()), key=lambda x: x[0]):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def fingerprint(model, image_processor, dtype: torch.dtype) -> tuple[str, dict]:
    meta = {**settings(model, image_processor, dtype), "tower_sha256": tower_hash(model.model.vision_tower)}
    return hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:20], meta


def feature_shape(model) -> tuple[int, int]:
    """(tokens, dim) per image as the projector sees them: one image's size estimate without running anything."""
    dim = model.config.vision_config.hidden_size * len(_layers(model.config.vision_feature_layer))
    return int(model.config.image_seq_length), int(dim)


def file_hash(path: str | Path, chunk: int = 2**20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(folder: Path):
    """An exclusive lock on the store folder (other processes computing the same store wait)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as f:
        try:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
        except ImportError:  # no flock (Windows): one run per store at a time is then the user's job
            pass
        yield


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    write(tmp)
    os.replace(tmp, path)


class FeatureStore:
    """One fingerprint's features: a JSON index of safetensors shards, checked when opened."""

    def __init__(self, folder: str | Path, meta: dict, shape: tuple[int, int], dtype: torch.dtype):
        self.folder = Path(folder)
        self.meta, self.shape, self.dtype = meta, tuple(shape), dtype
        self.shards: dict[str, dict] = {}  # file name -> {"keys", "bytes", "sha256"}
        self.where: dict[str, tuple[str, int]] = {}  # key -> (shard, row)
        self.recovered = 0
        self._handles: dict[str, object] = {}
        self._pid = os.getpid()
        self._load()
        self._sweep()  # the store is opened under the folder's lock

    # -- index ---------------------------------------------------------------------------------
    def _load(self) -> None:
        index = self.folder / "index.json"
        if not index.exists():
            return
        try:
            raw = json.loads(index.read_text())
            ok = raw.get("meta") == json.loads(json.dumps(self.meta, default=str)) and tuple(raw["shape"]) == self.shape
        except (ValueError, KeyError, TypeError):
            raw, ok = {}, False
        if not ok:  # an index we cannot read or that describes other features: start over
            log.warning("feature cache %s: unreadable or foreign index, rebuilding", self.folder)
            self.recovered += len(raw.get("shards", {})) if isinstance(raw, dict) else 0
            return
        for name, info in raw["shards"].items():
            if self._valid(name, info):
                self.shards[name] = info
            else:
                log.warning("feature cache: shard %s is missing or corrupt; its %d images will be recomputed",
                            name, len(info.get("keys", [])))
                self.recovered += 1
                (self.folder / name).unlink(missing_ok=True)
        for name, info in self.shards.items():
            for row, key in enumerate(info["keys"]):
                self.where[key] = (name, row)

    def _sweep(self) -> None:
        """Delete shards the index does not list and temporary files (a kill between writing a shard
        and the index, or a dropped index): they would fill the disk unseen."""
        for path in self.folder.glob("*.safetensors"):
            if path.name not in self.shards:
                path.unlink(missing_ok=True)
        for path in self.folder.glob(".*.tmp"):
            path.unlink(missing_ok=True)

    def _valid(self, name: str, info: dict) -> bool:
        path = self.folder / name
        try:
            if path.stat().st_size != info["bytes"] or file_hash(path) != info["sha256"]:
                return False
            with safe_open(str(path), framework="pt") as f:
                sl = f.get_slice("features")
                return tuple(sl.get_shape()) == (len(info["keys"]), *self.shape)
        except Exception:  # missing, truncated, not safetensors
            return False

    def _save_index(self) -> None:
        body = {"version": VERSION, "meta": self.meta, "shape": list(self.shape),
                "dtype": str(self.dtype).removeprefix("torch."), "shards": self.shards}
        _write_atomic(self.folder / "index.json",
                      lambda p: p.write_text(json.dumps(body, indent=1, default=str)))

    def add(self, keys: list[str], features: torch.Tensor) -> None:
        """Write one shard (features [len(keys), tokens, dim]) and record it in the index."""
        name = f"{uuid.uuid4().hex[:16]}.safetensors"
        path = self.folder / name
        _write_atomic(path, lambda p: save_file({"features": features.to(self.dtype).contiguous().cpu()}, str(p)))
        self.shards[name] = {"keys": list(keys), "bytes": path.stat().st_size, "sha256": file_hash(path)}
        for row, key in enumerate(keys):
            self.where[key] = (name, row)
        self._save_index()

    @property
    def bytes_on_disk(self) -> int:
        return sum(info["bytes"] for info in self.shards.values())

    def __contains__(self, key: str) -> bool:
        return key in self.where

    # -- reads ---------------------------------------------------------------------------------
    def get(self, key: str) -> torch.Tensor:
        name, row = self.where[key]
        if self._pid != os.getpid():  # a forked data-loader worker opens its own handles
            self._handles, self._pid = {}, os.getpid()
        f = self._handles.get(name)
        if f is None:
            f = self._handles[name] = safe_open(str(self.folder / name), framework="pt")
        return f.get_slice("features")[row:row + 1][0]

    def __getstate__(self) -> dict:  # safetensors handles do not pickle (spawned workers reopen them)
        return {**self.__dict__, "_handles": {}}


class FeatureLookup:
    """What the dataset calls: image path -> cached features, or the EncodeError it reports as a skip."""

    def __init__(self, store: FeatureStore, keys: dict[str, str], failed: dict[str, str]):
        self.store, self.keys, self.failed = store, keys, failed

    def __call__(self, path: str | Path) -> torch.Tensor:
        path = str(path)
        if path in self.failed:
            raise EncodeError(self.failed[path])
        key = self.keys.get(path)
        if key is None or key not in self.store:
            raise EncodeError(f"image not in the feature cache: {path}")
        return self.store.get(key)


class _Captured(Exception):
    """Raised by the projector pre-hook: the features are in hand, the projector need not run."""

    def __init__(self, features: torch.Tensor):
        self.features = features


@torch.inference_mode()
def compute_selected(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The projector's input for these pixels, captured from ``LlavaModel.get_image_features`` itself
    (a forward pre-hook on the projector that stops the call there), so the layer / strategy handling
    is transformers' own and the projector (trained, so not cacheable) never runs."""

    def grab(_module, args):
        raise _Captured(args[0])

    handle = model.model.multi_modal_projector.register_forward_pre_hook(grab)
    try:
        model.model.get_image_features(pixel_values=pixel_values,
                                       vision_feature_layer=model.config.vision_feature_layer,
                                       vision_feature_select_strategy=model.config.vision_feature_select_strategy)
    except _Captured as got:
        return got.features
    finally:
        handle.remove()
    raise RuntimeError("get_image_features did not call the projector")


class _Pixels(torch.utils.data.Dataset):
    """Images to compute, decoded in data-loader workers when there are any."""

    def __init__(self, paths: list[str], image_processor):
        self.paths, self.image_processor = paths, image_processor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            image = read_image(self.paths[i])
        except EncodeError as e:
            return i, None, str(e)
        return i, self.image_processor(image, return_tensors="pt")["pixel_values"][0], None


def _collate(batch):
    return batch


@dataclass
class CacheRequest:
    """How one stage wants its features (built by ``run_stage`` from the recipe)."""

    root: str | Path
    max_gb: float = 100.0
    bf16: bool = False
    batch_size: int = 32
    workers: int = 0
    progress: bool = True
    shard_bytes: int = SHARD_BYTES
    device: str | None = None  # None: cuda when available


def prepare(model, image_processor, paths: list[str], req: CacheRequest) -> tuple[FeatureLookup, CacheStats]:
    """Hash the images, compute the ones the store lacks (after the size estimate and budget check),
    and return the dataset's lookup with the counts for the summary."""
    t0 = time.perf_counter()
    tower = model.model.vision_tower
    tower_dtype = next(tower.parameters()).dtype
    dtype = torch.bfloat16 if req.bf16 else tower_dtype
    fp, meta = fingerprint(model, image_processor, dtype)
    folder = Path(req.root) / fp
    shape = feature_shape(model)
    stats = CacheStats(used=True, dir=str(folder), images=len(paths))

    keys: dict[str, str] = {}
    failed: dict[str, str] = {}
    for p in dict.fromkeys(map(str, paths)):
        try:
            keys[p] = file_hash(p)
        except OSError as e:
            failed[p] = f"corrupt image: {p} ({type(e).__name__})"

    with _locked(folder):
        store = FeatureStore(folder, meta, shape, dtype)
        stats.recovered_shards = store.recovered
        todo = list(dict.fromkeys(k for k in keys.values() if k not in store))  # distinct contents
        first_path = {}
        for p, k in keys.items():
            first_path.setdefault(k, p)
        stats.hits = sum(1 for k in set(keys.values()) if k in store)
        per_image = shape[0] * shape[1] * torch.finfo(dtype).bits // 8
        estimate = store.bytes_on_disk + len(todo) * per_image
        gb = estimate / 1e9
        print(f"vision features: {len(todo):,} to compute, {stats.hits:,} cached; store ~{gb:.3g} GB "
              f"({per_image / 1e6:.3g} MB per image, {shape[0]}x{shape[1]} {str(dtype).removeprefix('torch.')}) "
              f"in {folder}", flush=True)
        if todo and gb > req.max_gb:
            raise FeatureCacheError(
                f"feature cache of ~{gb:.3g} GB for {len(todo) + stats.hits:,} images exceeds the budget "
                f"feature_cache_max_gb={req.max_gb:g}; raise it (e.g. feature_cache_max_gb={max(1, int(gb * 1.2) + 1)}) "
                f"or set stages.<stage>.feature_cache=off")
        free = shutil.disk_usage(folder).free
        if todo and len(todo) * per_image > free:
            raise FeatureCacheError(f"feature cache needs ~{len(todo) * per_image / 1e9:.3g} GB more but {folder} "
                                    f"has {free / 1e9:.3g} GB free; free space, move feature_cache_dir or set "
                                    f"stages.<stage>.feature_cache=off")
        if todo:
            bad: dict[str, str] = {}  # key -> reason (every path with these bytes is the same bad image)
            _compute(model, image_processor, [first_path[k] for k in todo], todo, store, bad, req, dtype, per_image)
            failed.update({p: bad[k] for p, k in keys.items() if k in bad})
        stats.computed = sum(1 for k in todo if k in store)
    stats.failed = len(failed)
    stats.bytes_on_disk = store.bytes_on_disk
    stats.compute_s = time.perf_counter() - t0
    return FeatureLookup(store, keys, failed), stats


def _compute(model, image_processor, paths: list[str], keys: list[str], store: FeatureStore,
             bad: dict[str, str], req: CacheRequest, dtype: torch.dtype, per_image: int) -> None:
    from tqdm.auto import tqdm

    device = torch.device(req.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tower = model.model.vision_tower
    home = next(tower.parameters()).device
    tower_dtype = next(tower.parameters()).dtype
    was_training = tower.training
    tower.to(device).eval()
    rows = max(1, req.shard_bytes // per_image)
    loader = torch.utils.data.DataLoader(_Pixels(paths, image_processor), batch_size=req.batch_size,
                                         num_workers=req.workers, collate_fn=_collate)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if req.bf16 else contextlib.nullcontext()
    pending_keys: list[str] = []
    pending: list[torch.Tensor] = []
    try:
        with tqdm(total=len(paths), desc="vision features", unit="img", disable=not req.progress) as bar:
            for batch in loader:
                ok = [(i, px) for i, px, err in batch if err is None]
                for i, _, err in batch:
                    if err is not None:
                        bad[keys[i]] = err
                if ok:
                    with autocast:
                        feats = compute_selected(model, torch.stack([px for _, px in ok]).to(device, tower_dtype))
                    pending += list(feats.to(dtype).cpu())
                    pending_keys += [keys[i] for i, _ in ok]
                while len(pending) >= rows:
                    store.add(pending_keys[:rows], torch.stack(pending[:rows]))
                    pending, pending_keys = pending[rows:], pending_keys[rows:]
                bar.update(len(batch))
        if pending:
            store.add(pending_keys, torch.stack(pending))
    finally:
        tower.to(home).train(was_training)
