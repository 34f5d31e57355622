"""Which part of an attribute question a quickstart model fails: the look-up or the naming.

"What colour is the circle?" needs the circle found (a look-up by shape) and its colour named;
"Which shape is the blue object?" needs the blue object found and its shape named. When every
object of the scene has the same value of the asked attribute (one shape in the scene, or all
its shapes alike) no look-up is needed: a model that fails those questions too cannot *name* the
attribute from the visual tokens, whatever it can find. Reads a finished run's predictions (the
held-out benchmark's `predictions-full-stage2.jsonl`) and rebuilds each question's scene from its seed.

    python benchmarks/quickstart_breakdown.py --run runs/quickstart
    python benchmarks/quickstart_breakdown.py --run runs/quickstart --predictions runs/quickstart/predictions-full-stage1.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ATTRIBUTES = {"color": "color", "shape": "name"}  # ability -> the scene object's field it names


def breakdown(bench: list[dict], predictions: dict[str, bool], image_size: int) -> dict[str, dict[str, list[int]]]:
    """{ability: {case: [right, n]}}, case "one value in the scene" or "needs a look-up"."""
    from allava.scenes.graph import SceneConfig, sample_scene

    cfg = SceneConfig(image_size=image_size)
    out: dict[str, dict[str, list[int]]] = {a: {} for a in ATTRIBUTES}
    for row in bench:
        field = ATTRIBUTES.get(row["ability"])
        if field is None or row["id"] not in predictions:
            continue
        scene = sample_scene(row["seed"], cfg)
        values = Counter(getattr(o, field) for o in scene.objects if o.category == "shape")
        case = "one value in the scene" if len(values) == 1 else "needs a look-up"
        cell = out[row["ability"]].setdefault(case, [0, 0])
        cell[0] += predictions[row["id"]]
        cell[1] += 1
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/quickstart", help="a finished quickstart run folder")
    ap.add_argument("--predictions", default=None, help="predictions JSONL (default: RUN/predictions-full-stage2.jsonl)")
    args = ap.parse_args()
    run = Path(args.run)
    preds_path = Path(args.predictions) if args.predictions else run / "predictions-full-stage2.jsonl"
    for path in (preds_path, run / "world" / "bench.jsonl", run / "world" / "world.json"):
        if not path.exists():
            print(f"error: {path} is missing (run `allava quickstart --out {run}` first)", file=sys.stderr)
            return 2
    from allava.scenes.world import read_jsonl

    bench = read_jsonl(run / "world" / "bench.jsonl")
    preds = {}
    for k, line in enumerate(preds_path.read_text().splitlines(), 1):
        try:
            p = json.loads(line)
            preds[p["question_id"]] = bool(p["correct"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            print(f"error: {preds_path}:{k}: not a prediction line ({e})", file=sys.stderr)
            return 2
    size = json.loads((run / "world" / "world.json").read_text())["config"]["image_size"]
    result = breakdown(bench, preds, size)
    for ability, cases in result.items():
        for case, (right, n) in sorted(cases.items()):
            print(f"{ability:6s} {case:24s} {right:4d} / {n:4d} = {right / max(n, 1):6.1%}")
    print(json.dumps({"predictions": str(preds_path), "breakdown": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
