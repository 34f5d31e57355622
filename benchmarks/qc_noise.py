"""What a QC config removes of each kind of teacher-style noise, and of the clean records.

Samples distinct records of a quickstart world (its short VQA and ALLaVA answers), replaces `--rate`
of them with `allava.quality.teacher_noise` kinds (and/or the original injector's with
`--generator both`), runs `allava qc` with the config (its model ops get the quickstart's own LM and
CLIP, as in `allava quickstart --study noise`) and prints removal per kind and the clean records'
false-removal rate, plus a JSON line.

    python benchmarks/qc_noise.py --run runs/quickstart --n 3000 --config default
    python benchmarks/qc_noise.py --run runs/quickstart --config cheap --generator both
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/quickstart", help="a quickstart run folder (world/, lm/, clip/)")
    ap.add_argument("--config", default="default", help="QC config: a path or a shipped name")
    ap.add_argument("--n", type=int, default=3000, help="records sampled from the world")
    ap.add_argument("--rate", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--generator", choices=("teacher", "injector", "both"), default="teacher")
    ap.add_argument("--out", default=None, help="keep the data and QC output here (default: a temp folder)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    from allava.config import load_yaml
    from allava.quality.config import parse_config
    from allava.quality.measure import kind_table, removed_ids, sample_world
    from allava.quality.noise import KINDS, inject_noise, score_injection
    from allava.quality.pipeline import run_qc_pipeline
    from allava.quality.teacher_noise import inject_teacher_noise
    from allava.scenes.world import instruction_files, instruction_records
    from allava.studies.noise import fill_models

    run = Path(args.run)
    world = run / "world"
    if not instruction_files(world):
        print(f"qc_noise: {world} has no stage-2 records; run `allava quickstart --out {run}` first",
              file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="qc-noise-"))
    out.mkdir(parents=True, exist_ok=True)
    rows = sample_world(instruction_records(world), world / "images", out, args.n, args.seed)
    (out / "clean.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # before the noise
    injected: dict[str, str] = {}
    if args.generator in ("teacher", "both"):
        share = args.rate if args.generator == "teacher" else args.rate / 2
        rows, injected = inject_teacher_noise(rows, out / "images", share, args.seed)
    if args.generator in ("injector", "both"):
        clean = [r for r in rows if r["id"] not in injected]
        share = args.rate if args.generator == "injector" else args.rate / 2 * len(rows) / max(1, len(clean))
        noisy, more = inject_noise(clean, out / "images", share, args.seed + 1, KINDS)
        by_id = {r["id"]: r for r in noisy}
        rows = [by_id.get(r["id"], r) for r in rows]
        injected.update(more)
    data = out / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "injected.json").write_text(json.dumps(injected, indent=0, sort_keys=True))  # {id: kind}, to read the misses
    cfg = parse_config(fill_models(load_yaml(args.config, args.overrides, shipped="qc"), run), args.config)
    t0 = time.perf_counter()
    qc = run_qc_pipeline(data, cfg, out / "qc", image_folder=out / "images", progress=False, plots=False)
    seconds = time.perf_counter() - t0
    score = score_injection(removed_ids(out / "qc"), qc.ids, injected)
    print(f"config {args.config}, {len(qc.ids)} records ({args.generator} noise, {len(injected)} injected), "
          f"QC {seconds:.0f} s ({len(qc.ids) / seconds:.0f} records/s, models loaded in the run)")
    print("\n".join(kind_table(score, Counter(injected.values()))))
    removed_by = Counter(f"{(json.loads(x)['qc']['op'])}:{'noise' if json.loads(x)['id'] in injected else 'clean'}"
                         for x in (out / "qc" / "removed.jsonl").read_text().splitlines())
    print("removals by op:", dict(sorted(removed_by.items())))
    print(json.dumps({"config": args.config, "records": len(qc.ids), "seconds": seconds, **score,
                      "removed_by": removed_by, "out": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
