"""ALLaVA Table 6 at quickstart scale: does stage 1 (alignment on captions) help?

Stage 2 alone, from the stage-0 LM and CLIP with a fresh projector, against the default run's
stage 1 + stage 2; the same stage-2 data and settings, the same held-out questions, compared with
an exact McNemar test. The paper reports stage 1 + 2 ahead on every benchmark.
"""
from __future__ import annotations

from pathlib import Path

from allava.studies import pipeline
from allava.studies.config import QuickstartConfig
from allava.studies.report import LABELS, ability_table, compare, strip_ids
from allava.studies.study import Study

NAME = "table6"
ALONE = "stage2-only/stage2"


def run_table6(out: str | Path, cfg: QuickstartConfig) -> dict:
    study = Study(NAME, out, cfg)
    out, folder = study.out, study.folder
    trained = study.phases.run("train-stage2-only", pipeline.train, out, cfg, folder / "stage2-only", True)
    alone = study.phases.run(f"eval-{ALONE}", pipeline.evaluate, out, cfg, trained["stages"]["stage2"]["model_dir"],
                             folder / "predictions-stage2-only.jsonl")
    full = study.default_eval("stage2")
    evals = {"full/stage2": full, ALONE: alone}
    comparisons = {}
    c = compare("full/stage2", full, ALONE, alone, "stage 1 + 2 vs stage 2 alone", expected="a")
    if c:
        comparisons[f"full/stage2 vs {ALONE}"] = c
    steps = {"full/stage2": study.default.done[f"train-{study.run_name}"]["stages"]["stage2"]["steps"],
             ALONE: trained["stages"]["stage2"]["steps"]}
    headline = (f"stage 1 + 2 {full['overall']:.1%} vs stage 2 alone {alone['overall']:.1%}"
                + (f"; {c['verdict']}" if c else ""))
    body = ["## Held-out accuracy per ability", "",
            f"{full['n']} held-out questions; both stage-2 runs use the same data and settings "
            f"({steps['full/stage2']} and {steps[ALONE]} steps).", ""]
    body += ability_table(evals, {**LABELS, ALONE: "stage 2 alone"})
    return study.write("Study: ALLaVA Table 6 (stage 1 + 2 vs stage 2 alone)",
                       "ALLaVA Table 6: does the alignment stage help? The paper: stage 1 + 2 beats stage 2 alone.",
                       body, {"evals": strip_ids(evals), "steps": steps}, comparisons, headline)
