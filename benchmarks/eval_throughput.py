"""Evaluation throughput: answers/s of `Answerer` at batch 1 vs 8 vs 32, printed as ratios.

A tiny random-init LLaVA built from a preset (no downloads), synthetic questions of varied length
with an image each, greedy decoding of a fixed budget of new tokens. Also checks that every batch
size gives the same answers as batch 1 (left padding must not change greedy outputs).

    python benchmarks/eval_throughput.py                     # quickstart preset, CPU, ~1 minute on 2 cores
    python benchmarks/eval_throughput.py --device cuda --n 256
"""
from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = ("a red circle at the top left and a blue square below it what colour is the shape how many objects are "
         "there which one is larger describe the image left right above below green yellow")

VOCAB = WORDS.split()


def build_checkpoint(root: Path, preset: str) -> Path:
    from PIL import Image  # noqa: F401  (fail early without pillow)
    from transformers import CLIPImageProcessor, CLIPModel, LlamaForCausalLM

    from allava.model.build import ModelSpec, Recipe, build_model, save_checkpoint
    from allava.model.presets import PRESETS
    from allava.train.tokenizer import train_tokenizer

    rng = random.Random(0)
    texts = [" ".join(rng.choice(VOCAB) for _ in range(16)) for _ in range(500)]
    tok = train_tokenizer(texts, root / "lm", vocab_size=512)
    tok.save_pretrained(root / "clip")
    lm_preset, clip_preset = PRESETS[preset]
    ids = (len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    LlamaForCausalLM(lm_preset.config(*ids)).save_pretrained(root / "lm")
    CLIPModel(clip_preset.config(*ids)).save_pretrained(root / "clip")
    size = clip_preset.image_size
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(root / "clip")
    spec = ModelSpec(vision_tower=str(root / "clip"), language_model=str(root / "lm"))
    model, processor = build_model(spec)
    save_checkpoint(model, processor, Recipe(spec=spec), root / "ckpt")
    return root / "ckpt"


def questions(n: int, root: Path):
    from PIL import Image

    from allava.evaluate.generate import Question

    rng = random.Random(1)
    (root / "img").mkdir(exist_ok=True)
    out = []
    for i in range(n):
        path = root / "img" / f"{i}.png"
        Image.new("RGB", (64, 64), tuple(rng.randrange(256) for _ in range(3))).save(path)
        text = " ".join(rng.choice(VOCAB) for _ in range(rng.randint(4, 40)))
        out.append(Question([{"from": "human", "value": f"<image>\n{text}\nAnswer the question using a single word "
                                                        "or phrase."}], path))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quickstart")
    ap.add_argument("--n", type=int, default=64, help="questions per batch size")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None, choices=[None, "float32", "bfloat16", "float16"])
    ap.add_argument("--threads", type=int, help="torch CPU threads (1 is steadier on a shared machine)")
    args = ap.parse_args()

    import torch
    import transformers

    from allava.evaluate.generate import Answerer

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = build_checkpoint(root, args.preset)
        qs = questions(args.n, root)
        answerer = Answerer(ckpt, dtype=args.dtype, device=args.device)
        answerer.answer(qs[:2], args.max_new_tokens)  # warm-up
        results, reference = {}, None
        for bs in [int(b) for b in args.batch_sizes.split(",")]:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            answers = []
            for start in range(0, len(qs), bs):
                answers += answerer.answer(qs[start:start + bs], args.max_new_tokens)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            reference = reference or answers
            same = sum(a == b for a, b in zip(answers, reference)) / len(qs)
            results[bs] = {"answers_per_s": len(qs) / dt, "seconds": dt, "same_as_batch1": same}
        base = results[min(results)]["answers_per_s"]
        print(f"device={answerer.model.device} dtype={answerer.model.dtype} preset={args.preset} n={args.n} "
              f"max_new_tokens={args.max_new_tokens} threads={torch.get_num_threads()}")
        for bs, r in results.items():
            print(f"batch {bs:>3}: {r['answers_per_s']:8.2f} answers/s  ratio vs batch 1: "
                  f"{r['answers_per_s'] / base:5.2f}x  same answers as batch 1: {100 * r['same_as_batch1']:.0f}%")
        print(json.dumps({str(k): {kk: round(vv, 4) for kk, vv in v.items()} for k, v in results.items()}))


if __name__ == "__main__":
    main()
