"""What a quickstart run's LM learns to read off its visual tokens: stage 2 from the run's stage-1
model (or any saved model) on chosen data, then held-out accuracy per ability, with the real
training code and the run's feature store.

A fast way to test a recipe change on one ability before spending a whole run on it: on 2 CPU
cores an ability-only stage 2 of 600 steps takes a few minutes. Measured with it (runs/qs8, AVX2
machine, 1 thread, under load; 200 held-out questions of the trained ability, chance 20%):

    shape questions only, 600 steps from stage 1                      30.0%
      the same, projector learning rate 1e-2 instead of 1e-3          34.5%
      the same, after 600 more caption steps (teacher/captions.jsonl)  44.0%
    shape questions only, 1,800 steps from stage 1                    54.0%
    odd-one-out only, 1,800 steps (loss 0.19: 631 distinct images, learnt by heart)  18.5%

while a linear probe reads the shape off the same tower's patch tokens at 90.6% (small shapes 84%,
large 96%), and a projector-shaped MLP trained on them alone reaches 90.7% in 600 steps: the tokens
carry the shape; what the LM lacks is practice reading it, which captions give.

    python benchmarks/quickstart_readout.py --run runs/quickstart --abilities shape --steps 600
    python benchmarks/quickstart_readout.py --run runs/quickstart --data teacher/captions.jsonl --steps 600 \\
        --out runs/readout/captions --no-eval
    python benchmarks/quickstart_readout.py --run runs/quickstart --init runs/readout/captions/train/stage2/final \\
        --abilities shape --steps 600
    python benchmarks/quickstart_readout.py --run runs/quickstart --recipe-data --steps 1500   # the stage-2 mix
    python benchmarks/quickstart_readout.py --run runs/quickstart --recipe-data --steps 5442 \\
        --world-set 'vqa_ability_weights={shape: 1.8, position: 1.4}' --out runs/readout/weighted
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path


def variant_world(run: Path, out: Path, overrides: list[str]) -> Path:
    """OUT as a run folder whose world is the run's with `overrides` applied (train images 0..N-1 are
    the same scenes, so their features come from the shared store) and whose other folders link to
    the run's: stage 2 reads the variant's records, everything before it is the run's own."""
    import os

    from allava.config import apply_overrides, from_dict
    from allava.scenes.world import TEACHER_DIR, WorldConfig, build_world

    base = json.loads((run / "world" / "world.json").read_text())["config"]
    cfg = from_dict(WorldConfig, apply_overrides(base, overrides), "world")
    files = build_world(out / "world", cfg)
    print(f"variant world: {files.counts}")
    links = [(run / name, out / name) for name in ("full", "features", "tokenizer", "lm", "clip")]
    links.append((run / "world" / TEACHER_DIR, out / "world" / TEACHER_DIR))
    for src, dst in links:
        if src.exists() and not dst.exists():
            os.symlink(src.resolve(), dst)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/quickstart", help="a finished quickstart run folder")
    ap.add_argument("--init", default=None, help="model to start from (default: RUN/full/stage1/final)")
    ap.add_argument("--data", default="short_vqa.jsonl", help="records file, relative to RUN/world")
    ap.add_argument("--recipe-data", action="store_true", help="the YAML's stage-2 data mix instead of --data")
    ap.add_argument("--abilities", default="", help="comma list: keep only these abilities' records (and questions)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--questions", type=int, default=2000, help="balanced held-out subset (all abilities)")
    ap.add_argument("--out", default=None, help="default: RUN/readout/<a name made of the arguments>")
    ap.add_argument("--no-eval", action="store_true", help="train only (e.g. a caption phase to start from)")
    ap.add_argument("--world-set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="a variant of the run's world (WorldConfig keys, e.g. 'vqa_ability_weights={shape: 2}'), "
                         "built under OUT/world; the run's stage 0 / 1 models and feature store are reused")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="quickstart config overrides")
    args = ap.parse_args()

    from allava.data.dataset import DataSource
    from allava.evaluate.synthetic import balanced_subset
    from allava.scenes.world import read_jsonl
    from allava.studies import pipeline
    from allava.studies.config import load_quickstart_config

    run = Path(args.run)
    init = Path(args.init) if args.init else run / "full" / "stage1" / "final"
    for path, what in ((run / "world", "the run's world"), (init, "the model to start from")):
        if not path.exists():
            print(f"error: {what} is missing: {path} (run `allava quickstart --out {run}` first)", file=sys.stderr)
            return 2
    cfg = load_quickstart_config(None, args.overrides)
    keep = {a for a in args.abilities.split(",") if a}
    name = "-".join(filter(None, ["mix" if args.recipe_data else Path(args.data).stem, *sorted(keep), f"{args.steps}"]))
    out = Path(args.out) if args.out else run / "readout" / name
    out.mkdir(parents=True, exist_ok=True)
    if args.world_set:
        from allava.config import ConfigError

        try:
            run = variant_world(run, out, args.world_set)
        except (ConfigError, ValueError) as e:
            print(f"error: --world-set: {e}", file=sys.stderr)
            return 2
    if args.recipe_data:
        sources = pipeline.stage_configs(run, cfg)["stage2"].data
    else:
        rows = [r for r in read_jsonl(run / "world" / args.data)
                if not keep or r.get("meta", {}).get("ability") in keep]
        if not rows:
            print(f"error: no records of {sorted(keep)} in {run / 'world' / args.data}", file=sys.stderr)
            return 2
        random.Random(0).shuffle(rows)
        (out / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        sources = [DataSource(str(out / "data.jsonl"), str(run / "world" / "images"))]
    t0 = time.perf_counter()
    pipeline.train_stage2_from(run, cfg, str(init), out / "train", sources, max_steps=args.steps)
    result = {"init": str(init), "data": "stage-2 mix" if args.recipe_data else args.data,
              "abilities": sorted(keep), "steps": args.steps, "train_s": round(time.perf_counter() - t0, 1)}
    if not args.no_eval:
        qids = [q for q, a in balanced_subset(run / "world", args.questions).items() if not keep or a in keep]
        res = pipeline.evaluate(run, cfg, str(out / "train" / "stage2" / "final"), out / "predictions.jsonl",
                                question_ids=qids)
        result.update(overall=res["overall"], n=res["n"], per_ability=res["abilities"])
        for ability, s in res["abilities"].items():
            print(f"{ability:12s} {s['accuracy'] * 100:5.1f}%  (chance {s['chance'] * 100:.0f}%, n={s['n']})")
        print(f"{'overall':12s} {res['overall'] * 100:5.1f}%  after {args.steps} steps in {result['train_s']:.0f} s")
    (out / "summary.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
