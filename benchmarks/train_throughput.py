"""Training throughput: samples/s with vs without the vision-feature cache, and with vs without the
LM head restricted to labelled positions, on the same data and steps, printed as ratios in one run.

Builds its own tiny backbones from a preset (random init, no downloads) and its own short-answer
VQA data (PNG images of random shapes, one question and a one-word answer each, as in the
quickstart's stage 2), then trains the same ``run_stage`` four ways:

    cache off / full head   (the old path: decode + preprocess + vision tower every step, head on every position)
    cache off / labels-only head
    cache on  / full head
    cache on  / labels-only head (the default)

samples/s is timed over the training steps after the first few (which pay one-off kernel and
allocator warm-up), the best of ``--rounds`` interleaved rounds (the machine may be shared); the
one-off cost of filling the store is printed separately, and the loss curves of the runs are
compared (they must agree).

    python benchmarks/train_throughput.py                       # quickstart preset, CPU, ~1-2 minutes on 2 cores
    python benchmarks/train_throughput.py --steps 200 --threads 8
    python benchmarks/train_throughput.py --lm-vocab 51200   # the head at Phi-2's vocabulary size
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

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 60, 220), "yellow": (230, 210, 20),
           "purple": (140, 40, 160), "orange": (240, 140, 20)}
SHAPES = ("circle", "square")
WORDS = ("a the red green blue yellow purple orange circle square shape image picture what colour is of "
         "answer question using single word or phrase describe left right top bottom there how many").split()


def build_backbones(root: Path, preset: str, lm_vocab: int = 0) -> tuple[str, str]:
    """``lm_vocab``: give the LM head that many rows (unused ones beyond the tokenizer), to price the
    head at a real LM's vocabulary (Phi-2: 51k) instead of the toy tokenizer's 512."""
    from transformers import CLIPImageProcessor, CLIPModel, LlamaForCausalLM

    from allava.model.presets import PRESETS
    from allava.train.tokenizer import train_tokenizer

    rng = random.Random(0)
    tok = train_tokenizer([" ".join(rng.choice(WORDS) for _ in range(16)) for _ in range(500)], root / "lm",
                          vocab_size=512)
    tok.save_pretrained(root / "clip")
    lm_preset, clip_preset = PRESETS[preset]
    ids = (len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    lm_config = lm_preset.config(*ids)
    lm_config.vocab_size = max(lm_config.vocab_size, lm_vocab)
    LlamaForCausalLM(lm_config).save_pretrained(root / "lm")
    CLIPModel(clip_preset.config(*ids)).save_pretrained(root / "clip")
    size = clip_preset.image_size
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(root / "clip")
    return str(root / "clip"), str(root / "lm")


def build_data(root: Path, n_images: int, n_records: int, image_px: int) -> Path:
    """Random shapes on a noisy background (so PNG decoding costs what a real picture costs)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = random.Random(1)
    nrng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True, exist_ok=True)
    facts = []
    for i in range(n_images):
        bg = nrng.integers(0, 60, (image_px, image_px, 3), dtype=np.uint8)
        im = Image.fromarray(bg)
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        box = [image_px // 4, image_px // 4, 3 * image_px // 4, 3 * image_px // 4]
        draw = ImageDraw.Draw(im)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
        im.save(root / "images" / f"{i}.png")
        facts.append((colour, shape))
    with open(root / "vqa.jsonl", "w") as f:
        for r in range(n_records):
            i = r % n_images
            colour, shape = facts[i]
            q, a = (("What colour is the shape?", colour) if r % 2 else ("What shape is there?", shape))
            f.write(json.dumps({"id": f"q{r}", "image": f"{i}.png", "conversations": [
                {"from": "human", "value": f"<image>\n{q}\nAnswer the question using a single word or phrase."},
                {"from": "gpt", "value": a}]}) + "\n")
    return root / "vqa.jsonl"


def step_timer(warm: int):
    """A TrainerCallback timing the steps after the first ``warm`` ones."""
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        t0 = t1 = None
        steps = 0

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == warm:
                self.t0 = time.perf_counter()
            elif state.global_step > warm:
                self.t1, self.steps = time.perf_counter(), state.global_step - warm

    return Timer()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="quickstart")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--image-px", type=int, default=256, help="source image side (the processor resizes it)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--layer", type=int, default=-1, help="vision_feature_layer (quickstart: -1)")
    ap.add_argument("--strategy", default="full", help="vision_feature_select_strategy (quickstart: full)")
    ap.add_argument("--lm-vocab", type=int, default=0, help="LM head rows (0: the toy tokenizer's 512)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best samples/s of each is kept")
    args = ap.parse_args()

    import torch

    from allava.data.dataset import DataSource
    from allava.model.build import ModelSpec
    from allava.train.stages import StageConfig, run_stage

    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="allava-train-bench-"))
    clip, lm = build_backbones(root / "backbones", args.preset, args.lm_vocab)
    data = build_data(root / "data", args.images, args.steps * args.batch, args.image_px)
    spec = ModelSpec(vision_tower=clip, language_model=lm, template="plain", vision_feature_layer=args.layer,
                     vision_feature_select_strategy=args.strategy)
    base = StageConfig(data=[DataSource(str(data), str(root / "data" / "images"))],
                       train=["projector", "language_model"], max_steps=args.steps, global_batch_size=args.batch,
                       per_device_batch_size=args.batch, lr=1e-3, save_steps=10**9, logging_steps=1, seed=0)
    runs = [("cache off, full head", "off", False), ("cache off, labels-only head", "off", True),
            ("cache on,  full head", "on", False), ("cache on,  labels-only head", "on", True)]
    warm = max(1, args.steps // 10)
    results: dict[str, object] = {}
    sps: dict[str, float] = {}
    print(f"preset {args.preset}, LM head {args.lm_vocab or 'tokenizer'} rows, {torch.get_num_threads()} threads, {args.steps} steps of {args.batch} "
          f"(timed after step {warm}), {args.images} images of {args.image_px}px, {args.rounds} rounds, "
          f"device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    for rnd in range(args.rounds):
        for label, cache, labels_only in runs:
            cfg = StageConfig(**{**base.__dict__, "feature_cache": cache, "lm_head_on_labels_only": labels_only})
            timer = step_timer(warm)
            t0 = time.perf_counter()
            r = run_stage("bench", cfg, spec, root / "runs" / f"{rnd}-{label.replace(',', '').replace(' ', '_')}",
                          spec, progress=False, callbacks=[timer], feature_cache_dir=root / "feature_cache")
            rate = timer.steps * args.batch / (timer.t1 - timer.t0)
            sps[label] = max(sps.get(label, 0.0), rate)
            results.setdefault(label, r)
            fc = r.feature_cache
            extra = (f"; store: {fc['computed']} computed, {fc['hits']} hits, {fc['bytes_on_disk'] / 1e6:.2f} MB, "
                     f"{fc['compute_s']:.1f} s" if fc.get("used") else "")
            print(f"[round {rnd + 1}] {label:28s} {rate:8.1f} samples/s  (stage {time.perf_counter() - t0:.1f} s"
                  f"{extra})", flush=True)

    print("best of rounds (samples/s):")
    for label, _, _ in runs:
        print(f"  {label:28s} {sps[label]:8.1f}")
    off_full, off_sparse, on_full, on_sparse = (sps[k] for k, _, _ in runs)
    print("ratios (samples/s):")
    print(f"  cache on / off         (full head):         {on_full / off_full:.2f}x")
    print(f"  cache on / off         (labels-only head):  {on_sparse / off_sparse:.2f}x")
    print(f"  labels-only / full head (cache off):        {off_sparse / off_full:.2f}x")
    print(f"  labels-only / full head (cache on):         {on_sparse / on_full:.2f}x")
    print(f"  both / neither:                             {on_sparse / off_full:.2f}x")
    curves = [dict(r.losses) for r in results.values()]
    diff = max(abs(c[s] - curves[0][s]) for c in curves[1:] for s in curves[0])
    print(f"loss curves: max |difference| from the old path over {len(curves[0])} logged steps = {diff:.2e}")


if __name__ == "__main__":
    main()
