"""The VLIT review's Table 2 at quickstart scale: does quality control pay for itself?

Bad records replace a share of the stage-2 image data (answers swapped between images, garbled
text, duplicated and unreadable images, truncated answers: `allava.quality.noise`), `allava qc`
cleans the noisy data with `configs/qc/default.yaml` (its model-based ops get this run's own LM
and CLIP), and stage 2 is trained on the noisy and on the QC'd data from the default run's stage-1
model. Clean (the default run) vs noisy vs QC'd, with paired tests.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

from allava.config import ConfigError, load_yaml
from allava.data.dataset import DataSource
from allava.studies import pipeline
from allava.studies.config import QuickstartConfig
from allava.studies.report import ability_table, compare, interval, strip_ids
from allava.studies.study import Study

NAME = "noise"
QC_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "qc" / "default.yaml"
DEFAULT_RATE = 0.2
# The run's own model folder for each op that needs a model and was given none
MODEL_FOR_OP = {"text_readability": "lm", "clip_match": "clip", "clip_rank": "clip"}
VARIANTS = {"noisy": "noisy", "qc": "noisy, then QC"}


def qc_config_for(out: Path, path: str | Path = QC_CONFIG) -> dict:
    """The QC YAML with this run's LM / CLIP filled in where an op names no model (explicit ones win)."""
    return fill_models(load_yaml(path), out)


def fill_models(raw: dict, out: Path) -> dict:
    """`raw` (a parsed QC YAML) with the run `out`'s LM / CLIP where an op names no model."""
    for entry in raw.get("ops", []):
        folder = MODEL_FOR_OP.get(entry.get("name"))
        if folder and not entry.get("model"):
            entry["model"] = str(out / folder)
    return raw


def _image_sources(out: Path, cfg: QuickstartConfig) -> list[DataSource]:
    """The stage-2 sources the noise goes into: those with images (text-only data stays clean)."""
    stage = pipeline.stage_configs(out, cfg).get("stage2")
    sources = [d for d in (stage.data if stage else []) if d.image_folder]
    if not sources:
        raise ConfigError("the noise study needs a stage2 with image data (stages.stage2.data with image_folder)")
    return sources


def _noisy_path(folder: Path, i: int, source: DataSource) -> Path:
    return folder / "noisy" / f"{i}-{Path(source.path).name}"


def _inject_phase(out: Path, cfg: QuickstartConfig, folder: Path, rate: float) -> dict:
    from allava.quality.noise import inject_noise
    from allava.scenes.world import read_jsonl

    injected: dict[str, str] = {}
    records = 0
    for i, source in enumerate(_image_sources(out, cfg)):
        noisy, picked = inject_noise(read_jsonl(source.path), source.image_folder, rate=rate, seed=cfg.world.seed + i)
        path = _noisy_path(folder, i, source)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in noisy))
        injected.update(picked)
        records += len(noisy)
    (folder / "injected.json").write_text(json.dumps(injected, indent=1))
    return {"rate": rate, "records": records, "injected": len(injected), "per_kind": dict(Counter(injected.values()))}


def _qc_phase(out: Path, cfg: QuickstartConfig, folder: Path, qc_config: Path) -> dict:
    from allava.quality.config import parse_config
    from allava.quality.noise import score_injection
    from allava.quality.pipeline import run_qc_pipeline
    from allava.scenes.world import read_jsonl

    qc = parse_config(qc_config_for(out, qc_config), str(qc_config))
    removed: set[str] = set()
    ids: list[str] = []
    kept = dropped = 0
    seconds = 0.0
    for i, source in enumerate(_image_sources(out, cfg)):
        noisy = _noisy_path(folder, i, source)
        run = run_qc_pipeline(noisy, qc, folder / "qc" / noisy.stem, image_folder=source.image_folder)
        removed |= {r["id"] for r in read_jsonl(folder / "qc" / noisy.stem / "removed.jsonl")}
        ids += run.ids
        kept, dropped, seconds = kept + run.kept, dropped + run.removed, seconds + run.seconds
    injected = json.loads((folder / "injected.json").read_text())
    return {"config": str(qc_config), "kept": kept, "removed": dropped, "qc_seconds": seconds,
            **score_injection(removed, ids, injected)}


def _data(out: Path, cfg: QuickstartConfig, folder: Path, variant: str) -> list[DataSource]:
    """The stage-2 sources with each image source replaced by its noisy (or noisy-then-QC'd) file."""
    replaced = {}
    for i, source in enumerate(_image_sources(out, cfg)):
        noisy = _noisy_path(folder, i, source)
        path = noisy if variant == "noisy" else folder / "qc" / noisy.stem / "kept.jsonl"
        replaced[source.path] = replace(source, path=str(path))
    return [replaced.get(d.path, d) for d in pipeline.stage_configs(out, cfg)["stage2"].data]


def _body(inj: dict, qc: dict, evals: dict[str, dict]) -> list[str]:
    lines = ["## Noise", "", f"{inj['injected']} of {inj['records']} stage-2 image records ({inj['rate']:.0%}) "
             "replaced by bad ones: " + ", ".join(f"{k} {v}" for k, v in sorted(inj["per_kind"].items())) + ".",
             "", "## What QC removed", "",
             f"QC (`{qc['config']}`) kept {qc['kept']} and removed {qc['removed']} records in "
             f"{qc['qc_seconds']:.0f} s: **{qc['injected_removed']:.1%} of the injected** and "
             f"**{qc['clean_removed']:.1%} of the clean** records.", "", "| injected kind | removed |", "|---|---|"]
    lines += [f"| {k} | {v:.1%} |" for k, v in qc["per_kind"].items()]
    lines += ["", "## Held-out accuracy: clean vs noisy vs QC'd stage-2 data", "",
              "All three stage-2 runs start from the default run's stage-1 model.", "",
              "| stage-2 data | overall | 95% interval (binomial) |", "|---|---|---|"]
    names = {"full/stage2": "clean (the default run)", "noisy/stage2": "noisy", "qc/stage2": "noisy, then QC"}
    for key, e in evals.items():
        lo, hi = interval(e["overall"], e["n"])
        lines.append(f"| {names[key]} | {e['overall']:.1%} | {lo:.1%} - {hi:.1%} |")
    return lines + ["", "Per ability:", ""] + ability_table(evals, names)


def run_noise_study(out: str | Path, cfg: QuickstartConfig, rate: float = DEFAULT_RATE,
                    qc_config: str | Path | None = None) -> dict:
    if not 0 < rate < 1:
        raise ConfigError(f"--inject-noise is a share of records in (0, 1), got {rate}")
    qc_path = Path(qc_config) if qc_config else QC_CONFIG
    if not qc_path.exists():
        raise ConfigError(f"{qc_path}: no such QC config")
    study = Study(NAME, out, cfg)
    out, folder, phases = study.out, study.folder, study.phases
    stage1 = study.default_model("stage1")
    done = phases.done.get("inject")
    if done and abs(done["rate"] - rate) > 1e-9:
        raise ConfigError(f"{folder} holds a noise study at --inject-noise {done['rate']}; "
                          f"use another --out or delete {folder} to study {rate}")
    done = phases.done.get("qc")
    if done and Path(done["config"]) != qc_path:
        raise ConfigError(f"{folder} was QC'd with {done['config']}; use another --out or delete {folder / 'qc'} "
                          f"and the train-qc / eval-qc entries of {phases.path} to use {qc_path}")
    inj = phases.run("inject", _inject_phase, out, cfg, folder, rate)
    qc = phases.run("qc", _qc_phase, out, cfg, folder, qc_path)
    evals = {"full/stage2": study.default_eval("stage2")}
    # every arm trains as many steps as the clean run: the comparison is between data, not between
    # training lengths (QC keeps fewer records, so at a fixed epoch count it would also train less)
    steps = study.default.done[f"train-{study.run_name}"]["stages"]["stage2"]["steps"]
    for variant in VARIANTS:
        trained = phases.run(f"train-{variant}", pipeline.train_stage2_from, out, cfg, stage1, folder / variant,
                             _data(out, cfg, folder, variant), steps)
        evals[f"{variant}/stage2"] = phases.run(f"eval-{variant}/stage2", pipeline.evaluate, out, cfg,
                                                trained["stages"]["stage2"]["model_dir"],
                                                folder / f"predictions-{variant}.jsonl")
    comparisons = {}
    for a, b, label in (("full/stage2", "noisy/stage2", "clean vs noisy stage-2 data"),
                        ("qc/stage2", "noisy/stage2", "QC'd vs noisy stage-2 data")):
        c = compare(a, evals[a], b, evals[b], label, expected="a")
        if c:
            comparisons[f"{a} vs {b}"] = c
    qc_vs = comparisons.get("qc/stage2 vs noisy/stage2")
    headline = (f"clean {evals['full/stage2']['overall']:.1%}, noisy {evals['noisy/stage2']['overall']:.1%}, "
                f"QC'd {evals['qc/stage2']['overall']:.1%}; QC removed {qc['injected_removed']:.0%} of the injected "
                f"and {qc['clean_removed']:.1%} of the clean records"
                + (f"; QC'd vs noisy: {qc_vs['verdict']}" if qc_vs else ""))
    return study.write(
        f"Study: noise and quality control (VLIT review Table 2), {rate:.0%} noise",
        "The VLIT review's Table 2: does training on QC'd data beat training on noisy data? "
        "The review: cleaned data beats noisy data (and noise hurts: clean beats noisy).",
        _body(inj, qc, evals),
        {"rate": rate, "inject": inj, "qc": qc, "evals": strip_ids(evals)}, comparisons, headline)
