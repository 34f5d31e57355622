"""The review's Table 2 at quickstart scale: inject bad records into the stage-2 data, run QC on
it, then train stage 2 on the noisy data and on what QC kept (both from the same stage-1 model)
and compare them with the clean run on the held-out benchmark.

`allava quickstart --inject-noise 0.2 --qc` runs it after the normal phases; every step is a
resumable phase of the quickstart, and its figures go into the same report.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from allava.config import load_yaml
from allava.data.dataset import DataSource

if TYPE_CHECKING:
    from allava.quickstart import Phases, QuickstartConfig

NOISY_FILE = "instruct.jsonl"  # the stage-2 source the noise goes into (the world's VQA + ALLaVA data)
QC_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "qc" / "default.yaml"
DEFAULT_MODELS = "runs/quickstart"  # the prefix the default QC config uses for the quickstart's own models


def _inject_phase(out: Path, cfg: QuickstartConfig, rate: float) -> dict:
    from allava.quality.noise import inject_noise
    from allava.scenes.world import read_jsonl

    world = out / "world"
    clean = list(read_jsonl(world / NOISY_FILE))
    noisy, injected = inject_noise(clean, world / "images", rate=rate, seed=cfg.world.seed)
    folder = out / "noise"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / NOISY_FILE).write_text("".join(json.dumps(r) + "\n" for r in noisy))
    (folder / "injected.json").write_text(json.dumps(injected, indent=1))
    return {"rate": rate, "records": len(noisy), "injected": len(injected), "per_kind": dict(Counter(injected.values()))}


VARIANTS = ("noisy", "qc")


def is_noise_phase(name: str) -> bool:
    """Phases of the noise study (kept out of the default quickstart's 15-minute wall-time target)."""
    return name.startswith("noise-") or any(name.startswith(f"{p}-{v}") for p in ("train", "eval") for v in VARIANTS)


def qc_config_for(out: Path, path: str | Path = QC_CONFIG) -> dict:
    """The QC YAML with its quickstart model paths pointed at this run's own LM and CLIP."""
    raw = load_yaml(path)
    for entry in raw.get("ops", []):
        model = entry.get("model")
        if isinstance(model, str) and model.startswith(DEFAULT_MODELS + "/"):
            entry["model"] = str(out / model[len(DEFAULT_MODELS) + 1:])
    return raw


def _qc_phase(out: Path, qc_config: str | Path) -> dict:
    from allava.quality.config import parse_config
    from allava.quality.noise import score_injection
    from allava.quality.pipeline import run_qc_pipeline
    from allava.scenes.world import read_jsonl

    folder = out / "noise"
    cfg = parse_config(qc_config_for(out, qc_config), str(qc_config))
    run = run_qc_pipeline(folder / NOISY_FILE, cfg, folder / "qc", image_folder=out / "world" / "images")
    removed = {r["id"] for r in read_jsonl(folder / "qc" / "removed.jsonl")}
    injected = json.loads((folder / "injected.json").read_text())
    return {"kept": run.kept, "removed": run.removed, "qc_seconds": run.seconds,
            **score_injection(removed, run.ids, injected)}


def _stage2_phase(out: Path, cfg: QuickstartConfig, run_name: str, data_file: Path, stage1_dir: str) -> dict:
    """Stage 2 from the clean run's stage-1 model, with the noisy (or QC'd) file as its VQA source."""
    from allava.quickstart import _recipe, stage_summary
    from allava.train.stages import run_stage

    recipe = _recipe(out, cfg, run_name, skip_stage1=False)
    stage = recipe.stages["stage2"]
    data = [DataSource(str(data_file), d.image_folder, d.repeat) if Path(d.path).name == NOISY_FILE else d
            for d in stage.data]
    r = run_stage("stage2", replace(stage, data=data), stage1_dir, out / run_name / "stage2", recipe.model)
    return {"stages": {"stage2": stage_summary(r)}}


def run_noise_study(out: Path, cfg: QuickstartConfig, phases: Phases, rate: float, qc: bool,
                    qc_config: str | Path | None, stage1_dir: str, evaluate) -> dict[str, dict]:
    """Inject, optionally QC, train stage 2 on each variant; returns {eval key: eval result}."""
    phases.run("noise-inject", _inject_phase, out, cfg, rate)
    variants = [("noisy", out / "noise" / NOISY_FILE)]
    if qc:
        phases.run("noise-qc", _qc_phase, out, qc_config or QC_CONFIG)
        variants.append(("qc", out / "noise" / "qc" / "kept.jsonl"))
    evals = {}
    for name, data_file in variants:
        trained = phases.run(f"train-{name}", _stage2_phase, out, cfg, name, data_file, stage1_dir)
        key = f"{name}/stage2"
        evals[key] = phases.run(f"eval-{key}", evaluate, out, cfg, trained["stages"]["stage2"]["model_dir"],
                                key.replace("/", "-"))
    return evals
