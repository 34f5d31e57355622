"""`allava serve` under load, through the official `openai` client: requests/s and p50/p99 latency
at 1, 8 and 32 concurrent clients, batched (--max-batch-size 32) vs --max-batch-size 1 in the same
run (interleaved repetitions, min and median), greedy answers compared between the two, and the
server's RSS over many requests.

The checkpoint is the quickstart's architecture (preset `quickstart`: 4-layer 128-wide Llama, the
96 px tiny CLIP) with random weights, built from its config by `eval_throughput.build_checkpoint`
(no downloads). A random model never says EOS, so every answer is exactly --max-tokens long: the
work per request is fixed.

    python benchmarks/serve_load.py                      # ~4 minutes on 2 busy cores
    python benchmarks/serve_load.py --requests 32 --reps 1 --rss-requests 200   # a quick look
    git worktree add /tmp/allava-old COMMIT && python benchmarks/serve_load.py --reference-tree /tmp/allava-old
        # a third server: the same load on an older version's batcher
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_throughput import VOCAB, build_checkpoint  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(ckpt: Path, batch: int, max_tokens: int, threads: int | None, extra: list[str],
                 src: Path | None = None) -> tuple[subprocess.Popen, str]:
    """One `allava serve` process; `src`: serve another checkout's code (its `src/` first on the path)."""
    port = free_port()
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    if src is not None:
        env["PYTHONPATH"] = str(src / "src")
    threads_flag = ["--threads", str(threads)] if threads else []
    proc = subprocess.Popen([sys.executable, "-m", "allava.cli", "serve", "--model", str(ckpt), "--port", str(port),
                             "--max-batch-size", str(batch), "--max-new-tokens", str(max_tokens), "--max-queue", "256", *threads_flag, *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve_load: the server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"serve_load: the server at {url} did not start within {timeout:g}s")


def health(url: str) -> dict:
    import httpx

    return httpx.get(url + "/health", timeout=10).json()


def payloads(n: int, seed: int = 1) -> list[list[dict]]:
    from PIL import Image

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), tuple(rng.randrange(256) for _ in range(3))).save(buf, "PNG")
        text = " ".join(rng.choice(VOCAB) for _ in range(rng.randint(4, 40)))
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        out.append([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                 {"type": "text", "text": text}]}])
    return out


async def drive(url: str, model: str, asks: list[list[dict]], clients: int, max_tokens: int | list[int],
                bar=None) -> tuple[float, list[float], list[str]]:
    """`clients` workers share the requests; returns (requests/s, latencies in s, answers in order)."""
    import openai

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=300)
    answers: list[str] = [""] * len(asks)
    latencies: list[float] = []
    todo = iter(range(len(asks)))

    async def worker() -> None:
        for k in todo:
            t0 = time.perf_counter()
            r = await client.chat.completions.create(
                model=model, messages=asks[k], temperature=0,
                max_tokens=max_tokens[k] if isinstance(max_tokens, list) else max_tokens)
            latencies.append(time.perf_counter() - t0)
            answers[k] = r.choices[0].message.content
            if bar is not None:
                bar.update(1)

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(clients)))
    finally:
        await client.close()
    return len(asks) / (time.perf_counter() - t0), latencies, answers


def server_side(before: dict, after: dict, n: int) -> dict:
    """Mean rows per decode step and generation-thread ms per request, from two /health readings
    (a reference server of an older version reports only its batches: mean requests per batch)."""
    d = {k: after[k] - before[k] for k in after if isinstance(after[k], (int, float)) and k in before}
    if "steps" not in d:
        return {"mean_batch": n / max(1, d.get("batches", 0)), **dict.fromkeys(
            ("prefill_ms", "decode_ms", "queued_ms", "answering_ms"), float("nan"))}
    return {"mean_batch": d["row_steps"] / max(1, d["steps"]), "prefill_ms": 1e3 * d["prefill_s"] / n,
            "decode_ms": 1e3 * d["decode_s"] / n, "queued_ms": 1e3 * d.get("queued_s", 0) / n,
            "answering_ms": 1e3 * d.get("answering_s", 0) / n}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="1,8,32", help="concurrency levels")
    ap.add_argument("--requests", type=int, default=192, help="requests per level and repetition (6 per client "
                    "at 32: the running batch's steady state, not only its ramp up and drain)")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions (min and median reported)")
    ap.add_argument("--max-tokens", type=int, default=16, help="answer length (a random model uses all of it)")
    ap.add_argument("--max-batch-size", type=int, default=32, help="the batched server's --max-batch-size")
    ap.add_argument("--rss-requests", type=int, default=1000, help="requests for the RSS check (0: skip)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per server (two servers and the client "
                    "share the machine; on 2 busy cores 2 threads ran 10x slower than 1)")
    ap.add_argument("--mixed-lengths", action="store_true", help="request k asks for its own max_tokens, "
                    "uniform in [max_tokens/4, 7*max_tokens/4] (mean max_tokens): answers of unequal length")
    ap.add_argument("--reference-tree", type=Path, help="another allava checkout (e.g. `git worktree add /tmp/old "
                    "COMMIT`) served batched as a third server, 'reference', in the same interleaved repetitions")
    ap.add_argument("--no-prefix-cache", action="store_true", help="both servers prefill every prompt whole")
    ap.add_argument("--json", help="also write the summary here")
    args = ap.parse_args()
    from tqdm import tqdm

    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_checkpoint(Path(tmp), "quickstart")
        extra = ["--no-prefix-cache"] if args.no_prefix_cache else []
        longest = args.max_tokens * 7 // 4 if args.mixed_lengths else args.max_tokens
        servers = {"batched": start_server(ckpt, args.max_batch_size, longest, args.threads, extra),
                   "batch1": start_server(ckpt, 1, longest, args.threads, extra)}
        if args.reference_tree:
            servers["reference"] = start_server(ckpt, args.max_batch_size, longest, args.threads, [],
                                                args.reference_tree.resolve())
        try:
            for proc, url in servers.values():
                wait_ready(proc, url)
            rss_boot = health(servers["batched"][1])["rss_mb"]
            model = ckpt.name
            asks = payloads(args.requests)
            rng = random.Random(3)

            def answer_lengths(n: int) -> int | list[int]:
                return ([rng.randint(max(1, args.max_tokens // 4), longest) for _ in range(n)] if args.mixed_lengths
                        else args.max_tokens)
            lengths = answer_lengths(len(asks))
            for _, url in servers.values():  # warm-up
                asyncio.run(drive(url, model, asks[:4], 2, args.max_tokens))
            runs: dict[tuple[str, int], list[dict]] = {}
            total = args.reps * len(levels) * len(servers) * args.requests
            with tqdm(total=total, desc="serve_load requests", unit="req") as bar:
                for rep in range(args.reps):
                    for c in levels:
                        order = list(servers) if rep % 2 == 0 else list(servers)[::-1]
                        for mode in order:
                            before = health(servers[mode][1])
                            rps, lat, answers = asyncio.run(drive(servers[mode][1], model, asks, c, lengths, bar))
                            after = health(servers[mode][1])
                            runs.setdefault((mode, c), []).append({"rps": rps, "lat": lat, "answers": answers,
                                                                   **server_side(before, after, len(asks))})
            reference = runs[("batch1", levels[0])][0]["answers"]
            same = all(r["answers"] == reference for r in sum(runs.values(), []))
            rows = {}
            for (mode, c), rs in runs.items():
                lat = sum((r["lat"] for r in rs), [])
                rows[f"{mode}@{c}"] = {"mode": mode, "clients": c, "rps_min": min(r["rps"] for r in rs),
                                       "rps_median": statistics.median(r["rps"] for r in rs),
                                       "p50_s": pct(lat, 0.5), "p99_s": pct(lat, 0.99),
                                       "mean_batch": statistics.median(r["mean_batch"] for r in rs),
                                       "prefill_ms": statistics.median(r["prefill_ms"] for r in rs),
                                       **{k: statistics.median(r[k] for r in rs) for k in
                                          ("prefill_ms", "decode_ms", "queued_ms", "answering_ms")}}
            def ratio(a: str, b: str) -> dict:
                return {c: {"median": rows[f"{a}@{c}"]["rps_median"] / rows[f"{b}@{c}"]["rps_median"],
                            "min": rows[f"{a}@{c}"]["rps_min"] / rows[f"{b}@{c}"]["rps_min"]} for c in levels}
            ratios = ratio("batched", "batch1")
            vs_reference = ratio("batched", "reference") if "reference" in servers else {}
            rss = []
            if args.rss_requests:
                url = servers["batched"][1]
                many = payloads(100, seed=2)
                with tqdm(total=args.rss_requests, desc="serve_load RSS requests", unit="req") as bar:
                    rss.append((0, health(url)["rss_mb"]))
                    done = 0
                    while done < args.rss_requests:
                        n = min(100, args.rss_requests - done)
                        asyncio.run(drive(url, model, many[:n], max(levels), answer_lengths(n), bar))
                        done += n
                        rss.append((done, health(url)["rss_mb"]))
        finally:
            for proc, _ in servers.values():
                proc.send_signal(signal.SIGINT)
            for proc, _ in servers.values():
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()

    import torch

    print(f"checkpoint: quickstart preset, random weights; {args.requests} requests per level x {args.reps} reps, "
          f"max_tokens {args.max_tokens}{' (mixed, mean)' if args.mixed_lengths else ''}, "
          f"{'no prefix cache, ' if args.no_prefix_cache else ''}batched server --max-batch-size {args.max_batch_size} "
          f"{args.threads} torch thread(s) each; {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"{'':>10} {'clients':>7} {'req/s min':>10} {'req/s med':>10} {'p50 s':>7} {'p99 s':>7} {'batch':>6} "
          f"{'prefill ms/req':>14} {'decode ms/req':>13} {'queued ms':>9} {'answering ms':>12}")
    for key, r in sorted(rows.items(), key=lambda kv: (kv[1]["clients"], kv[1]["mode"])):
        print(f"{r['mode']:>10} {r['clients']:>7} {r['rps_min']:>10.2f} {r['rps_median']:>10.2f} "
              f"{r['p50_s']:>7.3f} {r['p99_s']:>7.3f} {r['mean_batch']:>6.1f} {r['prefill_ms']:>14.1f} {r['decode_ms']:>13.1f} "
              f"{r['queued_ms']:>9.1f} {r['answering_ms']:>12.1f}")
    for c, ratio in ratios.items():
        print(f"{c:>3} clients: batched / --max-batch-size 1 = {ratio['median']:.2f}x (median), {ratio['min']:.2f}x (min)")
    for c, ratio in vs_reference.items():
        print(f"{c:>3} clients: batched / reference tree batched = {ratio['median']:.2f}x (median), {ratio['min']:.2f}x (min)")
    print(f"greedy answers identical batched vs --max-batch-size 1 (every level, every rep): {same}")
    if rss:
        print(f"batched server RSS: {rss_boot:.0f} MB after loading; over {rss[-1][0]} more requests "
              f"({max(levels)} clients): {rss[0][1]:.0f} MB at start, {rss[1][1]:.0f} MB after 100, "
              f"{rss[-1][1]:.0f} MB at the end (max {max(r for _, r in rss):.0f} MB)")
    summary = {"rows": rows, "ratios": {str(c): r for c, r in ratios.items()},
               "vs_reference": {str(c): r for c, r in vs_reference.items()}, "greedy_identical": same, "rss_mb": rss, "rss_boot_mb": rss_boot, "settings": vars(args)}
    print(json.dumps(summary, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
