"""The VLIT review's Table 2 at quickstart scale: does quality control pay for itself?

Bad records replace a share of the stage-2 image data: half of them the original injector's kinds
(answers swapped between images, garbled text, duplicated and unreadable images, truncated answers:
`allava.quality.noise`), half the mistakes real teachers make (hallucinations, wrong counts,
paraphrases of another image's record, refusals, other languages, terse answers, damaged images:
`allava.quality.teacher_noise`). `allava qc` cleans the noisy data's distinct samples with
`configs/qc/default.yaml` (its model-based ops get this run's own LM and CLIP; the balanced short
VQA's deliberate repeats follow their sample's verdict), and stage 2 is trained on the noisy and on
the QC'd data from the default run's stage-1 model. Clean (the default run) vs noisy vs QC'd, with
paired tests.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

from allava.config import SHIPPED_CONFIGS, ConfigError, load_yaml
from allava.data.dataset import DataSource
from allava.studies import pipeline
from allava.studies.config import QuickstartConfig
from allava.quality.measure import distinct, kind_table, sample_key
from allava.studies.report import ability_table, compare, interval, strip_ids
from allava.studies.study import Study

NAME = "noise"
QC_CONFIG = SHIPPED_CONFIGS / "qc" / "default.yaml"
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


GENERATOR = "injector+teacher"  # half the noise from each generator (allava.quality.noise, .teacher_noise)


def _inject(records: list[dict], image_folder: str | Path, rate: float, seed: int) -> tuple[list[dict], dict[str, str]]:
    """`rate` of the records replaced: half by teacher-style mistakes, half by the original injector's kinds."""
    from allava.quality.noise import inject_noise
    from allava.quality.teacher_noise import inject_teacher_noise

    noisy, injected = inject_teacher_noise(records, image_folder, rate / 2, seed)
    rest = [r for r in noisy if r["id"] not in injected]
    more_rows, more = inject_noise(rest, image_folder, rate / 2 * len(noisy) / max(1, len(rest)), seed + 7919)
    by_id = {r["id"]: r for r in more_rows}
    return [by_id.get(r["id"], r) for r in noisy], {**injected, **more}


def _inject_phase(out: Path, cfg: QuickstartConfig, folder: Path, rate: float) -> dict:
    from allava.scenes.world import read_jsonl

    injected: dict[str, str] = {}
    records = 0
    for i, source in enumerate(_image_sources(out, cfg)):
        noisy, picked = _inject(read_jsonl(source.path), source.image_folder, rate, cfg.world.seed + i)
        path = _noisy_path(folder, i, source)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in noisy))
        injected.update(picked)
        records += len(noisy)
    (folder / "injected.json").write_text(json.dumps(injected, indent=1))
    return {"rate": rate, "generator": GENERATOR, "records": records, "injected": len(injected),
            "per_kind": dict(Counter(injected.values()))}


def _qc_distinct(noisy: Path, qc, out_dir: Path, image_folder: str | Path):
    """QC the distinct samples of `noisy`; repeats follow their first copy's verdict.

    The quickstart's balanced short VQA repeats identical records on purpose (one ability's records
    are re-drawn until every ability has as many): the repeats are the sampler's weights, not
    duplicates a crawler made, and `text_dedup` removed ~2,700 of them as duplicates, which
    unbalanced the abilities of the QC'd arm. QC judges each sample once; its kept.jsonl is then
    expanded back to every copy (`kept-all.jsonl`, what stage 2 trains on)."""
    from allava.quality.pipeline import run_qc_pipeline
    from allava.scenes.world import read_jsonl

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = read_jsonl(noisy)
    samples = out_dir / "distinct.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in distinct(rows)))
    run = run_qc_pipeline(samples, qc, out_dir, image_folder=image_folder)
    kept = {sample_key(r) for r in read_jsonl(out_dir / "kept.jsonl")}
    expanded = [r for r in rows if sample_key(r) in kept]
    (out_dir / "kept-all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in expanded))
    return run, rows, expanded


def _qc_phase(out: Path, cfg: QuickstartConfig, folder: Path, qc_config: Path) -> dict:
    from allava.quality.config import parse_config
    from allava.quality.noise import score_injection
    qc = parse_config(qc_config_for(out, qc_config), str(qc_config))
    removed: set[str] = set()
    ids: list[str] = []
    kept = dropped = samples = 0
    seconds = 0.0
    for i, source in enumerate(_image_sources(out, cfg)):
        noisy = _noisy_path(folder, i, source)
        run, rows, expanded = _qc_distinct(noisy, qc, folder / "qc" / noisy.stem, source.image_folder)
        survivors = {r["id"] for r in expanded}
        removed |= {r["id"] for r in rows if r["id"] not in survivors}
        ids += [r["id"] for r in rows]
        samples += len(run.ids)
        kept, dropped, seconds = kept + len(expanded), dropped + len(rows) - len(expanded), seconds + run.seconds
    injected = json.loads((folder / "injected.json").read_text())
    return {"config": str(qc_config), "kept": kept, "removed": dropped, "distinct_samples": samples,
            "qc_seconds": seconds, **score_injection(removed, ids, injected)}


def _data(out: Path, cfg: QuickstartConfig, folder: Path, variant: str) -> list[DataSource]:
    """The stage-2 sources with each image source replaced by its noisy (or noisy-then-QC'd) file."""
    replaced = {}
    for i, source in enumerate(_image_sources(out, cfg)):
        noisy = _noisy_path(folder, i, source)
        path = noisy if variant == "noisy" else folder / "qc" / noisy.stem / "kept-all.jsonl"
        replaced[source.path] = replace(source, path=str(path))
    return [replaced.get(d.path, d) for d in pipeline.stage_configs(out, cfg)["stage2"].data]


def _body(inj: dict, qc: dict, evals: dict[str, dict]) -> list[str]:
    lines = ["## Noise", "", f"{inj['injected']} of {inj['records']} stage-2 image records ({inj['rate']:.0%}) "
             "replaced by bad ones: " + ", ".join(f"{k} {v}" for k, v in sorted(inj["per_kind"].items())) + ".",
             "", "## What QC removed", "",
             f"QC (`{qc['config']}`) kept {qc['kept']} and removed {qc['removed']} records in "
             f"{qc['qc_seconds']:.0f} s: **{qc['injected_removed']:.1%} of the injected** and "
             f"**{qc['clean_removed']:.1%} of the clean** records. QC judged the "
             f"{qc.get('distinct_samples', qc['kept'] + qc['removed'])} distinct samples; the balanced short VQA's "
             "deliberate repeats of one sample follow its verdict (they are the sampler's weights, not duplicates).",
             "", "Half the noise is the original injector's kinds (swap, garble, duplicate, unreadable, truncate), "
             "half the mistakes real teachers make (`allava.quality.teacher_noise`):", ""]
    lines += kind_table(qc, inj["per_kind"])
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
    if done and done.get("generator") != GENERATOR:
        raise ConfigError(f"{folder} holds a noise study made by an older noise generator; delete {folder} "
                          "to rerun it with both generators")
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
