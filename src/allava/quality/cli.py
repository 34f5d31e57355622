"""`allava qc RECORDS --config configs/qc/X.yaml --out DIR` and `allava qc compare A B`.

Wire with `add_qc_parser(p)` (adds the arguments) and `run_qc(args) -> int` (runs either form).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from allava.config import SHIPPED_CONFIGS

DEFAULT_CONFIG = SHIPPED_CONFIGS / "qc" / "default.yaml"


def add_qc_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="RECORDS",
                   help="LLaVA JSON/JSONL or synthesis records.jsonl; or `compare A B` with two QC output folders")
    p.add_argument("--config", default=None, help=f"QC YAML: a path or a shipped name, cheap or default (default: {DEFAULT_CONFIG.stem})")
    p.add_argument("--out", default=None, help="output folder (default: runs/qc/<records name>; for compare: "
                                                "where compare.md goes, default A)")
    p.add_argument("--image-folder", default=None,
                   help="folder image paths are relative to (default: the records' folder, or its images/)")
    p.add_argument("--cache", default=None, help="stats cache file (default: OUT/cache.sqlite)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set ops.0.min=50 (repeatable)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG histograms (report.md/json still written)")
    p.add_argument("--all-stats", action="store_true", help="also compute the ops marked `report_only: true`")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where the operators run: in this process (default) or on Ray Data (pip install 'allava[ray]')")
    p.add_argument("--ray-address", default=None,
                   help="with --executor ray: 'auto' joins the running cluster, ray://HOST:PORT a remote one "
                        "(default: start a local Ray)")
    p.add_argument("--no-progress", action="store_true")


def run_qc(args: argparse.Namespace) -> int:
    from allava.config import ConfigError

    if args.inputs[0] == "compare":
        from allava.quality.report import compare

        if len(args.inputs) != 3:
            raise ConfigError("usage: allava qc compare A B (two QC output folders)")
        target = Path(args.out or args.inputs[1]) / "compare.md"
        print(compare(args.inputs[1], args.inputs[2], target), end="")
        print(f"qc compare: written to {target}", file=sys.stderr)
        return 0
    if len(args.inputs) != 1:
        raise ConfigError("give one records file (or `compare A B`)")
    from allava.quality.config import load_config
    from allava.quality.pipeline import run_qc_pipeline

    records = Path(args.inputs[0])
    cfg = load_config(args.config or DEFAULT_CONFIG, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / "qc" / records.stem
    from allava.quality.executor import make_executor

    if args.ray_address and args.executor != "ray":
        raise ConfigError("--ray-address needs --executor ray")
    executor = make_executor(args.executor, args.ray_address)
    try:
        run = run_qc_pipeline(records, cfg, out, image_folder=args.image_folder,
                              cache_path=args.cache if args.cache else "default", progress=not args.no_progress,
                              plots=not args.no_plots, all_stats=args.all_stats, executor=executor)
    finally:
        executor.close()
    computed = sum(v for k, v in run.computed.items() if ":finalize" not in k)
    print(f"qc: {len(run.ids)} records, {run.kept} kept, {run.removed} removed, {len(run.problems)} bad input "
          f"entries; stats computed for {computed} op-records (rest cached) in {run.seconds:.1f}s")
    for p in run.problems[:5]:
        print(f"qc: bad input {p.record_id} (line {p.line}): {p.reason}")
    print(f"qc: {out / 'kept.jsonl'}, {out / 'removed.jsonl'}, report {out / 'report.md'}")
    return 0
