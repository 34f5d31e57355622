"""The offline judge's scene caches on a QC run's data order: the old sizes against SCENE_CACHE.

Reads `--n` stage-2 records of a quickstart world in file order (shuffled, as QC sees them), gives
each its scene as the judge does (the seed at the image's size, else the teacher's own description),
and runs the judge's look-ups (`check_answer`, `premise_problems`) once with the caches as they were
(4,096 question lists, 1,024 tables each) and once with `verify.SCENE_CACHE` tables, from cold caches,
in this one process. Prints ms per record, the table hit rate, the ratio, that both verdict lists are
identical, and the traced memory the caches hold at the end.

    python benchmarks/qc_scene_cache.py --run runs/quickstart --n 8000
"""
from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from functools import lru_cache
from pathlib import Path


def load(run: Path, n: int):
    from PIL import Image

    from allava.scenes.graph import SceneConfig, sample_scene
    from allava.scenes.world import instruction_files
    from allava.synth.teachers.scene import described_scene

    sizes: dict[str, int] = {}
    out = []
    for path in instruction_files(run / "world"):
        with path.open() as fh:
            for line in fh:
                r = json.loads(line)
                meta, conv = r.get("meta") or {}, r.get("conversations") or []
                if isinstance(meta.get("seed"), int) and r.get("image"):
                    if r["image"] not in sizes:
                        with Image.open(run / "world" / "images" / r["image"]) as im:
                            sizes[r["image"]] = im.size[0]
                    scene = sample_scene(meta["seed"], SceneConfig(image_size=sizes[r["image"]]))
                else:
                    scene = described_scene({"meta": meta})
                if scene is None or len(conv) < 2:
                    continue
                out.append((scene, [(conv[i]["value"], conv[i + 1]["value"]) for i in range(0, len(conv) - 1, 2)]))
    # both files interleaved as one QC input would be (the study writes them shuffled together)
    import random

    random.Random(0).shuffle(out)
    return out[:n]


def run(records, sizes: tuple[int, int]):
    from allava.quality import premise
    from allava.scenes import verify

    questions = lru_cache(maxsize=sizes[0])(verify.scene_questions.__wrapped__)
    index = lru_cache(maxsize=sizes[1])(verify.question_index.__wrapped__)
    keys = lru_cache(maxsize=sizes[1])(premise._key_index.__wrapped__)
    saved = verify.scene_questions, verify.question_index, premise._key_index, premise.scene_questions
    verify.scene_questions, verify.question_index, premise._key_index, premise.scene_questions = \
        questions, index, keys, questions
    try:
        t0 = time.perf_counter()
        verdicts = [tuple(tuple(verify.check_answer(s, q, a)) + tuple(premise.premise_problems(s, q, a))
                          for q, a in pairs) for s, pairs in records]
        seconds = time.perf_counter() - t0
        info = index.cache_info()
        return verdicts, seconds, info.hits / max(1, info.hits + info.misses)
    finally:
        verify.scene_questions, verify.question_index, premise._key_index, premise.scene_questions = saved


def held_mb(sizes, records) -> float:
    """Traced memory the caches' values hold after a pass over `records` (the scene keys exist anyway)."""
    import gc

    from allava.quality import premise
    from allava.scenes import verify

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    questions = lru_cache(maxsize=sizes[0])(verify.scene_questions.__wrapped__)
    index = lru_cache(maxsize=sizes[1])(verify.question_index.__wrapped__)
    keys = lru_cache(maxsize=sizes[1])(premise._key_index.__wrapped__)
    for s, _ in records:
        index(s), keys(s)
        questions(s)
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return held / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/quickstart"))
    ap.add_argument("--n", type=int, default=8000, help="records, in data order")
    args = ap.parse_args()
    from allava.scenes import verify

    records = load(args.run, args.n)
    scenes = len({s for s, _ in records})
    old_sizes, new_sizes = (4096, 1024), (verify.QUESTIONS_CACHE, verify.SCENE_CACHE)
    old, t_old, hit_old = run(records, old_sizes)
    new, t_new, hit_new = run(records, new_sizes)
    assert old == new, "verdicts differ"
    n = len(records)
    print(f"{n} records, {scenes} scenes; verdicts identical ({sum(map(any, new))} records with a problem)")
    print(f"old caches {old_sizes}: {1e3 * t_old / n:.2f} ms/record, table hit rate {hit_old:.1%}")
    print(f"new caches {new_sizes}: {1e3 * t_new / n:.2f} ms/record, table hit rate {hit_new:.1%}")
    print(f"speed-up {t_old / t_new:.2f}x")
    print(f"held after the run: old {held_mb(old_sizes, records):.0f} MB, new {held_mb(new_sizes, records):.0f} MB")
    print(json.dumps({"records": n, "scenes": scenes, "old_ms": 1e3 * t_old / n, "new_ms": 1e3 * t_new / n,
                      "old_hit": hit_old, "new_hit": hit_new}))


if __name__ == "__main__":
    main()
