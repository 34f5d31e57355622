"""``allava eval run|score|report``: wired into the main CLI as the ``eval`` verb.

    allava eval run --model DIR --benchmark NAME --data PATH --out DIR [--limit N] [--batch-size N]
    allava eval score --benchmark NAME --data PATH --predictions FILE
    allava eval report RUN_DIR... [--conventions]
    allava eval list
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from allava.config import ConfigError


def add_eval_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="eval_verb", required=True)

    r = sub.add_parser("run", help="answer a benchmark with a checkpoint (resumes) and score it")
    r.add_argument("--model", required=True, help="checkpoint folder (ours or any llava-hf one)")
    _common(r)
    r.add_argument("--out", required=True, help="run folder: predictions.jsonl, metrics.json, answer cache")
    r.add_argument("--limit", type=int, help="first N questions only (smoke tests)")
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--max-new-tokens", type=int, help="default: the benchmark's own (128, 1024 for open answers)")
    r.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="load the model in this dtype")
    r.add_argument("--device", help="e.g. cuda, cuda:1 (default: where the model loads, the CPU)")
    r.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("score", help="score an existing predictions file (LLaVA answer format), no model")
    _common(s)
    s.add_argument("--predictions", required=True, help="answers: LLaVA JSONL (question_id, text), lmms-eval "
                   "--log_samples JSONL, or a VLMEvalKit .xlsx/.tsv with a prediction column (found by content)")

    rep = sub.add_parser("report", help="one Markdown table across run folders")
    rep.add_argument("runs", nargs="+", help="run folders (each with metrics.json)")
    rep.add_argument("--conventions", action="store_true",
                     help="add a column per other anchor's convention (llava, vlmevalkit, lmms-eval, ...)")

    sub.add_parser("list", help="the registered benchmarks, what --data they read, and their conventions")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", required=True, help="benchmark name (`allava eval list` shows them)")
    p.add_argument("--data", required=True, help="the benchmark's released files (folder or file)")
    p.add_argument("--judge-base-url", help="OpenAI-compatible endpoint for judge-scored benchmarks")
    p.add_argument("--judge-model", help="judge model name (e.g. gpt-4-0613); enables the judge")
    p.add_argument("--judge-api-key-env", default="OPENAI_API_KEY")
    p.add_argument("--letter-rules", help="multiple-choice letter extraction (MMBench, SEED): vlmevalkit (current, "
                   "default), vlmevalkit-2025-08 or vlmevalkit-2024 (the rules older papers' numbers used)")


def run_eval(args: argparse.Namespace) -> int:
    if args.eval_verb == "run":
        metrics = cmd_run(args)
        print(json.dumps({"benchmark": metrics["benchmark"], **metrics["headline"],
                          "out": str(args.out)}))
        return 0
    if args.eval_verb == "score":
        print(json.dumps(cmd_score(args), indent=2))
        return 0
    if args.eval_verb == "list":
        print(cmd_list())
        return 0
    print(cmd_report([Path(r) for r in args.runs], conventions=args.conventions))
    return 0


def cmd_list() -> str:
    from allava.evaluate.benchmarks import BENCHMARKS, get_benchmark

    get_benchmark("synthetic")  # loads the built-in modules
    lines = []
    for name in sorted(BENCHMARKS):
        b = BENCHMARKS[name]
        judge = " (judge)" if b.needs_judge else ""
        lines.append(f"{name}{judge}\n  --data: {b.data_help}\n  convention: {b.convention}")
    return "\n".join(lines)


def _judge(args: argparse.Namespace, bench, cache_dir: Path):
    if not getattr(args, "judge_model", None):
        if bench.needs_judge:
            raise ConfigError(f"benchmark {bench.name} is scored by a judge: pass --judge-model "
                              "(and --judge-base-url for a non-OpenAI endpoint)")
        return None
    from allava.evaluate.judge import OpenAIJudge

    if not args.judge_base_url and not os.environ.get(args.judge_api_key_env):
        raise ConfigError(f"the judge needs an API key in ${args.judge_api_key_env} "
                          "(or --judge-base-url for a local endpoint)")
    return OpenAIJudge(args.judge_base_url, args.judge_model, cache_dir, args.judge_api_key_env)


def _load(args: argparse.Namespace):
    from allava.evaluate.benchmarks import BenchmarkError, get_benchmark

    bench = get_benchmark(args.benchmark)
    if getattr(args, "letter_rules", None):
        from allava.evaluate.metrics.choice import letter_rules

        letter_rules(args.letter_rules)  # unknown names: a one-line error
        if not hasattr(bench, "letter_rules"):
            raise ConfigError(f"--letter-rules applies to multiple-choice benchmarks (mmbench, seed), not {bench.name}")
        bench.letter_rules = args.letter_rules
    data = Path(args.data)
    if not data.exists():
        raise bench.missing(data)
    try:
        return bench, bench.load(data)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise BenchmarkError(f"{bench.name}: {data}: not in the released format ({type(e).__name__}: {e}); "
                             f"--data must be {bench.data_help}") from None


def cmd_run(args: argparse.Namespace, answer_fn=None) -> dict[str, Any]:
    """`answer_fn` (a factory returning ``(questions, max_new_tokens) -> texts``) lets callers and
    tests swap the model; by default the checkpoint is loaded only if something is not cached."""
    from allava.evaluate.runner import (
        CACHE_FILE,
        AnswerStore,
        GenerationSettings,
        generate,
        model_fingerprint,
        write_predictions,
    )

    for flag in ("limit", "batch_size", "max_new_tokens"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1")
    bench, samples = _load(args)
    if args.limit:
        samples = bench.limit(samples, args.limit)
    fp = model_fingerprint(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = GenerationSettings(args.max_new_tokens or bench.max_new_tokens, dtype=args.dtype)

    def load_model():
        from allava.evaluate.generate import Answerer

        return Answerer(args.model, dtype=args.dtype, device=args.device).answer

    judge = _judge(args, bench, out)  # before generating: a missing judge fails fast
    store = AnswerStore(out / CACHE_FILE)
    try:
        answers, rep = generate(bench, samples, answer_fn or load_model, store, fp, settings, args.batch_size,
                                progress=not args.no_progress)
    finally:
        store.close()
    write_predictions(out / "predictions.jsonl", samples, answers, Path(args.model).name)
    metrics = {"benchmark": bench.name, "model": str(args.model), "model_fingerprint": fp, "data": str(args.data),
               **bench.score(samples, answers, judge),
               "generation": {"max_new_tokens": settings.max_new_tokens, "greedy": True, "dtype": settings.dtype,
                              "batch_size": args.batch_size, "generated": rep.generated, "cached": rep.cached,
                              "answers_per_s": round(rep.answers_per_s, 3)}}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    return metrics


def cmd_score(args: argparse.Namespace) -> dict[str, Any]:
    from allava.evaluate.answers import read_answers

    bench, samples = _load(args)
    rows, fmt = read_answers(args.predictions)
    answers = bench.match(samples, rows)
    if not answers:
        raise ConfigError(f"{args.predictions}: no question_id matches {bench.name} questions in {args.data} "
                          f"(read as a {fmt} answer file)")
    judge = _judge(args, bench, Path(args.predictions).parent)
    return {"benchmark": bench.name, "predictions": str(args.predictions), "answer_format": fmt,
            "answers_read": len(rows), "answers_matched": len(answers), "data": str(args.data),
            **bench.score(samples, answers, judge)}


def cmd_report(runs: list[Path], conventions: bool = False) -> str:
    """Rows: models; columns: every headline number (and, with `conventions`, the same predictions
    under each other anchor's convention, as ``label (name)``); footnotes: each benchmark's convention."""
    rows: dict[str, dict[str, Any]] = {}
    columns: list[str] = []
    notes: dict[str, str] = {}
    for run in runs:
        path = run / "metrics.json" if run.is_dir() else run
        try:
            m = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{run}: no metrics.json (not an `allava eval run` folder)") from None
        except ValueError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        model = Path(m.get("model", run.name)).name or str(run)
        cells = dict(m.get("headline", {}))
        if conventions:
            for name, head in (m.get("conventions") or {}).items():
                cells.update({f"{label} ({name})": v for label, v in head.items()})
        for label, value in cells.items():
            if label not in columns:
                columns.append(label)
            rows.setdefault(model, {})[label] = value
        notes[m.get("benchmark", run.name)] = m.get("convention", "")
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for model, vals in rows.items():
        lines.append(f"| {model} | " + " | ".join(_fmt(vals.get(c)) for c in columns) + " |")
    lines.append("")
    lines += [f"- **{b}**: {c}" for b, c in notes.items()]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m allava.evaluate.cli``) until the verb is wired into ``allava``."""
    from allava.errors import USER_ERRORS

    parser = argparse.ArgumentParser(prog="allava eval")
    add_eval_parser(parser)
    args = parser.parse_args(argv)
    try:
        return run_eval(args)
    except USER_ERRORS as e:
        print(f"allava eval: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
