"""The offline quickstart's default run: the whole ALLaVA recipe at laptop scale, on the real code.

Phases: build a procedural world (images + scene-graph teacher data + held-out benchmark) →
stage 0 (tokenizer, tiny LM pretrained on the synthetic text, tiny CLIP trained contrastively)
→ stage 1 (alignment: captions + 2x text) → stage 2 (instructions: VQA + 1x text, with a learning
curve measured while it trains) → evaluation after each stage and the text-only upper bound →
a chat transcript on fresh scenes → the report. No ablation: the papers' ablations are studies
(`allava.studies.table6`, `allava.studies.noise`) that reuse these outputs. Every phase is
resumable: rerunning the same command skips what is done.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from allava.studies import pipeline
from allava.studies.config import QuickstartConfig, load_quickstart_config
from allava.studies.curve import LearningCurve, read_curve, score_subset
from allava.studies.phases import Phases
from allava.studies.report import TEXT_BOUND, write_quickstart_report

__all__ = ["QuickstartConfig", "load_quickstart_config", "run_default", "run_quickstart", "write_report"]

RUN = "full"  # the default run's training folder: OUT/full/stage1, OUT/full/stage2
CURVE_FILE = "learning_curve.jsonl"


def _curve_subset(out: Path, cfg: QuickstartConfig) -> dict[str, str]:
    from allava.evaluate.synthetic import balanced_subset

    return balanced_subset(out / "world", cfg.curve.questions)


def _curve_callback(out: Path, cfg: QuickstartConfig) -> LearningCurve:
    subset = _curve_subset(out, cfg)

    def evaluate(model_dir: str, step: int) -> dict:
        return pipeline.evaluate(out, cfg, model_dir, predictions=None, question_ids=list(subset),
                                 desc=f"learning curve at step {step}")

    return LearningCurve(out / CURVE_FILE, pipeline.model_spec(out, cfg), subset, cfg.curve.points, evaluate,
                         out / "curve-scratch")


def run_default(out: Path, cfg: QuickstartConfig, phases: Phases) -> dict[str, dict]:
    """Every training and evaluation phase of the default run; {eval key: result}. Studies call this
    first, so they start from (or resume) exactly the default run's world, stage 0, 1 and 2."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    pipeline.run_stage0(out, cfg, phases)
    trained = phases.run(f"train-{RUN}", pipeline.train, out, cfg, out / RUN,
                         callbacks={"stage2": [_curve_callback(out, cfg)]})
    if (out / "curve-scratch").is_dir() and not any((out / "curve-scratch").iterdir()):
        (out / "curve-scratch").rmdir()
    evals = {}
    for stage, info in trained["stages"].items():
        key = f"{RUN}/{stage}"
        evals[key] = phases.run(f"eval-{key}", pipeline.evaluate, out, cfg, info["model_dir"],
                                out / f"predictions-{RUN}-{stage}.jsonl")
    if "stage2" in trained["stages"]:  # the same model, the scene given as text
        evals[TEXT_BOUND] = phases.run(f"eval-{TEXT_BOUND}", pipeline.evaluate, out, cfg,
                                       trained["stages"]["stage2"]["model_dir"],
                                       out / f"predictions-{RUN}-stage2-scene-as-text.jsonl", True,
                                       desc="held-out questions, scene as text")
    return evals


def _rendering(out: Path, cfg: QuickstartConfig, phases: Phases) -> dict:
    """The knobs that shape what the model sees, read from the trained artifacts where they exist."""
    from allava.scenes.graph import GRID

    _, clip = cfg.architectures()
    vision = {}
    clip_config = out / "clip" / "config.json"
    if clip_config.exists():
        vision = json.loads(clip_config.read_text()).get("vision_config", {})
    image_size, patch = vision.get("image_size", clip.image_size), vision.get("patch_size", clip.patch_size)
    tokens = (image_size // patch) ** 2 + (1 if cfg.vision_feature_select_strategy == "full" else 0)
    stages = phases.done.get(f"train-{RUN}", {}).get("stages", {})
    final = Path(stages.get("stage2", stages.get("stage1", {})).get("model_dir", "-")) / "config.json"
    if final.exists():
        tokens = json.loads(final.read_text()).get("image_seq_length", tokens)
    return {"image_size": cfg.world.image_size, "grid": GRID, "cell_px": cfg.world.image_size // GRID,
            "vision_input_px": image_size, "patch_size": patch, "visual_tokens": tokens,
            "vision_feature_layer": cfg.vision_feature_layer,
            "select_strategy": cfg.vision_feature_select_strategy}


def _learning_curve(out: Path, cfg: QuickstartConfig, phases: Phases) -> dict:
    subset = _curve_subset(out, cfg)
    points = []
    stage1 = phases.done.get(f"eval-{RUN}/stage1")
    if stage1 and "correct_ids" in stage1:
        points.append({"step": 0, **score_subset(stage1["correct_ids"], subset)})
    points += [p for _, p in sorted(read_curve(out / CURVE_FILE).items())]
    steps = phases.done.get(f"train-{RUN}", {}).get("stages", {}).get("stage2", {}).get("steps", 0)
    n_abilities = len(set(subset.values()))
    return {"questions": len(subset), "per_ability": len(subset) // max(1, n_abilities), "total_steps": steps,
            "points": points}


def _studies(out: Path) -> dict[str, dict]:
    """The studies whose report exists in OUT/studies/, with their one-line headline."""
    found = {}
    for path in sorted((out / "studies").glob("*/report.json")):
        headline = json.loads(path.read_text()).get("headline", "")
        found[path.parent.name] = {"report": str(path.with_suffix(".md").relative_to(out)), "headline": headline}
    return found


def write_report(out: Path, cfg: QuickstartConfig, started: float | None = None) -> dict:
    """The default run's report from its phases.json (also refreshed after a study, to link it)."""
    phases = Phases(out)
    evals = {k.removeprefix("eval-"): v for k, v in phases.done.items() if k.startswith("eval-")}
    report = {
        "config": asdict(cfg),
        "hardware": asdict(cfg.hardware),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
        # what the stage-0 loop trained in: bf16 where the hardware has it natively (train/precision.py)
        "precision": "bf16" if phases.done.get("stage0-lm", {}).get("bf16") else "fp32",
        "rendering": _rendering(out, cfg, phases),
        "phases": phases.done,
        "evals": evals,
        "learning_curve": _learning_curve(out, cfg, phases),
        "transcript": phases.done.get("transcript", {}),
        "studies": _studies(out),
        "wall_s_total": phases.wall_s(),
        "wall_s_this_run": time.perf_counter() - started if started else None,
        "peak_rss_mb": phases.peak_rss_mb(),
        "threads": torch.get_num_threads(),
    }
    return write_quickstart_report(out, report)


def run_quickstart(out: str | Path, cfg: QuickstartConfig) -> dict:
    """The default run, resumable; writes OUT/report.md and OUT/report.json and returns the latter."""
    from allava.studies.transcript import run_transcript

    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    phases = Phases(out)
    run_default(out, cfg, phases)
    final = phases.done[f"train-{RUN}"]["stages"].get("stage2")
    if final:
        phases.run("transcript", run_transcript, out, cfg, final["model_dir"])
    return write_report(out, cfg, started)
