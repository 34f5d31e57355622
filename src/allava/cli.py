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
