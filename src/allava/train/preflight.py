"""Checks of a training recipe that need no model: run before anything is loaded or written.

A stage's values (`check_stage`, called when the recipe is read) and its data files, image folders
and output folder (`check_recipe`, called by `allava train` before the first model is built), so a
typo, a missing file or a changed recipe on a finished run costs a second, not a model load, and
never trains on less data than the user thinks.
"""
from __future__ import annotations

import importlib.util
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from allava.config import ConfigError

# A source losing more than this share of its records to invalid entries stops the run.
MAX_SKIPPED_SHARE = 0.5
BOOL_OR_AUTO = ("auto", True, False)
CACHE_CHOICES = ("auto", "on", "off", True, False)


REPORT_TO = {"none": None, "tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def _devices() -> int:
    """Processes (set by torchrun / accelerate launch), or the GPUs one process drives (DataParallel)."""
    import os

    import torch

    if "WORLD_SIZE" in os.environ:
        return max(1, int(os.environ["WORLD_SIZE"]))
    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def check_stage(cfg: Any) -> None:
    """Value rules of a `StageConfig`; ValueError messages start with the key (the loader adds the stage)."""
    from allava.train.trainer import MODULES

    if not cfg.train:
        raise ValueError(f"train: lists nothing to train; choose from {sorted(MODULES)}")
    unknown = [m for m in cfg.train if m not in MODULES]
    if unknown:
        raise ValueError(f"train: unknown modules to train {unknown}; choose from {sorted(MODULES)}")
    for key in ("per_device_batch_size", "global_batch_size", "model_max_length", "save_steps", "logging_steps",
                "pad_to_multiple_of", "save_total_limit"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key}: must be at least 1, got {getattr(cfg, key)}")
    for key in ("lr", "min_lr", "weight_decay", "dataloader_workers"):
        if getattr(cfg, key) < 0:
            raise ValueError(f"{key}: must not be negative, got {getattr(cfg, key)}")
    if cfg.projector_lr is not None and cfg.projector_lr < 0:
        raise ValueError(f"projector_lr: must not be negative, got {cfg.projector_lr}")
    if not 0 <= cfg.warmup_ratio < 1:
        raise ValueError(f"warmup_ratio: a share of the steps in [0, 1), got {cfg.warmup_ratio}")
    if cfg.max_steps <= 0 and cfg.epochs <= 0:
        raise ValueError(f"epochs: must be positive when max_steps is not set, got {cfg.epochs}")
    if cfg.bf16 not in BOOL_OR_AUTO:
        raise ValueError(f"bf16: choose auto, true or false, got {cfg.bf16!r}")
    if cfg.feature_cache not in CACHE_CHOICES:
        raise ValueError(f"feature_cache: choose auto, on or off, got {cfg.feature_cache!r}")
    if cfg.report_to not in REPORT_TO:
        raise ValueError(f"report_to: choose {', '.join(REPORT_TO)}, got {cfg.report_to!r}")
    needs = REPORT_TO[cfg.report_to]
    if needs and not any(importlib.util.find_spec(m) for m in needs):
        raise ValueError(f"report_to: {cfg.report_to} needs the {needs[0]} package (pip install {needs[0]}), "
                         "or set report_to: none")
    step = cfg.per_device_batch_size * _devices()
    if cfg.global_batch_size % step:
        lower, upper = max(step, cfg.global_batch_size // step * step), (cfg.global_batch_size // step + 1) * step
        raise ValueError(f"global_batch_size: {cfg.global_batch_size} is not a multiple of per_device_batch_size "
                         f"{cfg.per_device_batch_size} x {_devices()} device(s) (it would train at "
                         f"{max(1, cfg.global_batch_size // step) * step}); set {lower} or {upper}")
    if cfg.deepspeed:
        if importlib.util.find_spec("deepspeed") is None:
            raise ValueError(f"deepspeed: set to {cfg.deepspeed} but DeepSpeed is not installed "
                             "(pip install deepspeed), or remove the key")
        if not Path(cfg.deepspeed).is_file():
            raise ValueError(f"deepspeed: file {cfg.deepspeed} does not exist")


def _check_source(where: str, src: Any) -> None:
    from allava.data.validate import scan_file

    path = Path(src.path)
    if not path.exists():
        raise ConfigError(f"{where}.path: file {src.path} does not exist")
    if path.is_dir():
        raise ConfigError(f"{where}.path: {src.path} is a folder, not a data file")
    if src.image_folder is not None and not Path(src.image_folder).is_dir():
        raise ConfigError(f"{where}.image_folder: folder {src.image_folder} does not exist")
    total, invalid, kinds, images, missing, example = 0, 0, Counter(), 0, 0, ""
    for rec, problem in scan_file(path, src.image_folder, "exists"):
        total += 1
        if problem is not None:
            invalid += 1
            kinds.update(problem.kinds)
            if "not_array" in problem.kinds or "invalid_json" in problem.kinds and problem.record_id == "file":
                raise ConfigError(f"{where}.path: {src.path}: {problem.reason}")
            if "image_not_found" in problem.kinds:
                images += 1
                missing += 1
                example = example or problem.reason
        elif rec.get("image"):
            images += 1
    folder = src.image_folder or str(path.parent)
    if images and missing == images:
        raise ConfigError(f"{where}: none of its {images} images found under {folder} ({example}); "
                          "set image_folder to the folder the image paths are relative to")
    skipped = invalid
    if total and skipped / total > MAX_SKIPPED_SHARE:
        top = ", ".join(f"{k} {n}" for k, n in kinds.most_common(3))
        raise ConfigError(f"{where}: {src.path}: {skipped} of {total} records are invalid ({top}), more than "
                          f"{MAX_SKIPPED_SHARE:.0%}; allava data validate {src.path} lists them")


def _finished_differs(name: str, cfg: Any, out: Path, spec: Any) -> list[str]:
    """Keys whose saved value in the finished stage differs from the recipe now."""
    saved_path = out / name / "final" / "allava_recipe.json"
    if not (out / name / "summary.json").exists() or not saved_path.exists():
        return []
    try:
        saved = json.loads(saved_path.read_text())
    except ValueError:
        return []
    entry = next((h for h in reversed(saved.get("history", [])) if h.get("stage") == name), None)
    if entry is None:
        return []
    now = json.loads(json.dumps(asdict(cfg)))
    diffs = [f"{k}: {entry['config'].get(k)!r} -> {v!r}" for k, v in now.items() if entry["config"].get(k) != v]
    if name == next(iter(saved.get("history", [{}])), {}).get("stage"):
        base = json.loads(json.dumps(asdict(spec)))
        diffs += [f"model.{k}: {saved['spec'].get(k)!r} -> {v!r}" for k, v in base.items()
                  if saved.get("spec", {}).get(k) != v]
    return diffs


def check_recipe(recipe: Any) -> None:
    """Data files, image folders and the output folder of every enabled stage, before any model."""
    out = Path(recipe.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir: {out} is a file")
    enabled = [(n, c) for n, c in recipe.stages.items() if c.enabled]
    if not enabled:
        raise ConfigError("stages: no enabled stage (every stage has enabled: false)")
    for name, cfg in enabled:
        if not cfg.data:
            raise ConfigError(f"stages.{name}.data: no data sources")
        for i, src in enumerate(cfg.data):
            _check_source(f"stages.{name}.data.{i}", src)
        diffs = _finished_differs(name, cfg, out, recipe.model)
        if diffs:
            shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
            raise ConfigError(f"{out / name} is finished with a different recipe ({shown}); use a new "
                              f"output_dir, or delete {out / name} to retrain it")
