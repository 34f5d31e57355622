"""Synthesis engine throughput and memory, against the loopback fake server (separate process).

1. Throughput: fixed server latency L, concurrency C in {8, 32, 128}; the ideal is C/L items/s,
   printed as a ratio (target >= 0.9). Text-only items, so the figure is the engine + openai client
   overhead, not image encoding.
2. Memory: peak RSS of the runner process for 1K and 100K items (streamed source, zero latency).
   The full openai path is measured at 1K and --openai-items (default 20K: ~300 items/s on one
   core); the 100K point uses an in-process null teacher so it finishes in about a minute.

    python benchmarks/synth_throughput.py            # ~3 minutes on 2 cores (L=2s, 10 rounds)
    python benchmarks/synth_throughput.py --quick    # ~1 minute (L=1s, 6 rounds, fewer items)
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from allava.synth.base import (
    TASKS,
    TEACHERS,
    Completion,
    Item,
    ParseError,
    Request,
    Task,
    Teacher,
    Usage,
    output_line,
    register_task,
    register_teacher,
)


class BenchTask(Task):
    """One text-only call per item; keeps the answer section (like a real parser would)."""

    name = "bench-echo"
    prompt_version = "bench/1"
    needs_image = False

    async def run(self, item: Item, teacher: Teacher) -> dict[str, Any]:
        done = await teacher.complete(Request([{"role": "user", "content": f"Write about {item.id}."}], self.name,
                                              item, params={"max_tokens": 256}))
        m = re.search(r"<start of answer>(.*?)<end of answer>", done.text, flags=re.DOTALL)
        if not m:
            raise ParseError("missing section 'answer'", done.text)
        return output_line(self, item, [done], {"answer": m.group(1).strip()}, done.text)

    def to_llava(self, line: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        return {}


class NullTeacher(Teacher):
    """Answers at once, in process: isolates the runner's own memory from the HTTP stack."""

    name = "null"

    async def complete(self, request: Request) -> Completion:
        from allava.synth.fake_server import allava_answer

        return Completion(allava_answer({"messages": request.messages}), "null", Usage(10, 50))


if "bench-echo" not in TASKS:
    register_task(BenchTask)
if "null" not in TEACHERS:
    register_teacher(NullTeacher)


def write_source(path: Path, n: int) -> None:
    with open(path, "w") as fh:
        fh.writelines(json.dumps({"id": f"b{i:07d}", "question": f"question {i}"}) + "\n" for i in range(n))


def run_cli(args: list[str]) -> dict[str, Any]:
    import contextlib
    import io

    from allava.synth.cli import main

    with contextlib.redirect_stdout(io.StringIO()):  # keep the table readable
        rc = main(args)
    if rc != 0:
        raise SystemExit(f"run failed with exit code {rc}")
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "summary.json").read_text())


def child(argv: list[str]) -> None:
    """Run one job in this (fresh) process and print its peak RSS."""
    import contextlib
    import io
    import threading

    import psutil

    from allava.synth import runner

    runner.load_registries()  # imports first: the baseline is the process with everything loaded
    proc, samples, stop = psutil.Process(), [], threading.Event()
    base = proc.memory_info().rss

    def sample() -> None:
        while not stop.wait(0.02):
            samples.append(proc.memory_info().rss)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    with contextlib.redirect_stdout(io.StringIO()):
        summary = run_cli(argv)
    stop.set()
    thread.join()
    peak = max(samples + [proc.memory_info().rss])
    print(json.dumps({"peak_rss_mib": peak / 2**20, "growth_mib": (peak - base) / 2**20,
                      "wall_s": summary["wall_s"], "done": summary["done"]}))


def measure_memory(tmp: Path, n: int, teacher: str, url: str | None) -> dict[str, Any]:
    src = tmp / f"mem-{n}.jsonl"
    write_source(src, n)
    args = ["bench-echo", "--images", str(src), "--out", str(tmp / f"mem-{teacher}-{n}"), "--no-progress",
            "--concurrency", "64", "--teacher", teacher]
    if url:
        args += ["--base-url", url]
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", type=float, default=2.0, help="fake server latency L in seconds")
    p.add_argument("--rounds", type=int, default=10, help="items per run = rounds * C")
    p.add_argument("--openai-items", type=int, default=20_000)
    p.add_argument("--null-items", type=int, default=100_000)
    p.add_argument("--quick", action="store_true", help="fewer rounds and items")
    args = p.parse_args()
    if args.quick:
        args.latency, args.rounds, args.openai_items, args.null_items = 1.0, 6, 5_000, 20_000
    from allava.synth.fake_server import serve_subprocess

    tmp = Path(tempfile.mkdtemp(prefix="synth-bench-"))
    results: dict[str, Any] = {"latency_s": args.latency, "rounds": args.rounds, "throughput": [], "memory": []}
    print(f"# synth throughput (fake server latency L={args.latency:g}s, {args.rounds} rounds per C; text-only items)")
    print(f"{'C':>5} {'items':>6} {'wall_s':>7} {'items/s':>8} {'C/L':>6} {'ratio':>6}")
    with serve_subprocess(latency=args.latency) as url:
        warm = tmp / "warm.jsonl"
        write_source(warm, 4)  # first run pays lazy imports and connection setup: not measured
        run_cli(["bench-echo", "--images", str(warm), "--out", str(tmp / "warm"), "--no-progress", "--base-url", url])
        for c in (8, 32, 128):
            n = args.rounds * c
            src = tmp / f"tp-{c}.jsonl"
            write_source(src, n)
            t = time.perf_counter()
            s = run_cli(["bench-echo", "--images", str(src), "--out", str(tmp / f"tp-{c}"), "--no-progress",
                         "--base-url", url, "--concurrency", str(c)])
            wall = time.perf_counter() - t
            rate, ideal = s["done"] / wall, c / args.latency
            print(f"{c:>5} {n:>6} {wall:>7.2f} {rate:>8.1f} {ideal:>6.0f} {rate / ideal:>6.3f}", flush=True)
            results["throughput"].append({"concurrency": c, "items": n, "wall_s": wall, "items_per_s": rate,
                                          "ideal_items_per_s": ideal, "ratio": rate / ideal})
    print("\n# peak RSS of the runner process (zero latency, concurrency 64)")
    with serve_subprocess(latency=0.0) as url:
        for n in (1_000, args.openai_items):
            r = measure_memory(tmp, n, "openai", url)
            results["memory"].append({"teacher": "openai", "items": n, **r})
            print(f"openai teacher via HTTP  {n:>7} items: peak RSS {r['peak_rss_mib']:7.1f} MiB, "
                  f"+{r['growth_mib']:.1f} MiB during the run "
                  f"({r['done']} done in {r['wall_s']:.1f}s)", flush=True)
    for n in (1_000, args.null_items):
        r = measure_memory(tmp, n, "null", None)
        results["memory"].append({"teacher": "null", "items": n, **r})
        print(f"null teacher, in process {n:>7} items: peak RSS {r['peak_rss_mib']:7.1f} MiB, "
              f"+{r['growth_mib']:.1f} MiB during the run "
              f"({r['done']} done in {r['wall_s']:.1f}s)", flush=True)
    (tmp / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"(outputs in {tmp}; machine-readable figures: {tmp / 'summary.json'})")


if __name__ == "__main__":
    main()
