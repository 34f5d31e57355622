"""The quickstart's configuration (`configs/quickstart.yaml`) and its hardware preset.

The YAML's `gpu:` section holds the overrides of the larger preset used when a CUDA device is
present: a GPU affords a wider LM and more steps in the same 15 minutes. It is merged before the
user's `key=value` overrides, so an explicit override always wins; `hardware_preset=cpu|gpu`
forces a preset.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from allava.config import SHIPPED_CONFIGS, ConfigError, apply_overrides, from_dict, load_yaml
from allava.model.presets import PRESETS, TinyCLIP, TinyLM
from allava.scenes.world import WorldConfig
from allava.train.clip import CLIPTrainConfig, check_label_weights
from allava.train.pretrain_lm import LMPretrainConfig
from allava.train.stages import StageConfig

DEFAULT_CONFIG = SHIPPED_CONFIGS / "quickstart.yaml"
HARDWARE_PRESETS = ("auto", "cpu", "gpu")


@dataclass
class CurveConfig:
    """The learning curve: held-out accuracy at `points` evenly spaced steps of stage 2 plus its end,
    on a fixed, ability-balanced subset of `questions` benchmark questions (seconds per point)."""

    points: int = 4
    questions: int = 400


@dataclass
class TranscriptConfig:
    """The chat transcript: fresh scenes (seeds no world split uses), one question per ability,
    asked through `allava chat`'s code path; `multi_turn` asks a scene's questions in one
    conversation, as a user would, instead of one conversation per question."""

    scenes: int = 5
    multi_turn: bool = True
    max_new_tokens: int = 32


@dataclass
class Hardware:
    """Which preset was chosen and why (filled in by `load_quickstart_config`)."""

    preset: str = "cpu"
    reason: str = ""


@dataclass
class QuickstartConfig:
    world: WorldConfig = field(default_factory=WorldConfig)
    preset: str = "quickstart"
    lm_arch: dict[str, Any] = field(default_factory=dict)  # TinyLM fields overriding the preset's LM
    clip_arch: dict[str, Any] = field(default_factory=dict)  # TinyCLIP fields overriding the preset's CLIP
    vocab_size: int = 2048
    lm: LMPretrainConfig = field(default_factory=LMPretrainConfig)
    clip: CLIPTrainConfig = field(default_factory=CLIPTrainConfig)
    template: str = "human_assistant"  # ALLaVA trains from a base LM (bare role tags)
    # The tiny CLIP's last layer with its CLS token: the token its contrastive objective shapes
    # (real CLIP-L/14 recipes use the penultimate layer without CLS: see configs/allava-phi2.yaml).
    vision_feature_layer: int = -1
    vision_feature_select_strategy: str = "full"
    stages: dict[str, StageConfig] = field(default_factory=dict)  # data paths relative to the world folder
    eval_batch_size: int = 64
    threads: int | None = None
    curve: CurveConfig = field(default_factory=CurveConfig)
    transcript: TranscriptConfig = field(default_factory=TranscriptConfig)
    hardware_preset: str = "auto"  # auto: the `gpu:` section when torch.cuda.is_available()
    hardware: Hardware = field(default_factory=Hardware)

    def architectures(self) -> tuple[TinyLM, TinyCLIP]:
        """The preset's LM and CLIP with `lm_arch` / `clip_arch` applied."""
        if self.preset not in PRESETS:
            raise ConfigError(f"preset {self.preset!r} unknown; known: {sorted(PRESETS)}")
        lm, clip = PRESETS[self.preset]
        try:
            return replace(lm, **self.lm_arch), replace(clip, **self.clip_arch)
        except TypeError as e:
            raise ConfigError(f"lm_arch / clip_arch: {e}") from None


def _merge(base: dict, extra: dict) -> dict:
    """`extra` over `base`, mappings merged key by key (lists and scalars replaced)."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def choose_hardware(choice: str) -> Hardware:
    """`auto` takes the GPU preset exactly when torch sees a CUDA device."""
    import torch

    if choice not in HARDWARE_PRESETS:
        raise ConfigError(f"hardware_preset must be one of {list(HARDWARE_PRESETS)}, got {choice!r}")
    if choice != "auto":
        return Hardware(choice, f"hardware_preset={choice} was set explicitly")
    if torch.cuda.is_available():
        return Hardware("gpu", f"a CUDA device is present ({torch.cuda.get_device_name(0)})")
    return Hardware("cpu", "there is no CUDA device (torch.cuda.is_available() is false)")


def load_quickstart_config(path: str | Path | None = None, overrides: list[str] = ()) -> QuickstartConfig:
    """YAML, then its `gpu:` section when the GPU preset applies, then the user's overrides."""
    raw = load_yaml(path or DEFAULT_CONFIG)
    gpu = raw.pop("gpu", None) or {}
    if not isinstance(gpu, dict):
        raise ConfigError(f"{path or DEFAULT_CONFIG}: `gpu:` must be a mapping of overrides")
    user = apply_overrides({}, list(overrides))
    hardware = choose_hardware(str(user.get("hardware_preset", raw.get("hardware_preset", "auto"))))
    if hardware.preset == "gpu":
        raw = _merge(raw, gpu)
    raw = apply_overrides(raw, list(overrides))
    raw.pop("hardware", None)
    cfg = from_dict(QuickstartConfig, raw)
    cfg.hardware = hardware
    cfg.architectures()  # a bad preset or arch key fails now, not after the world is built
    _check_stage0(cfg)
    return cfg


def _check_stage0(cfg: QuickstartConfig) -> None:
    """Stage-0 settings that need something of the world fail before the world is built."""
    from allava.scenes.graph import sample_scene
    from allava.scenes.teacher import clip_patch_labels

    if cfg.lm.document_share and not cfg.world.n_lm_scenes:
        raise ConfigError(f"lm.document_share={cfg.lm.document_share} needs documents to train on: "
                          "world.n_lm_scenes is 0")
    labels = set(clip_patch_labels(sample_scene(0))) | ({"cell"} if cfg.clip.dense_position else set())
    try:
        check_label_weights(cfg.clip.dense_label_weights, labels)
    except ValueError as e:
        raise ConfigError(str(e)) from None
