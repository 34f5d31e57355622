"""The offline judge's question index: exact enumeration vs the 48 random draws it replaced.

On real world records (the quickstart's stage-2 records, and the noise study's noisy records when
present) it checks that every verdict of the judge's two scene look-ups (`check_answer`, the
false-premise check) is the same with either index, then times both from cold caches, interleaved
repetitions, and prints ms per scene (min and median) and their ratio.

    python benchmarks/qc_question_index.py --run runs/quickstart --n 500 --reps 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import lru_cache
from pathlib import Path


def load(paths: list[Path], n: int):
    from allava.scenes.graph import sample_scene

    out = []
    for path in paths:
        with path.open() as fh:
            for line in fh:
                r = json.loads(line)
                seed = (r.get("meta") or {}).get("seed")
                conv = r.get("conversations") or []
                if not isinstance(seed, int) or len(conv) < 2:
                    continue
                scene = sample_scene(seed)
                out += [(scene, conv[i]["value"], conv[i + 1]["value"]) for i in range(0, len(conv) - 1, 2)]
                if len(out) >= n:
                    return out[:n]
    return out


def verdicts(records, index, key_index):
    from allava.quality import premise
    from allava.scenes import verify

    verify.question_index, premise._key_index = index, key_index
    return [(tuple(verify.check_answer(s, q, a)), tuple(premise.premise_problems(s, q, a))) for s, q, a in records]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/quickstart"))
    ap.add_argument("--n", type=int, default=500, help="question / answer pairs per file")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    from allava.quality import premise
    from allava.scenes import verify

    exact, exact_keys = verify.question_index, premise._key_index
    from allava.scenes.world import instruction_files

    files = [*instruction_files(args.run / "world"), args.run / "world" / "text.jsonl",
             *sorted((args.run / "studies" / "noise" / "noisy").glob("*.jsonl"))]
    records = [r for f in files if f.exists() for r in load([f], args.n)]
    if not records:
        raise SystemExit(f"{args.run}: no world records with meta.seed (run `allava quickstart --out {args.run}` first)")
    scenes = list(dict.fromkeys(s for s, _, _ in records))
    new = verdicts(records, exact, exact_keys)
    old = verdicts(records, lru_cache(maxsize=None)(verify.sampled_question_index), lru_cache(maxsize=None)(premise.sampled_key_index))
    verify.question_index, premise._key_index = exact, exact_keys
    same = sum(a == b for a, b in zip(new, old))
    flagged = sum(bool(v[0] or v[1]) for v in new)
    print(f"{len(records)} question/answer pairs on {len(scenes)} scenes from {sum(f.exists() for f in files)} files: "
          f"verdicts identical on {same}/{len(records)} ({flagged} with a problem)")
    times: dict[str, list[float]] = {"exact": [], "sampled": []}
    for _ in range(args.reps):
        for name in ("exact", "sampled"):
            if name == "exact":
                verify.scene_questions.cache_clear()
                fn = verify.question_index.__wrapped__
            else:
                fn = verify.sampled_question_index
            t0 = time.perf_counter()
            for s in scenes:
                fn(s)
            times[name].append(1e3 * (time.perf_counter() - t0) / len(scenes))
    for name, ts in times.items():
        print(f"{name:>8}: {min(ts):.2f} ms/scene min, {statistics.median(ts):.2f} median")
    ratio = statistics.median(times["sampled"]) / statistics.median(times["exact"])
    print(f"exact index is {ratio:.1f}x faster (median)")
    print(json.dumps({"pairs": len(records), "scenes": len(scenes), "identical": same, "flagged": flagged,
                      "ms_per_scene": times, "speedup_median": ratio}))
    if same != len(records):
        raise SystemExit("verdicts differ")


if __name__ == "__main__":
    main()
