"""The building blocks of the default run that the studies reuse: world, stage 0, the recipe on
the run's own models, stage 2 from a given model, evaluation.

Every folder is derived from the run's `out` folder: `world/`, `tokenizer/`, `lm/`, `clip/`,
`features/` (the frozen-tower feature store, shared by every training run of this folder).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from allava.data.dataset import DataSource
from allava.model.build import ModelSpec
from allava.scenes.graph import GRID
from allava.scenes.world import TEACHER_DIR, TEACHER_ITEMS, corpus_lines, read_jsonl
from allava.studies.config import QuickstartConfig
from allava.studies.phases import Phases, stage_summary
from allava.train.stages import StageConfig, TrainRecipe, run_recipe, run_stage

FEATURES = "features"  # the folder of the feature store, beside world/ and the runs


def _world_phase(out: Path, cfg: QuickstartConfig) -> dict:
    from allava.scenes.world import build_world

    return {"counts": build_world(out / "world", cfg.world).counts}


def _teacher_phase(out: Path, cfg: QuickstartConfig) -> dict:
    """ALLaVA's captions and instructions written the way a user writes them: `allava synth
    allava-laion --teacher scene` on the world's train images, then `allava synth export`
    (captions.jsonl for stage 1, instructions.jsonl for stage 2, beside the run's records.jsonl).
    The corpus of what it wrote joins the tokenizer's and the LM's text."""
    from allava.synth.config import SynthConfig
    from allava.synth.export import export
    from allava.synth.runner import synth

    world = out / "world"
    run = world / TEACHER_DIR
    summary = synth(SynthConfig(task="allava-laion", images=str(world / TEACHER_ITEMS), out=run,
                                teacher="scene", image_folder=world / "images", no_cache=True,
                                concurrency=1))  # records in source order: the same run twice trains the same
    if summary["status"] != "complete":
        raise RuntimeError(f"the scene teacher stopped: {summary['status']} (see {run / 'summary.json'})")
    counts = export(run)
    texts = corpus_lines([r for name in ("captions.jsonl", "instructions.jsonl") for r in read_jsonl(run / name)])
    (run / "corpus.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    return {"records": summary["done"], "rejected": summary["rejected"], "items_per_s": summary["items_per_s"],
            "reject_reasons": summary["this_run"]["reject_reasons"], "exported": counts}


def _corpus(out: Path) -> list[str]:
    """The world's text, and the synthesized teacher's where the world was built for it."""
    lines = (out / "world" / "corpus.txt").read_text().splitlines()
    teacher = out / "world" / TEACHER_DIR / "corpus.txt"
    return lines + (teacher.read_text().splitlines() if teacher.exists() else [])


def _tokenizer_phase(out: Path, cfg: QuickstartConfig) -> dict:
    from allava.train.tokenizer import train_tokenizer

    return {"vocab_size": len(train_tokenizer(_corpus(out), out / "tokenizer", cfg.vocab_size))}


def _lm_phase(out: Path, cfg: QuickstartConfig) -> dict:
    from allava.train.pretrain_lm import conversation_texts, pretrain_lm

    corpus = _corpus(out)
    path = out / "world" / "lm_docs.jsonl"
    docs = read_jsonl(path) if path.exists() else []  # the world in words, in the chat layout (Phi-2's stand-in)
    if docs and not cfg.lm.document_share:
        corpus += conversation_texts(docs, cfg.template)  # packed with the rest, every token trained
    return pretrain_lm(corpus, out / "tokenizer", out / "lm", cfg.architectures()[0], cfg.lm,
                       documents=docs if cfg.lm.document_share else None, template=cfg.template)


def _clip_phase(out: Path, cfg: QuickstartConfig) -> dict:
    from allava.train.clip import train_clip

    images = out / "world" / "images"
    preset = cfg.architectures()[1]
    # The labels are per scene cell: they supervise patches only where one patch sees one cell.
    per_cell = preset.image_size // preset.patch_size == GRID
    pairs = [(images / r["image"], r["caption"], r.get("negatives", []), r.get("patch_labels") if per_cell else None)
             for r in read_jsonl(out / "world" / "clip_pairs.jsonl")]
    clip_cfg = replace(cfg.clip, dense_layer=cfg.vision_feature_layer)  # probe the layer the projector reads
    stats = train_clip(pairs, out / "tokenizer", out / "clip", preset, clip_cfg)
    if not per_cell:
        stats["dense_labels_skipped"] = f"the tower's patch grid is not the scene's {GRID}x{GRID} cells"
    return stats


def run_stage0(out: Path, cfg: QuickstartConfig, phases: Phases) -> None:
    """World, the teacher's data, tokenizer, the stage-0 LM and CLIP (each skipped when done)."""
    phases.run("world", _world_phase, out, cfg)
    if cfg.world.teacher == "synth":
        phases.run("teacher", _teacher_phase, out, cfg)
    phases.run("tokenizer", _tokenizer_phase, out, cfg)
    phases.run("stage0-lm", _lm_phase, out, cfg)
    phases.run("stage0-clip", _clip_phase, out, cfg)


def model_spec(out: Path, cfg: QuickstartConfig) -> ModelSpec:
    return ModelSpec(vision_tower=str(out / "clip"), language_model=str(out / "lm"), template=cfg.template,
                     vision_feature_layer=cfg.vision_feature_layer,
                     vision_feature_select_strategy=cfg.vision_feature_select_strategy)


def stage_configs(out: Path, cfg: QuickstartConfig) -> dict[str, StageConfig]:
    """The YAML's stages with their data paths made absolute (they are relative to the world)."""
    world = out / "world"
    return {name: replace(stage, data=[DataSource(str(world / d.path), str(world / d.image_folder)
                                                  if d.image_folder else None, d.repeat) for d in stage.data])
            for name, stage in cfg.stages.items()}


def recipe(out: Path, cfg: QuickstartConfig, run_dir: Path, skip_stage1: bool = False) -> TrainRecipe:
    """The quickstart's two stages on this run's own LM and CLIP, written under `run_dir`."""
    stages = {name: replace(s, enabled=s.enabled and not (skip_stage1 and name == "stage1"))
              for name, s in stage_configs(out, cfg).items()}
    return TrainRecipe(output_dir=str(run_dir), model=model_spec(out, cfg), stages=stages, threads=cfg.threads,
                       feature_cache_dir=str(out / FEATURES))


def train(out: Path, cfg: QuickstartConfig, run_dir: Path, skip_stage1: bool = False,
          callbacks: dict[str, list] | None = None) -> dict:
    """A phase: the recipe's enabled stages; {"stages": {name: summary}}."""
    results = run_recipe(recipe(out, cfg, run_dir, skip_stage1), callbacks=callbacks)
    return {"stages": {r.name: stage_summary(r) for r in results}}


def train_stage2_from(out: Path, cfg: QuickstartConfig, init_dir: str, run_dir: Path,
                      data: list[DataSource], max_steps: int | None = None) -> dict:
    """A phase: stage 2 alone from a saved model (the default run's stage 1) on other data;
    `max_steps` fixes the length (so data that QC shrank is not also trained for fewer steps)."""
    r = recipe(out, cfg, run_dir)
    stage = replace(r.stages["stage2"], data=data)
    if max_steps:
        stage = replace(stage, max_steps=max_steps)
    result = run_stage("stage2", stage, init_dir, run_dir / "stage2", r.model, feature_cache_dir=r.feature_cache_dir,
                       feature_cache_max_gb=r.feature_cache_max_gb)
    return {"stages": {"stage2": stage_summary(result)}}


def evaluate(out: Path, cfg: QuickstartConfig, model_dir: str, predictions: Path | None, scene_as_text: bool = False,
             question_ids: list[str] | None = None, desc: str = "held-out questions") -> dict:
    """A phase: the held-out benchmark of this run's world (per ability, with chance)."""
    from allava.evaluate.synthetic import evaluate_bench

    return evaluate_bench(model_dir, out / "world", batch_size=cfg.eval_batch_size, predictions_path=predictions,
                          scene_as_text=scene_as_text, question_ids=question_ids, desc=desc)
