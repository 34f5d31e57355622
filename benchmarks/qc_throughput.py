"""QC throughput: records/s, seconds per 1K records and peak memory at 1K / 10K / 100K records.

Each size runs in a fresh subprocess (so peak RSS is that size's own) with a fresh cache: every
record's stats are computed, then the same run is repeated with a changed threshold to show the
cached rerun. Records cycle over a pool of generated scene images (each record still decodes its
image: the cache is keyed by record content). Cost per record should stay flat as N grows.

    python benchmarks/qc_throughput.py                      # 1000 10000 100000
    python benchmarks/qc_throughput.py --sizes 1000 10000 --ops image_readability text_dedup
    python benchmarks/qc_throughput.py --sizes 10000 --executors local ray   # both executors, one table
    python benchmarks/qc_throughput.py --config default --run runs/quickstart --sizes 1000 10000 100000
    python benchmarks/qc_throughput.py --config default --run runs/quickstart --sizes 1000 10000 \
        --repeats 2 --compare /path/to/other/src        # interleaved with another checkout's code

With `--config NAME|PATH --run OUT` the config's model ops get the quickstart run OUT's own LM and
CLIP, as in `allava quickstart --study noise`, and the records come from `--data`:
`generate` (default) renders a fresh scene world per size (`allava.scenes.world.build_world`, seed
1, the quickstart's generator: one ALLaVA-style record and up to ten short-VQA records per image,
about N/8 images, repeats dropped, shuffled), so every record is distinct at any N; `world` takes OUT/world's own records (24.5K
distinct; beyond that they repeat under new ids, and a repeat's stats are computed once, since the
cache is keyed by content). The world is built before the clock starts; model loading and the lazy
imports (torch, transformers) are inside the first run's time. The cached rerun repeats the same config.
`cpu s/1K` is the child's user + system CPU time of the first run: under load from other work it
moves less than the wall time does.

With `--executors local ray` each size runs once per executor (Ray: a local 2-CPU cluster started
in the child, its start-up reported apart) and the table adds the Ray / local throughput ratio.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHEAP = ["image_readability", "image_dedup", "text_dedup", "text_completeness", "task_diversity",
         "instruction_complexity", "balance"]
WORDS = ["red", "blue", "green", "yellow", "circle", "square", "triangle", "star", "top", "bottom", "left", "right", "small", "large", "shape", "the", "a", "is", "of", "in", "on", "near", "below", "above", "next", "to", "picture", "image", "there", "are", "two", "three", "one"]


def make_images(folder: Path, n: int, size: int = 64) -> list[str]:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    names = []
    for i in range(n):
        im = Image.new("RGB", (size, size), (235, 235, 225))
        d = ImageDraw.Draw(im)
        for _ in range(rng.randint(1, 4)):
            x, y, r = rng.randint(0, size - 16), rng.randint(0, size - 16), rng.randint(5, 15)
            d.ellipse([x, y, x + r, y + r], fill=tuple(rng.randint(0, 255) for _ in range(3)))
        im.save(folder / f"{i}.png")
        names.append(f"{i}.png")
    return names


def make_records(path: Path, n: int, images: list[str]) -> None:
    rng = random.Random(n)
    with path.open("w") as fh:
        for i in range(n):
            q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))) + "?"
            a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 40))) + "."
            rec = {"id": f"r{i}", "image": images[i % len(images)],
                   "conversations": [{"from": "human", "value": "<image>\n" + q}, {"from": "gpt", "value": a}],
                   "meta": {"task": rng.choice(["caption", "vqa", "reasoning"])}}
            fh.write(json.dumps(rec) + "\n")


def world_records(path: Path, n: int, run: Path, images: Path) -> None:
    """`n` records of the quickstart world `run` (distinct ones first, then repeats under new ids)."""
    from allava.quality.measure import sample_world
    from allava.scenes.world import instruction_records

    rows = sample_world(instruction_records(run / "world"), run / "world" / "images", images.parent, n)
    with path.open("w") as fh:
        for i in range(n):
            r = dict(rows[i % len(rows)])
            r["id"] = f"{r['id']}#{i // len(rows)}" if i >= len(rows) else r["id"]
            fh.write(json.dumps(r) + "\n")


PER_IMAGE = 8  # distinct records per image of a generated world (11 drawn; rare abilities' pools repeat)


def generated_records(path: Path, n: int, folder: Path) -> Path:
    """`n` distinct records (`measure.distinct`: a cycled pool's repeats are dropped) of a fresh scene
    world (seed 1: scenes the quickstart models never saw), shuffled so one image's records are spread
    over the run as in the quickstart's data; returns the image folder."""
    from allava.quality.measure import distinct
    from allava.scenes.world import WorldConfig, build_world, instruction_records

    cfg = WorldConfig(seed=1, n_train_images=max(1, math.ceil(1.05 * n / PER_IMAGE)), n_bench_per_ability=0,
                      n_text=0, n_lm_scenes=0, image_size=96, teacher="inline")
    build_world(folder, cfg, progress=False)
    rows = distinct(instruction_records(folder))
    random.Random(0).shuffle(rows)
    if len(rows) < n:
        raise SystemExit(f"generated world has {len(rows)} records, fewer than {n}")
    with path.open("w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows[:n])
    return folder / "images"


def child(records: str, images: str, ops: list[str], out: str, executor_name: str = "local") -> None:
    from allava.quality.config import parse_config
    from allava.quality.executor import LocalExecutor, RayExecutor
    from allava.quality.pipeline import run_qc_pipeline

    t0 = time.perf_counter()
    executor = RayExecutor(num_cpus=2) if executor_name == "ray" else LocalExecutor()
    startup = time.perf_counter() - t0

    def cfg(min_sharp: float):
        if ops[0].startswith("@"):  # a whole config (JSON, models filled in), rerun unchanged
            return parse_config(json.loads(Path(ops[0][1:]).read_text()), ops[0][1:])
        entries = [{"name": o} for o in ops]
        for e in entries:
            if e["name"] == "image_readability":
                e["thresholds"] = {"sharpness": {"min": min_sharp}}
        return parse_config({"ops": entries})

    t0, c0 = time.perf_counter(), _cpu()
    run = run_qc_pipeline(records, cfg(0.01), out, image_folder=images, progress=False, plots=False, executor=executor)
    first, cpu = time.perf_counter() - t0, _cpu() - c0
    t0 = time.perf_counter()
    run_qc_pipeline(records, cfg(0.02), out, image_folder=images, progress=False, plots=False, executor=executor)
    rerun = time.perf_counter() - t0
    executor.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": len(run.ids), "executor": executor_name, "startup_s": startup, "first_s": first, "cpu_s": cpu,
                      "removed": run.removed, "rerun_s": rerun, "peak_rss_mb": peak,
                      "op_seconds": {k: round(v, 2) for k, v in run.op_seconds.items()}}))


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _run_child(rec: Path, images: Path, ops_arg: str, out: Path, executor: str, src: str | None) -> dict:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    res = subprocess.run([sys.executable, __file__, "--child", str(rec), str(images), ops_arg, str(out), executor],
                         capture_output=True, text=True, check=False, env=env)
    if res.returncode:
        print(res.stderr[-2000:])
        raise SystemExit(res.returncode)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--ops", nargs="+", default=CHEAP)
    ap.add_argument("--images", type=int, default=2000, help="distinct image files the records cycle over")
    ap.add_argument("--executors", nargs="+", choices=("local", "ray"), default=["local"])
    ap.add_argument("--config", default=None, help="a QC config (shipped name or path) instead of --ops")
    ap.add_argument("--run", type=Path, default=Path("runs/quickstart"), help="with --config: a quickstart run")
    ap.add_argument("--data", choices=("generate", "world"), default="generate",
                    help="with --config: a fresh scene world per size (distinct records), or OUT/world's records")
    ap.add_argument("--repeats", type=int, default=1, help="runs per size and code, interleaved (min and median)")
    ap.add_argument("--compare", default=None, metavar="SRC",
                    help="also run another checkout's code (its src/ folder, as PYTHONPATH), interleaved")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        records, images, ops, out, executor = args.child
        child(records, images, ops.split(","), out, executor)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.config:
            from allava.config import load_yaml
            from allava.studies.noise import fill_models

            from allava.scenes.world import instruction_files

            if not instruction_files(args.run / "world"):
                raise SystemExit(f"{args.run}/world has no stage-2 records; run `allava quickstart --out {args.run}` first")
            (root / "config.json").write_text(json.dumps(fill_models(load_yaml(args.config, [], shipped="qc"),
                                                                     args.run.resolve())))
            ops_arg = "@" + str(root / "config.json")
            data = "a generated scene world per size" if args.data == "generate" else f"records of {args.run}/world"
            print(f"config {args.config} (models of {args.run}); {data}; best of {args.repeats} run(s) per size")
        else:
            make_images(root / "images", args.images)
            ops_arg = ",".join(args.ops)
            print(f"ops: {', '.join(args.ops)}; {args.images} distinct images")
        rows = []
        codes = [("this", None)] + ([("compare", args.compare)] if args.compare else [])
        print(f"{'records':>8} {'code':>7} {'executor':>8} {'rec/s':>7} {'s/1K rec':>9} {'cpu s/1K':>9} "
              f"{'vs 1st size':>11} {'rerun rec/s':>11} {'peak RSS MB':>11} {'vs local':>9} {'removed':>8}")
        base_per_k: dict[tuple[str, str], float] = {}
        for n in args.sizes:
            rec = root / f"records-{n}.jsonl"
            images = root / "images"
            if args.config and args.data == "generate":
                t0 = time.perf_counter()
                images = generated_records(rec, n, root / f"world-{n}")
                print(f"         generated {n} records ({math.ceil(1.05 * n / PER_IMAGE)} images) in "
                      f"{time.perf_counter() - t0:.0f} s (not timed)", flush=True)
            elif args.config:
                world_records(rec, n, args.run, root / "images")
            else:
                make_records(rec, n, [f"{i}.png" for i in range(args.images)])
            runs: dict[tuple[str, str], list[dict]] = {(c, e): [] for c, _ in codes for e in args.executors}
            for k in range(args.repeats):  # interleaved: every code and executor once per repetition
                for code, src in codes:
                    for name in args.executors:
                        r = _run_child(rec, images, ops_arg, root / f"out-{n}-{name}-{code}-{k}", name, src)
                        r["code"] = code
                        runs[(code, name)].append(r)
                        rows.append(r)
            for (code, name), reps in runs.items():
                r = min(reps, key=lambda x: x["first_s"])
                per_k = 1000 * r["first_s"] / r["n"]
                base_per_k.setdefault((code, name), per_k)
                local = runs.get((code, "local"))
                ratio = (f"{min(x['first_s'] for x in local) / r['first_s']:>8.2f}x"
                         if local and name != "local" else f"{'':>9}")
                med = f" (median {r['n'] / statistics.median(x['first_s'] for x in reps):.0f})" if len(reps) > 1 else ""
                print(f"{r['n']:>8} {code:>7} {name:>8} {r['n'] / r['first_s']:>7.0f} {per_k:>9.2f} "
                      f"{1000 * r['cpu_s'] / r['n']:>9.2f} {per_k / base_per_k[(code, name)]:>10.2f}x "
                      f"{r['n'] / r['rerun_s']:>11.0f} {r['peak_rss_mb']:>11.0f} {ratio} {r['removed']:>8}{med}",
                      flush=True)
                print(f"         per op, s per 1K records: "
                      f"{ {op: round(1000 * v / r['n'], 2) for op, v in r['op_seconds'].items()} }"
                      + (f"; Ray start-up {r['startup_s']:.1f} s" if name == "ray" else ""), flush=True)
        print(json.dumps({"ops": args.ops, "config": args.config, "data": args.data, "images": args.images, "executors": args.executors, "sizes": rows}))  # machine-readable


if __name__ == "__main__":
    main()
