"""The offline quickstart: the whole ALLaVA recipe at laptop scale, on the real training code.

Phases: build a procedural world (images + scene-graph teacher data + held-out benchmark) →
stage 0 (tokenizer, tiny LM pretrained on the synthetic text, tiny CLIP trained contrastively)
→ stage 1 (alignment: captions + 2x text) → stage 2 (instructions: VQA + 1x text) → evaluation
after each stage, plus the Table-6 style ablation (stage 2 alone). Every phase is resumable:
rerunning the same command skips what is done.
"""
from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from allava.config import ConfigError, from_dict, load_yaml
from allava.data.dataset import DataSource
from allava.model.build import ModelSpec
from allava.model.presets import PRESETS
from allava.noise_study import is_noise_phase, run_noise_study
from allava.scenes.world import WorldConfig, build_world, read_jsonl
from allava.train.clip import CLIPTrainConfig, train_clip
from allava.train.pretrain_lm import LMPretrainConfig, pretrain_lm
from allava.train.stages import StageConfig, StageResult, TrainRecipe, run_recipe
from allava.train.tokenizer import train_tokenizer

TEXT_BOUND = "full/stage2, scene as text"  # the text-only upper bound's column in the report
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


@dataclass
class QuickstartConfig:
    world: WorldConfig = field(default_factory=WorldConfig)
    preset: str = "quickstart"
    vocab_size: int = 2048
    lm: LMPretrainConfig = field(default_factory=LMPretrainConfig)
    clip: CLIPTrainConfig = field(default_factory=CLIPTrainConfig)
    template: str = "plain"  # ALLaVA trains from a base LM
    # The tiny CLIP's last layer with its CLS token: the token its contrastive objective shapes
    # (real CLIP-L/14 recipes use the penultimate layer without CLS: see configs/allava-phi2.yaml).
    vision_feature_layer: int = -1
    vision_feature_select_strategy: str = "full"
    stages: dict[str, StageConfig] = field(default_factory=dict)  # data paths relative to the world folder
    eval_batch_size: int = 64
    threads: int | None = None


def load_quickstart_config(path: str | Path | None = None, overrides: list[str] = ()) -> QuickstartConfig:
    return from_dict(QuickstartConfig, load_yaml(path or DEFAULT_CONFIG, overrides))


class Phases:
    """Wall time per phase, and a done-marker per phase so a rerun skips finished work."""

    def __init__(self, out: Path):
        self.out = out
        self.path = out / "phases.json"
        self.done: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def run(self, name: str, fn, *args, **kwargs) -> dict:
        if name in self.done:
            print(f"[{name}] already done ({self.done[name]['wall_s']:.0f}s)", flush=True)
            return self.done[name]
        print(f"[{name}]", flush=True)
        t0 = time.perf_counter()
        result = fn(*args, **kwargs) or {}
        # the running peak after each phase shows which phase set it
        self.done[name] = {"wall_s": time.perf_counter() - t0, "peak_rss_mb_after": peak_rss_mb(), **result}
        self.path.write_text(json.dumps(self.done, indent=2))
        return self.done[name]


def _world_phase(out: Path, cfg: QuickstartConfig) -> dict:
    files = build_world(out / "world", cfg.world)
    return {"counts": files.counts}


def _tokenizer_phase(out: Path, cfg: QuickstartConfig) -> dict:
    corpus = (out / "world" / "corpus.txt").read_text().splitlines()
    tok = train_tokenizer(corpus, out / "tokenizer", cfg.vocab_size)
    return {"vocab_size": len(tok)}


def _lm_phase(out: Path, cfg: QuickstartConfig) -> dict:
    corpus = (out / "world" / "corpus.txt").read_text().splitlines()
    return pretrain_lm(corpus, out / "tokenizer", out / "lm", PRESETS[cfg.preset][0], cfg.lm)


def _clip_phase(out: Path, cfg: QuickstartConfig) -> dict:
    images = out / "world" / "images"
    pairs = [(images / r["image"], r["caption"]) for r in read_jsonl(out / "world" / "clip_pairs.jsonl")]
    return train_clip(pairs, out / "tokenizer", out / "clip", PRESETS[cfg.preset][1], cfg.clip)


def _recipe(out: Path, cfg: QuickstartConfig, run_name: str, skip_stage1: bool) -> TrainRecipe:
    world = out / "world"
    stages = {}
    for name, stage in cfg.stages.items():
        data = [DataSource(str(world / d.path), str(world / d.image_folder) if d.image_folder else None, d.repeat)
                for d in stage.data]
        enabled = stage.enabled and not (skip_stage1 and name == "stage1")
        stages[name] = replace(stage, data=data, enabled=enabled)
    spec = ModelSpec(vision_tower=str(out / "clip"), language_model=str(out / "lm"), template=cfg.template,
                     vision_feature_layer=cfg.vision_feature_layer,
                     vision_feature_select_strategy=cfg.vision_feature_select_strategy)
    return TrainRecipe(output_dir=str(out / run_name), model=spec, stages=stages, threads=cfg.threads)


def stage_summary(r: StageResult) -> dict:
    """What the report keeps of a finished stage (a `run_stage` result)."""
    return {"model_dir": r.model_dir, "steps": r.steps, "wall_s": r.wall_s, "tokens_per_s": r.tokens_per_s,
            "losses": r.losses, "trainable": r.trainable, "data": r.data}


def _train_phase(out: Path, cfg: QuickstartConfig, run_name: str, skip_stage1: bool) -> dict:
    return {"stages": {r.name: stage_summary(r) for r in run_recipe(_recipe(out, cfg, run_name, skip_stage1))}}


def _eval_phase(out: Path, cfg: QuickstartConfig, model_dir: str, name: str, scene_as_text: bool = False) -> dict:
    from allava.evaluate.synthetic import evaluate_bench

    return evaluate_bench(model_dir, out / "world", batch_size=cfg.eval_batch_size,
                          predictions_path=out / f"predictions-{name}.jsonl", scene_as_text=scene_as_text)


def peak_rss_mb() -> float:
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def run_quickstart(out: str | Path, cfg: QuickstartConfig, skip_stage1: bool = False, ablation: bool = True,
                   inject_noise: float = 0.0, qc: bool = False, qc_config: str | Path | None = None) -> dict:
    """The whole recipe; with `inject_noise` > 0 also the noise study (`allava.noise_study`), with `qc` its QC arm."""
    from allava.report import write_quickstart_report

    if qc and not inject_noise:
        raise ConfigError("--qc needs --inject-noise RATE (QC is measured against the injected records)")
    if not 0 <= inject_noise < 1:
        raise ConfigError(f"--inject-noise is a share of records in [0, 1), got {inject_noise}")
    if inject_noise and skip_stage1:
        raise ConfigError("--inject-noise trains stage 2 from the stage-1 model: drop --skip-stage1")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    phases = Phases(out)
    phases.run("world", _world_phase, out, cfg)
    phases.run("tokenizer", _tokenizer_phase, out, cfg)
    phases.run("stage0-lm", _lm_phase, out, cfg)
    phases.run("stage0-clip", _clip_phase, out, cfg)
    evals: dict[str, dict] = {}
    runs = [("stage2-only", True)] if skip_stage1 else [("full", False)] + ([("stage2-only", True)] if ablation else [])
    for run_name, skip in runs:
        trained = phases.run(f"train-{run_name}", _train_phase, out, cfg, run_name, skip)
        for stage, info in trained["stages"].items():
            key = f"{run_name}/{stage}"
            evals[key] = phases.run(f"eval-{key}", _eval_phase, out, cfg, info["model_dir"], key.replace("/", "-"))
        if run_name == "full" and "stage2" in trained["stages"]:  # the same model, the scene given as text
            final = trained["stages"]["stage2"]["model_dir"]
            evals[TEXT_BOUND] = phases.run(f"eval-{TEXT_BOUND}", _eval_phase, out, cfg, final,
                                           "full-stage2-scene-as-text", True)
    if inject_noise:
        stage1_dir = phases.done["train-full"]["stages"]["stage1"]["model_dir"]
        evals.update(run_noise_study(out, cfg, phases, inject_noise, qc, qc_config, stage1_dir, _eval_phase))
    report = {
        "config": asdict(cfg),
        "phases": phases.done,
        "evals": evals,
        "wall_s_total": sum(p["wall_s"] for p in phases.done.values()),
        "wall_s_noise_study": sum(p["wall_s"] for k, p in phases.done.items() if is_noise_phase(k)),
        "wall_s_this_run": time.perf_counter() - t0,
        "peak_rss_mb": peak_rss_mb(),
        "threads": torch.get_num_threads(),
    }
    write_quickstart_report(out, report)
    return report
