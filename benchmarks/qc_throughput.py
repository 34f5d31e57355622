"""QC throughput: records/s and peak memory at 1K / 10K / 100K records with the cheap operators.

Each size runs in a fresh subprocess (so peak RSS is that size's own) with a fresh cache: every
record's stats are computed, then the same run is repeated with a changed threshold to show the
cached rerun. Records cycle over a pool of generated scene images (each record still decodes its
image: the cache is keyed by record content). Cost per record should stay flat as N grows.

    python benchmarks/qc_throughput.py                      # 1000 10000 100000
    python benchmarks/qc_throughput.py --sizes 1000 10000 --ops image_readability text_dedup
    python benchmarks/qc_throughput.py --sizes 10000 --executors local ray   # both executors, one table
    python benchmarks/qc_throughput.py --config default --run runs/quickstart --sizes 1000 2000 10000

With `--config NAME|PATH --run OUT` the records are distinct records of the quickstart world OUT
(its stage-2 image records and images; beyond the distinct pool they repeat under new ids) and the config's
model ops get OUT's own LM and CLIP, as in `allava quickstart --study noise`; the cached rerun
repeats the same config. Model loading is inside the first run's time.

With `--executors local ray` each size runs once per executor (Ray: a local 2-CPU cluster started
in the child, its start-up reported apart) and the table adds the Ray / local throughput ratio.
"""
from __future__ import annotations

import argparse
import json
import random
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

    t0 = time.perf_counter()
    run = run_qc_pipeline(records, cfg(0.01), out, image_folder=images, progress=False, plots=False, executor=executor)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_qc_pipeline(records, cfg(0.02), out, image_folder=images, progress=False, plots=False, executor=executor)
    rerun = time.perf_counter() - t0
    executor.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": len(run.ids), "executor": executor_name, "startup_s": startup, "first_s": first,
                      "rerun_s": rerun, "peak_rss_mb": peak,
                      "op_seconds": {k: round(v, 2) for k, v in run.op_seconds.items()}}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--ops", nargs="+", default=CHEAP)
    ap.add_argument("--images", type=int, default=2000, help="distinct image files the records cycle over")
    ap.add_argument("--executors", nargs="+", choices=("local", "ray"), default=["local"])
    ap.add_argument("--config", default=None, help="a QC config (shipped name or path) instead of --ops")
    ap.add_argument("--run", type=Path, default=Path("runs/quickstart"), help="with --config: a quickstart run")
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
            print(f"config {args.config} (models of {args.run}); records of {args.run}/world")
        else:
            make_images(root / "images", args.images)
            ops_arg = ",".join(args.ops)
            print(f"ops: {', '.join(args.ops)}; {args.images} distinct images")
        rows = []
        print(f"{'records':>8} {'executor':>8} {'first run rec/s':>16} {'us/record':>10} {'cached rerun rec/s':>19} "
              f"{'peak RSS MB':>12} {'vs local':>9}")
        for n in args.sizes:
            rec = root / f"records-{n}.jsonl"
            if args.config:
                world_records(rec, n, args.run, root / "images")
            else:
                make_records(rec, n, [f"{i}.png" for i in range(args.images)])
            local_rate = None
            for name in args.executors:
                res = subprocess.run([sys.executable, __file__, "--child", str(rec), str(root / "images"),
                                      ops_arg, str(root / f"out-{n}-{name}"), name],
                                     capture_output=True, text=True, check=False)
                if res.returncode:
                    print(res.stderr[-2000:])
                    raise SystemExit(res.returncode)
                r = json.loads(res.stdout.strip().splitlines()[-1])
                rate = r["n"] / r["first_s"]
                local_rate = rate if name == "local" else local_rate
                ratio = f"{rate / local_rate:>8.2f}x" if local_rate else f"{'':>9}"
                print(f"{r['n']:>8} {name:>8} {rate:>16.0f} {1e6 * r['first_s'] / r['n']:>10.0f} "
                      f"{r['n'] / r['rerun_s']:>19.0f} {r['peak_rss_mb']:>12.0f} {ratio}", flush=True)
                print(f"         per op (s): {r['op_seconds']}" + (f"; Ray start-up {r['startup_s']:.1f} s"
                                                                    if name == "ray" else ""), flush=True)
                rows.append(r)
        print(json.dumps({"ops": args.ops, "config": args.config, "images": args.images, "executors": args.executors, "sizes": rows}))  # machine-readable


if __name__ == "__main__":
    main()
