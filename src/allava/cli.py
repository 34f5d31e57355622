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


@verb("quickstart", "offline end-to-end run: synthetic world, stage 0/1/2 training, evaluation, report")
def _quickstart(p: argparse.ArgumentParser):
    p.add_argument("--out", default="runs/quickstart", help="output folder (rerun to resume)")
    p.add_argument("--config", help="quickstart YAML (default: configs/quickstart.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. world.n_train_images=500")
    p.add_argument("--skip-stage1", action="store_true", help="stage 2 alone (the ALLaVA Table 6 ablation)")
    p.add_argument("--no-ablation", action="store_true", help="do not also train the stage-2-only model")
    p.add_argument("--inject-noise", type=float, default=0.0, metavar="RATE",
                   help="also replace RATE of the stage-2 records by bad ones and train stage 2 on them")
    p.add_argument("--qc", action="store_true", help="with --inject-noise: QC the noisy data, train on what it keeps")
    p.add_argument("--qc-config", help="QC YAML for --qc (default: configs/qc/default.yaml)")

    def run(args) -> int:
        from allava.quickstart import load_quickstart_config, run_quickstart

        cfg = load_quickstart_config(args.config, args.overrides)
        run_quickstart(args.out, cfg, skip_stage1=args.skip_stage1, ablation=not args.no_ablation,
                       inject_noise=args.inject_noise, qc=args.qc, qc_config=args.qc_config)
        print((Path(args.out) / "report.md").read_text())
        print(f"report: {Path(args.out) / 'report.md'} (machine-readable: report.json)")
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
