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
    r.add_argument("--model", required=True, help="checkpoint folder (ours or any llava-hf one); with --base-url "
                   "the endpoint's model name")
    r.add_argument("--base-url", help="answer through this OpenAI-compatible endpoint (allava serve, vLLM, SGLang, "
                   "...) instead of loading --model here")
    r.add_argument("--api-key-env", default="OPENAI_API_KEY", help="--base-url: environment variable holding its key")
    r.add_argument("--concurrency", type=int, default=8, help="--base-url: requests in flight")
    _common(r)
    r.add_argument("--out", required=True, help="run folder: predictions.jsonl, metrics.json, answer cache")
    r.add_argument("--limit", type=int, help="N questions only, interleaved over the benchmark's groups "
                   "(ability, category, split) so every group is in the subset (smoke tests)")
    r.add_argument("--batch-size", type=int, default=8, help="questions generated together")
    r.add_argument("--max-new-tokens", type=int, help="default: the benchmark's own (128, 1024 for open answers)")
    r.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="load the model in this dtype")
    r.add_argument("--device", help="e.g. cuda, cuda:1 (default: where the model loads, the CPU)")
    r.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("score", help="score an existing predictions file (LLaVA answer format), no model")
    _common(s)
    s.add_argument("--out", help="metrics file to write (default: <predictions>.metrics.json beside it)")
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
    p.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable holding the judge's key")
    p.add_argument("--letter-rules", help="multiple-choice letter extraction (MMBench, SEED): vlmevalkit (current, "
                   "default), vlmevalkit-2025-08 or vlmevalkit-2024 (the rules older papers' numbers used)")


def run_eval(args: argparse.Namespace) -> int:
    if args.eval_verb == "run":
        metrics = cmd_run(args)
        print(headline_line(metrics, Path(args.out) / "metrics.json"))
        return 0
    if args.eval_verb == "score":
        metrics = cmd_score(args)
        print(json.dumps(metrics, indent=2))
        print(f"metrics: {metrics['metrics_file']}", file=sys.stderr)
        return 0
    if args.eval_verb == "list":
        print(cmd_list())
        return 0
    print(cmd_report([Path(r) for r in args.runs], conventions=args.conventions))
    return 0


def headline_line(metrics: dict[str, Any], path: Path) -> str:
    """One line, every number labelled with its unit: the headline as the anchors print it (percent,
    or MME's score sum) and the coverage as counts."""
    c = metrics.get("coverage") or {}
    heads = ", ".join(f"{k} {v}" for k, v in metrics["headline"].items())
    if not heads:  # answered, not scored (VQAv2 test-dev)
        return f"{metrics['benchmark']}: not scored: {metrics.get('note', 'no gold answers')} -> {path}"
    cov = f" on {c['answered']} of {c['questions']} questions" if c else ""
    sub = f" (--limit: {metrics['limit']['note']})" if metrics.get("limit") else ""
    return f"{metrics['benchmark']}: {heads} (headline as the anchor reports it){cov}{sub} -> {path}"


def _coverage(bench, samples: list, answers: dict[str, str]) -> dict[str, Any]:
    """How many of the benchmark's questions the score covers; a warning when not all."""
    answered = sum(1 for s in samples if s.question_id in answers)
    cov = {"answered": answered, "questions": len(samples), "share": round(answered / max(1, len(samples)), 4)}
    if answered < len(samples):
        print(f"allava eval: warning: {bench.name}: {answered} of {len(samples)} questions answered "
              f"({100 * cov['share']:.1f}%); the score covers only those (metrics.json: coverage)", file=sys.stderr)
    return cov


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
    except BenchmarkError as e:
        if bench.data_help and "--data must be" not in str(e):  # "X: no such file" alone leaves the user guessing
            raise BenchmarkError(f"{e}; --data must be {bench.data_help}") from None
        raise
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

    remote = getattr(args, "base_url", None)
    for flag in ("limit", "batch_size", "max_new_tokens") + (("concurrency",) if remote else ()):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1")
    if remote and (args.device or args.dtype):
        raise ConfigError("--device / --dtype apply to a local --model, not to --base-url (the endpoint decides)")
    if args.device:
        from allava.evaluate.generate import check_device

        check_device(args.device)
    from allava.model.paths import check_model_path

    if not remote:
        check_model_path(str(args.model), "--model")
    bench, samples = _load(args)
    limit = None
    if args.limit:
        total = len(samples)
        key = bench.stratum(samples)
        samples = bench.limit(samples, args.limit)
        note = (f"{len(samples)} of {total} questions, interleaved over {key}" if key
                else f"the first {len(samples)} of {total} questions")
        limit = {"n": args.limit, "questions": len(samples), "of": total, "stratified_by": key, "note": note}
        print(f"allava eval: --limit {args.limit}: {note}", file=sys.stderr)
    if remote:
        from allava.evaluate.remote import remote_fingerprint

        fp = remote_fingerprint(remote, args.model)
    else:
        fp = model_fingerprint(args.model)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file in the way: "[Errno 17] File exists" said nothing of --out
        why = "a file is in the way" if out.exists() else e.strerror
        raise ConfigError(f"--out {out}: cannot be the run folder ({why})") from None
    lock = _lock(out)
    try:
        settings = GenerationSettings(args.max_new_tokens or bench.max_new_tokens, dtype=args.dtype)

        def load_model():
            if remote:
                from allava.evaluate.remote import RemoteAnswerer

                return RemoteAnswerer(remote, args.model, out, args.api_key_env, args.concurrency).answer
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
        metrics = {"benchmark": bench.name, "model": str(args.model), **({"base_url": remote} if remote else {}),
                   "model_fingerprint": fp, "data": str(args.data),
                   **bench.score(samples, answers, judge), "coverage": _coverage(bench, samples, answers),
                   **({"limit": limit} if limit else {}),
                   "generation": {"max_new_tokens": settings.max_new_tokens, "greedy": True, "dtype": settings.dtype,
                                  "batch_size": args.batch_size, "generated": rep.generated, "cached": rep.cached,
                                  "answers_per_s": round(rep.answers_per_s, 3)}}
        _write_submission(bench, samples, answers, out, metrics)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    finally:
        lock.close()
    return metrics


def _write_submission(bench, samples: list, answers: dict[str, str], folder: Path, metrics: dict[str, Any],
                      prefix: str = "") -> None:
    """The evaluation server's upload file (VizWiz test), beside metrics.json, named in it."""
    sub = bench.submission(samples, answers)
    if sub is not None:
        path = folder / f"{prefix}{sub[0]}"
        path.write_text(json.dumps(sub[1], ensure_ascii=False))
        metrics["submission_file"] = str(path)


def _lock(out: Path):
    """An exclusive lock on OUT for the run's lifetime: two runs into one folder would interleave
    the answer cache and overwrite each other's predictions. Released when the process ends."""
    import fcntl

    fh = open(out / ".lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise ConfigError(f"{out}: another `allava eval run` is writing there ({holder}); wait for it "
                          "or use another --out") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    return fh


def cmd_score(args: argparse.Namespace) -> dict[str, Any]:
    from allava.evaluate.answers import read_answers

    bench, samples = _load(args)
    rows, fmt = read_answers(args.predictions)
    answers = bench.match(samples, rows)
    if not answers:
        raise ConfigError(f"{args.predictions}: no question_id matches {bench.name} questions in {args.data} "
                          f"(read as a {fmt} answer file)")
    judge = _judge(args, bench, Path(args.predictions).parent)
    pred = Path(args.predictions)
    path = Path(args.out) if getattr(args, "out", None) else pred.with_name(pred.stem + ".metrics.json")
    unused = len(rows) - len(answers)
    if unused:
        print(f"allava eval: warning: {pred}: {unused} of {len(rows)} answers not scored: they match no {bench.name} "
              f"question in {args.data}, or answer one already answered (metrics.json: answers_unused)",
              file=sys.stderr)
    metrics = {"benchmark": bench.name, "predictions": str(args.predictions), "answer_format": fmt,
               "answers_read": len(rows), "answers_matched": len(answers), "answers_unused": unused,
               "data": str(args.data), **bench.score(samples, answers, judge),
               "coverage": _coverage(bench, samples, answers), "metrics_file": str(path)}
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_submission(bench, samples, answers, path.parent, metrics, prefix=f"{pred.stem}.")
    path.write_text(json.dumps(metrics, indent=2, ensure_ascii=False))  # before printing: a closed pipe loses nothing
    return metrics


def cmd_report(runs: list[Path], conventions: bool = False) -> str:
    """Rows: models; columns: every headline number (and, with `conventions`, the same predictions
    under each other anchor's convention, as ``label (name)``); footnotes: each benchmark's convention."""
    rows: dict[str, dict[str, Any]] = {}
    columns: list[str] = []
    notes: dict[str, str] = {}
    loaded = []
    for run in runs:
        path = run / "metrics.json" if run.is_dir() else run
        try:
            m = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{run}: no metrics.json (not an `allava eval run` folder)") from None
        except ValueError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        loaded.append((run, m))
    labels = run_labels([(run, str(m.get("model") or run)) for run, m in loaded])
    for (run, m), model in zip(loaded, labels):
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


def run_labels(runs: list[tuple[Path, str]]) -> list[str]:
    """A unique row label per model: its path without the prefix all models share (stage1/final vs
    stage2/final, not `final` twice); the same model on several benchmarks shares a row, and
    different models that still read alike are told apart by their run folder."""
    paths = [Path(os.path.normpath(m)).parts for _, m in runs]
    common = 0
    while paths and all(len(p) > common + 1 for p in paths) and len({p[common] for p in paths}) == 1:
        common += 1
    labels = ["/".join(p[common:]) or m for p, (_, m) in zip(paths, runs)]
    if len(set(runs[i][1] for i in range(len(runs)))) == 1 and len(runs) > 1:
        labels = [Path(m).name or m for _, m in runs]  # one model: one row
    seen: dict[str, str] = {}
    out = []
    for label, (run, model) in zip(labels, runs):
        if seen.get(label, model) != model:
            label = f"{label} ({run})"
        seen.setdefault(label, model)
        out.append(label)
    return out


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
