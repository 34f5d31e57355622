"""The ``allava`` command: one entry point, one sub-command per verb.

User mistakes (a missing file, a bad config key, invalid data) end with a one-line message and a
non-zero exit code, never a traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

VERBS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def verb(name: str, help: str):
    """Register a sub-command: the decorated function adds arguments and returns the runner."""
    def wrap(fn):
        VERBS[name] = (help, fn)
        return fn
    return wrap


@verb("train", "two-stage training from a YAML recipe (resumes when rerun)")
def _train(p: argparse.ArgumentParser):
    p.add_argument("--config", required=True, help="recipe YAML, e.g. configs/allava-phi2.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. stages.stage1.lr=1e-4")
    p.add_argument("--no-progress", action="store_true")

    def run(args) -> int:
        from allava.train.stages import load_recipe, run_recipe

        recipe = load_recipe(args.config, args.overrides)
        for r in run_recipe(recipe, progress=not args.no_progress):
            state = "already done" if r.skipped else f"{r.steps} steps, {r.tokens_per_s:.0f} tokens/s"
            print(f"{r.name}: {state} -> {r.model_dir}")
            if r.data.get("skipped"):
                print(f"{r.name}: skipped invalid records: {r.data['skipped']}")
        return 0
    return run


@verb("data", "inspect and validate LLaVA-format data")
def _data(p: argparse.ArgumentParser):
    from allava.data.validate import add_validate_parser, run_validate

    sub = p.add_subparsers(dest="data_verb", required=True)
    add_validate_parser(sub)
    return run_validate


@verb("chat", "talk with a saved checkpoint about an image (multi-turn)")
def _chat(p: argparse.ArgumentParser):
    p.add_argument("--model", required=True, help="checkpoint folder (ours or any llava-hf one)")
    p.add_argument("--image", help="image to talk about (omit for a text-only chat)")
    p.add_argument("--max-new-tokens", type=int, default=256)

    def run(args) -> int:
        from allava.evaluate.generate import Answerer
        from allava.serve.chat import Chat, run_chat

        chat = Chat(Answerer(args.model), args.image, args.max_new_tokens)
        run_chat(chat, interactive=sys.stdin.isatty())
        return 0
    return run


@verb("synth", "synthesize training data with a teacher (resumable, rate-limited, budgeted)")
def _synth(p: argparse.ArgumentParser):
    from allava.synth.cli import add_arguments, run

    add_arguments(p)
    return run


@verb("qc", "quality control by the ten principles of the VLIT review: stats, then decisions, with a report")
def _qc(p: argparse.ArgumentParser):
    from allava.quality.cli import add_qc_parser, run_qc

    add_qc_parser(p)
    return run_qc


@verb("eval", "benchmarks from their own files with the anchors' exact metrics: run, score, report")
def _eval(p: argparse.ArgumentParser):
    from allava.evaluate.cli import add_eval_parser, run_eval

    add_eval_parser(p)
    return run_eval


# Flags of earlier versions, each with the one line that names its new form
OLD_QUICKSTART_FLAGS = {
    "skip_stage1": "--skip-stage1 is gone: stage 2 alone is the Table 6 study: "
                   "allava quickstart --out DIR --study table6",
    "no_ablation": "--no-ablation is gone: the default run has no ablation any more "
                   "(the ablations are studies: allava quickstart --out DIR --study table6|noise)",
    "qc": "--qc is gone: the noise study always runs QC: allava quickstart --out DIR --study noise "
          "[--inject-noise RATE] [--qc-config PATH]",
}


@verb("quickstart", "offline end-to-end run: synthetic world, stage 0/1/2 training, evaluation, report; "
                    "--study table6|noise for the papers' ablations")
def _quickstart(p: argparse.ArgumentParser):
    p.add_argument("--out", default="runs/quickstart", help="output folder (rerun to resume)")
    p.add_argument("--config", help="quickstart YAML (default: configs/quickstart.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. world.n_train_images=500")
    p.add_argument("--study", choices=("table6", "noise"),
                   help="after the default run (resumed if done): table6 = stage 2 alone vs stage 1 + 2 "
                        "(ALLaVA Table 6); noise = noisy vs QC'd stage-2 data (the VLIT review's Table 2). "
                        "Report in OUT/studies/<name>/")
    p.add_argument("--inject-noise", type=float, default=None, metavar="RATE",
                   help="--study noise: share of the stage-2 image records replaced by bad ones (default 0.2)")
    p.add_argument("--qc-config", help="--study noise: QC YAML (default: configs/qc/default.yaml)")
    for flag in ("--skip-stage1", "--no-ablation", "--qc"):
        p.add_argument(flag, action="store_true", help=argparse.SUPPRESS)

    def run(args) -> int:
        from allava.config import ConfigError

        for dest, message in OLD_QUICKSTART_FLAGS.items():
            if getattr(args, dest):
                raise ConfigError(message)
        if args.study != "noise" and (args.inject_noise is not None or args.qc_config):
            raise ConfigError("--inject-noise / --qc-config belong to the noise study: "
                              "allava quickstart --out DIR --study noise [--inject-noise RATE] [--qc-config PATH]")
        from allava.studies import run_study
        from allava.studies.quickstart import load_quickstart_config, run_quickstart

        cfg = load_quickstart_config(args.config, args.overrides)
        out = Path(args.out)
        if args.study is None:
            run_quickstart(out, cfg)
            report = out / "report.md"
        else:
            options = {"rate": args.inject_noise if args.inject_noise is not None else 0.2,
                       "qc_config": args.qc_config} if args.study == "noise" else {}
            run_study(args.study, out, cfg, **options)
            report = out / "studies" / args.study / "report.md"
        print(report.read_text())
        print(f"report: {report} (machine-readable: report.json)")
        return 0
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="allava", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs and tracebacks")
    sub = parser.add_subparsers(dest="verb", required=True)
    for name, (help, add) in VERBS.items():
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(run=add(p))
    return parser


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:
        _quiet_libraries()
    from allava.errors import USER_ERRORS

    try:
        return int(args.run(args) or 0)
    except USER_ERRORS as e:
        if args.verbose:
            raise
        print(f"allava {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"allava {args.verb}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
