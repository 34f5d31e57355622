"""`allava synth TASK ...`, `allava synth merge ...`, `allava synth export ...`.

One argparse sub-command per registered task, so `allava synth allava-laion -h` lists exactly the
options that task reads; every run option lands in one `SynthConfig`.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from allava.synth.config import SynthConfig, parse_shard

# Options some built-in tasks read in `bind(out_dir, args)` (tasks may add theirs with `add_arguments`).
TASK_OPTIONS: dict[str, list[tuple[str, dict]]] = {
    "llava-symbolic": [("--response-types", {"nargs": "+", "help": "conversation, detailed, complex (default: all)"})],
    "caption-expand": [("--long-caption-words",
                        {"type": int, "help": "captions at least this long get the detailed instruction list"})],
    "stablellava": [("--dialogue-turns", {"type": int, "help": "turns per generated dialogue (default 3)"})],
}
RUN_FIELDS = {"images", "out", "teacher", "base_url", "model", "api_key_env", "concurrency", "rpm", "tpm",
              "budget_usd", "price_in", "price_out", "prices", "limit", "max_image_side", "image_detail",
              "max_tokens", "timeout", "max_retries", "min_short_edge", "image_folder", "cache", "no_cache",
              "retry_rejects"}


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--images", help="folder, JSON/JSONL records, scenes:N[@SEED], abilities:N or t2i:PROMPTS (.txt/.jsonl)")
    a("--out", required=True, type=Path, help="run folder (rerun the same command to resume)")
    a("--teacher", default="openai", help="openai (any OpenAI-compatible endpoint) or scene (offline)")
    a("--base-url", help="endpoint, e.g. http://localhost:8000/v1 (default: OpenAI)")
    a("--model", default="gpt-4o-mini", help="teacher model name at the endpoint (priced by configs/prices.yaml)")
    a("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    a("--concurrency", type=int, default=16, help="requests in flight")
    a("--rpm", type=float, help="requests per minute limit")
    a("--tpm", type=float, help="tokens per minute limit (prompt estimate + max_tokens per request)")
    a("--budget-usd", type=float, help="hard spending ceiling for this run folder, all reruns included")
    a("--price-in", type=float, help="USD per 1M input tokens (overrides configs/prices.yaml)")
    a("--price-out", type=float, help="USD per 1M output tokens")
    a("--prices", type=Path, help="price table YAML (default: configs/prices.yaml)")
    a("--shard", default="0/1", help="I/N: this machine's share (0-based), split by a hash of the id")
    a("--limit", type=int, help="only the first N items of the (sharded) source")
    a("--max-image-side", type=int, default=1024, help="resize images so the longest side is at most this")
    a("--image-detail", default="auto", choices=["auto", "low", "high"],
      help="OpenAI image detail: low = 85 tokens an image, high = tiles (cost)")
    a("--max-tokens", type=int, default=2048, help="answer length cap (also the budget's output estimate)")
    a("--timeout", type=float, default=120.0, help="seconds per request")
    a("--max-retries", type=int, default=6, help="retries of a failed request (429/5xx/timeouts), with backoff")
    a("--min-short-edge", type=int, default=0, help="reject images whose short edge is below this (ALLaVA: 512)")
    a("--image-folder", type=Path, help="root for relative image paths of a JSONL source (default: its folder)")
    a("--cache", type=Path, help="answer cache (default: OUT/cache.sqlite); share it between runs")
    a("--no-cache", action="store_true", help="neither read nor write the answer cache (every call paid)")
    a("--retry-rejects", action="store_true", help="retry the items in rejects.jsonl (fresh calls)")
    a("--no-progress", action="store_true")
    g = p.add_argument_group("image generation (stablellava, and --images t2i:FILE)")
    g.add_argument("--imagegen", help="scenes (offline default) or diffusers")
    g.add_argument("--imagegen-model", help="diffusers pipeline path or hub id")
    g.add_argument("--image-size", type=int, help="generated image side in pixels")
    g.add_argument("--imagegen-steps", type=int, help="diffusers denoising steps (default 30; 1-4 for turbo/LCM)")
    g.add_argument("--imagegen-guidance", type=float, help="diffusers guidance scale (default 7.5; ~0 for turbo)")


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    kw = {k: getattr(args, k) for k in RUN_FIELDS}
    extra = {k: v for k, v in vars(args).items() if k not in RUN_FIELDS and k not in ("run", "synth_verb", "verb")}
    return SynthConfig(task=args.synth_verb, shard=parse_shard(args.shard), progress=not args.no_progress,
                       extra=extra, **kw)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Build `allava synth` (also used by the top-level CLI)."""
    from allava.synth.base import TASKS
    from allava.synth.runner import load_registries

    load_registries(teachers=False)
    sub = p.add_subparsers(dest="synth_verb", required=True, metavar="TASK|merge|export")
    for name in sorted(TASKS):
        cls = TASKS[name]
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or name).strip().split(". ")[0]
        doc = doc.replace(f"`{name}`: ", "").replace("\n", " ")
        tp = sub.add_parser(name, help=doc, description=doc)
        add_run_arguments(tp)
        if hasattr(cls, "add_arguments"):
            cls.add_arguments(tp)
        else:
            for flag, kw in TASK_OPTIONS.get(name, []):
                tp.add_argument(flag, **kw)
    mp = sub.add_parser("merge", help="join shard outputs; fails if an id is missing or doubled")
    mp.add_argument("out", type=Path, help="merged run folder")
    mp.add_argument("shards", type=Path, nargs="+", help="shard run folders")
    ep = sub.add_parser("export", help="write LLaVA training files (stage 1 captions, stage 2 instructions)")
    ep.add_argument("dir", type=Path, help="run folder")
    ep.add_argument("--to", default="llava", choices=["llava"], help="training file format")
    ep.add_argument("--out", type=Path, help="output folder (default: DIR/llava)")


def run(args: argparse.Namespace) -> int:
    verb = args.synth_verb
    if verb == "merge":
        from allava.synth.merge import describe_merge, merge

        report = merge(args.out, args.shards)
        print(describe_merge(report))
        return 0 if report["ok"] else 1
    if verb == "export":
        from allava.synth.export import export

        out = args.out or args.dir / args.to
        counts = export(args.dir, out, to=args.to)
        print(", ".join(f"{n} {split} records" for split, n in counts.items()) + f" written to {out}")
        print(f"image paths are relative to {image_root(args.dir)}: give it as image_folder when training")
        return 0
    from allava.synth.runner import EXIT, describe, synth

    cfg = config_from_args(args)
    summary = synth(cfg, args)
    print(describe(summary))
    if summary["status"] == "budget_exhausted":
        print(f"allava synth: budget of ${cfg.budget_usd:g} reached (${summary['cost_usd']:.4f} spent, "
              f"{summary['pending']} items pending); rerun the same command with a higher --budget-usd to continue",
              file=sys.stderr)
    elif summary["status"] == "interrupted":
        print("allava synth: interrupted; rerun the same command to resume", file=sys.stderr)
    return EXIT.get(summary["status"], 1)


def main(argv: list[str] | None = None) -> int:
    """`python -m allava.synth.cli ...`: the same as `allava synth ...`, faster to start (no transformers)."""
    p = argparse.ArgumentParser(prog="allava synth")
    p.add_argument("-v", "--verbose", action="store_true")
    add_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return run(args)
    except Exception as e:
        from allava.errors import (
            USER_ERRORS,  # imported late: it loads the tokenizer stack
        )

        if args.verbose or not isinstance(e, USER_ERRORS):
            raise
        print(f"allava synth: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("allava synth: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())


def image_root(run_dir: Path) -> Path:
    """The folder the run's image paths are relative to: the source folder, the JSONL's image
    folder (or its own folder), or the run folder for generated images (scenes:, abilities:)."""
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        return run_dir
    summary = json.loads(summary_path.read_text())
    source, folder = Path(str(summary.get("source"))), (summary.get("source_options") or {}).get("image_folder")
    if folder:
        return Path(folder)
    if source.is_dir():
        return source
    if source.is_file():
        return source.parent
    return run_dir
