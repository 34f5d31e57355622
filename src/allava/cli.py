"""The ``allava`` command: one entry point, one sub-command per verb.

User mistakes (a missing file, a bad config key, invalid data) end with a one-line message and a
non-zero exit code, never a traceback.
"""
from __future__ import annotations

import argparse
import logging
import math
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
    p.add_argument("--config", required=True,
                   help="recipe YAML, a path or a shipped name: allava-phi2, llava-v1.5-7b")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. stages.stage1.lr=1e-4")
    p.add_argument("--no-progress", action="store_true")

    def run(args) -> int:
        from allava.config import resolve_config
        from allava.train.stages import load_recipe, run_recipe

        recipe = load_recipe(resolve_config(args.config), args.overrides)
        from allava.train.preflight import check_recipe
        from allava.train.stages import last_checkpoint

        check_recipe(recipe)  # data files, image folders, a changed recipe: before any model is built
        # under torchrun / accelerate launch every process runs this: the first one speaks
        say = print if int(os.environ.get("RANK", "0")) == 0 else (lambda *a, **k: None)
        for name, cfg in recipe.stages.items():
            stage_dir = Path(recipe.output_dir) / name
            resume = last_checkpoint(stage_dir) if cfg.enabled and not (stage_dir / "summary.json").exists() else None
            if resume:
                say(f"{name}: resuming from {Path(resume).name} ({stage_dir})", flush=True)
        for r in run_recipe(recipe, progress=not args.no_progress):
            state = "already done" if r.skipped else f"{r.steps} steps, {r.tokens_per_s:.0f} tokens/s"
            say(f"{r.name}: {state} -> {r.model_dir}")
            if r.data.get("skipped"):
                files = ", ".join(d.path for d in recipe.stages[r.name].data)
                say(f"{r.name}: skipped {sum(r.data['skipped'].values())} invalid records of {files}: "
                      f"{r.data['skipped']} (listed in {Path(r.model_dir).parent / 'summary.json'})")
        return 0
    return run


@verb("export", "write a checkpoint as a plain transformers folder (a LoRA stage merged with --merge-lora)")
def _export(p: argparse.ArgumentParser):
    p.add_argument("model", metavar="DIR", help="checkpoint folder: a stage's final/ (full or LoRA) or any llava-hf one")
    p.add_argument("--out", required=True, help="folder to write the plain LlavaForConditionalGeneration into")
    p.add_argument("--merge-lora", action="store_true", help="fold a LoRA stage's adapters into its base weights")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="write the weights in this dtype")

    def run(args) -> int:
        from allava.model.export import export

        done = export(args.model, args.out, merge_lora=args.merge_lora, dtype=args.dtype)
        merged = (f"LoRA r={done['merged_lora']['r']} merged over {done['merged_lora']['base']}"
                  if done["merged_lora"] else "full model")
        print(f"exported {args.model} -> {done['out']} ({merged}; {done['parameters']:,} parameters, {done['dtype']})")
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
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest answer, in tokens")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy; above 0 samples")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling share (with --temperature)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the CPU)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="load the model in this dtype")
    p.add_argument("--system", help="system prompt replacing the template's own")

    def run(args) -> int:
        from allava.config import ConfigError

        if args.max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
        if not math.isfinite(args.temperature) or args.temperature < 0:
            raise ConfigError(f"--temperature must be a number >= 0, got {args.temperature}")
        if not 0 < args.top_p <= 1:
            raise ConfigError(f"--top-p must be in (0, 1], got {args.top_p}")
        if args.top_p < 1 and args.temperature == 0:
            raise ConfigError(f"--top-p {args.top_p} has no effect with greedy decoding: add --temperature T (> 0)")
        if args.image is not None and not Path(args.image).is_file():
            raise ConfigError(f"--image {args.image}: file does not exist")
        if args.image is not None:  # before the model loads, not after
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(args.image) as im:
                    im.verify()
            except (UnidentifiedImageError, OSError, SyntaxError) as e:
                reason = "not an image file" if isinstance(e, UnidentifiedImageError) else f"unreadable image ({e})"
                raise ConfigError(f"--image {args.image}: {reason}") from None
        from allava.evaluate.generate import Answerer, check_device
        from allava.serve.chat import Chat, banner, run_chat

        if args.device:
            check_device(args.device)
        answerer = Answerer(args.model, dtype=args.dtype, device=args.device)
        if args.system:
            answerer.set_system(args.system)
        chat = Chat(answerer, args.image, args.max_new_tokens, args.temperature, args.top_p)
        run_chat(chat, interactive=sys.stdin.isatty(), title=banner(args.model, answerer.template, args.image))
        return 0
    return run


@verb("serve", "the assistant behind an OpenAI-compatible API and a chat page (batched)")
def _serve(p: argparse.ArgumentParser):
    from allava.serve.cli import add_serve_arguments, run_serve

    add_serve_arguments(p)
    return run_serve


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
    p.add_argument("--config", help="quickstart YAML, a path or a shipped name (default: configs/quickstart.yaml)")
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

        from allava.config import resolve_config

        cfg = load_quickstart_config(resolve_config(args.config) if args.config else None, args.overrides)
        if args.qc_config:
            args.qc_config = str(resolve_config(args.qc_config, "qc"))
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


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default where it has a meaningful one (not None / False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or "default" in text.lower() or default in (None, False, argparse.SUPPRESS)
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction)) or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


DEFAULT_HELP = {
    "no_progress": "no progress bars (the one-line summaries are still printed)",
}


def _walk(parser: argparse.ArgumentParser, nested: dict[str, argparse.ArgumentParser], path: str = "") -> None:
    """Every (sub-)parser gets the defaults-showing formatter and the common helps; a sub-command
    that needs a verb of its own (`allava data`, `allava eval`) prints its choices instead of
    argparse's `required: data_verb`."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if action.help is None and action.dest in DEFAULT_HELP:
            action.help = DEFAULT_HELP[action.dest]
        if isinstance(action, argparse._SubParsersAction):
            if path:
                action.required = False
                nested[path] = parser
            for name, child in action.choices.items():
                _walk(child, nested, f"{path} {name}".strip())


NESTED: dict[str, argparse.ArgumentParser] = {}


def build_parser() -> argparse.ArgumentParser:
    from allava import __version__

    parser = argparse.ArgumentParser(prog="allava", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"allava {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs and tracebacks")
    sub = parser.add_subparsers(dest="verb", required=True)
    for name, (help, add) in VERBS.items():
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(run=add(p))
    _walk(parser, NESTED)
    return parser


def _missing_sub_verb(args: argparse.Namespace) -> str | None:
    """The nested parser whose own verb was not given (None when all were)."""
    for path, parser in NESTED.items():
        if path == args.verb:
            dest = next(a.dest for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            if getattr(args, dest, None) is None:
                choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
                return f"allava {path}: choose one of: {', '.join(choices)} (allava {path} VERB -h for its options)"
    return None


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = _missing_sub_verb(args)
    if missing:
        print(missing, file=sys.stderr)
        return 2
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
    except BrokenPipeError:  # `allava ... | head`: the reader left; files are already written
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"allava {args.verb}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
