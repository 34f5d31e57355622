"""The quickstart's default run and the papers' ablations as studies that reuse its outputs.

`quickstart` is the default run (world, stage 0, stage 1, stage 2, evaluation, learning curve,
chat transcript, report); `table6` (ALLaVA Table 6) and `noise` (the VLIT review's Table 2) each
start from (or resume) it and write `OUT/studies/<name>/report.md` + `report.json` with their
paired tests. Shared pieces: `config` (YAML + hardware preset), `phases` (resumable phases),
`pipeline` (the building blocks), `curve`, `transcript`, `report`, `study`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

STUDIES = ("table6", "noise")


def run_study(name: str, out: str | Path, cfg: Any, **options: Any) -> dict:
    """Run one study by name (imported on demand: each pulls in the training stack)."""
    if name == "table6":
        from allava.studies.table6 import run_table6

        return run_table6(out, cfg, **options)
    if name == "noise":
        from allava.studies.noise import run_noise_study

        return run_noise_study(out, cfg, **options)
    raise ValueError(f"unknown study {name!r}; known: {list(STUDIES)}")
