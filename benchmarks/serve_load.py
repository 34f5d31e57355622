"""`allava serve` under load, through the official `openai` client: requests/s and p50/p99 latency
at 1, 8 and 32 concurrent clients, batched (--max-batch-size 32) vs --max-batch-size 1 in the same
run (interleaved repetitions, min and median), greedy answers compared between the two, and the
server's RSS over many requests.

The checkpoint is the quickstart's architecture (preset `quickstart`: 4-layer 128-wide Llama, the
96 px tiny CLIP) with random weights, built from its config by `eval_throughput.build_checkpoint`
(no downloads). A random model never says EOS, so every answer is exactly --max-tokens long: the
work per request is fixed.

    python benchmarks/serve_load.py                      # ~10 minutes on 2 busy cores
    python benchmarks/serve_load.py --requests 32 --reps 1 --rss-requests 200   # a quick look
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


def start_server(ckpt: Path, batch: int, max_tokens: int, threads: int | None, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
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


async def drive(url: str, model: str, asks: list[list[dict]], clients: int, max_tokens: int,
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
            r = await client.chat.completions.create(model=model, messages=asks[k], max_tokens=max_tokens,
                                                     temperature=0)
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
    ap.add_argument("--no-prefix-cache", action="store_true", help="both servers prefill every prompt whole")
    ap.add_argument("--json", help="also write the summary here")
    args = ap.parse_args()
    from tqdm import tqdm

    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_checkpoint(Path(tmp), "quickstart")
        extra = ["--no-prefix-cache"] if args.no_prefix_cache else []
        servers = {"batched": start_server(ckpt, args.max_batch_size, args.max_tokens, args.threads, extra),
                   "batch1": start_server(ckpt, 1, args.max_tokens, args.threads, extra)}
        try:
            for proc, url in servers.values():
                wait_ready(proc, url)
            model = ckpt.name
            asks = payloads(args.requests)
            for _, url in servers.values():  # warm-up
                asyncio.run(drive(url, model, asks[:4], 2, args.max_tokens))
            runs: dict[tuple[str, int], list[dict]] = {}
            total = args.reps * len(levels) * len(servers) * args.requests
            with tqdm(total=total, desc="serve_load requests", unit="req") as bar:
                for rep in range(args.reps):
                    for c in levels:
                        for mode in (("batched", "batch1") if rep % 2 == 0 else ("batch1", "batched")):
                            before = health(servers[mode][1])
                            rps, lat, answers = asyncio.run(drive(servers[mode][1], model, asks, c, args.max_tokens, bar))
                            after = health(servers[mode][1])
                            steps = after["steps"] - before["steps"]
                            runs.setdefault((mode, c), []).append({
                                "rps": rps, "lat": lat, "answers": answers,
                                "mean_batch": (after["row_steps"] - before["row_steps"]) / max(1, steps),
                                "prefill_ms": 1e3 * (after["prefill_s"] - before["prefill_s"]) / len(asks),
                                "decode_ms": 1e3 * (after["decode_s"] - before["decode_s"]) / len(asks)})
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
                                       "decode_ms": statistics.median(r["decode_ms"] for r in rs)}
            ratios = {c: {"median": rows[f"batched@{c}"]["rps_median"] / rows[f"batch1@{c}"]["rps_median"],
                          "min": rows[f"batched@{c}"]["rps_min"] / rows[f"batch1@{c}"]["rps_min"]} for c in levels}
            rss = []
            if args.rss_requests:
                url = servers["batched"][1]
                many = payloads(100, seed=2)
                with tqdm(total=args.rss_requests, desc="serve_load RSS requests", unit="req") as bar:
                    rss.append((0, health(url)["rss_mb"]))
                    done = 0
                    while done < args.rss_requests:
                        n = min(100, args.rss_requests - done)
                        asyncio.run(drive(url, model, many[:n], 8, args.max_tokens, bar))
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
          f"max_tokens {args.max_tokens}, batched server --max-batch-size {args.max_batch_size} "
          f"{args.threads} torch thread(s) each; {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"{'':>10} {'clients':>7} {'req/s min':>10} {'req/s med':>10} {'p50 s':>7} {'p99 s':>7} {'batch':>6} "
          f"{'prefill ms/req':>14} {'decode ms/req':>13}")
    for key, r in sorted(rows.items(), key=lambda kv: (kv[1]["clients"], kv[1]["mode"])):
        print(f"{r['mode']:>10} {r['clients']:>7} {r['rps_min']:>10.2f} {r['rps_median']:>10.2f} "
              f"{r['p50_s']:>7.3f} {r['p99_s']:>7.3f} {r['mean_batch']:>6.1f} {r['prefill_ms']:>14.1f} {r['decode_ms']:>13.1f}")
    for c, ratio in ratios.items():
        print(f"{c:>3} clients: batched / --max-batch-size 1 = {ratio['median']:.2f}x (median), {ratio['min']:.2f}x (min)")
    print(f"greedy answers identical batched vs --max-batch-size 1 (every level, every rep): {same}")
    if rss:
        print(f"RSS over {rss[-1][0]} requests: {rss[0][1]:.0f} MB at start, {rss[1][1]:.0f} MB after 100, "
              f"{rss[-1][1]:.0f} MB at the end (max {max(r for _, r in rss):.0f} MB)")
    summary = {"rows": rows, "ratios": {str(c): r for c, r in ratios.items()}, "greedy_identical": same, "rss_mb": rss, "settings": vars(args)}
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
