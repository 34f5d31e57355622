"""Training throughput, measured against what a user following the Hugging Face docs would write.

``--compare hf`` (default): a plain ``transformers.Trainer`` + ``LlavaForConditionalGeneration`` +
the processor's chat template (``apply_chat_template``, then ``processor(text, images)`` in the
collator: images decoded and preprocessed every step, the vision tower run every step, padding
to the batch's longest, labels = every non-pad, non-image token) against ``allava train``'s
``run_stage`` (modality-length grouping, cached vision features, the labels-only LM head, and
``--packing``), from the same saved initial model, on the same records, batch and steps, on two
data sets: an image + text mix (captions, short VQA and text-only records) and short VQA only.
Prints samples/s of each and the ratio, min and median over ``--rounds`` interleaved rounds, and
padded/real tokens of each arm's batches (the same lengths, in each arm's batch order).

``--compare features``: the older study, cache on/off x labels-only head on/off within allava.

samples/s is timed over the training steps after the first ``steps // 10`` (one-off kernel and
allocator warm-up), by the wall clock and by the process's CPU clock (samples per CPU second: what
the run costs, steadier than wall time where other jobs share the cores); the feature store is filled once, before the first allava round, and its cost
printed separately. The machine may be shared: run the arms interleaved and read min and median.

    python benchmarks/train_throughput.py                       # quickstart preset, CPU, a few minutes on 2 cores
    python benchmarks/train_throughput.py --threads 2 --json out.json
    python benchmarks/train_throughput.py --compare features --lm-vocab 51200
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
    with open(root / "mix.jsonl", "w") as f:  # captions, short VQA and text-only, a third each
        for r in range(n_records):
            i = r % n_images
            colour, shape = facts[i]
            kind = r % 3
            if kind == 0:
                cap = (f"A {colour} {shape} fills the middle of the picture on a dark noisy background, "
                       f"with nothing else in view; the {shape} is {colour} and large.")
                rec = {"id": f"c{r}", "image": f"{i}.png", "conversations": [
                    {"from": "human", "value": "<image>\nDescribe the image in detail."}, {"from": "gpt", "value": cap}]}
            elif kind == 1:
                rec = {"id": f"q{r}", "image": f"{i}.png", "conversations": [
                    {"from": "human", "value": "<image>\nWhat colour is the shape?\nAnswer the question using a single word or phrase."},
                    {"from": "gpt", "value": colour}]}
            else:
                words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 40)))
                rec = {"id": f"t{r}", "conversations": [
                    {"from": "human", "value": f"Repeat the words: {words}"}, {"from": "gpt", "value": words}]}
            f.write(json.dumps(rec) + "\n")
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
    """A TrainerCallback timing the steps after the first ``warm`` ones, in wall seconds and in this
    process's CPU seconds (all its threads; on a shared machine the wall clock also counts the time
    spent waiting for a core, the CPU clock does not)."""
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        t0 = t1 = c0 = c1 = None
        steps = 0

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == warm:
                self.t0, self.c0 = time.perf_counter(), time.process_time()
            elif state.global_step > warm:
                self.t1, self.c1, self.steps = time.perf_counter(), time.process_time(), state.global_step - warm

        def rates(self, batch: int) -> tuple[float, float]:
            """samples per wall second, samples per CPU second"""
            return self.steps * batch / (self.t1 - self.t0), self.steps * batch / (self.c1 - self.c0)

    return Timer()


def hf_messages(rec: dict) -> list[dict]:
    """LLaVA conversations as the processor's chat-template messages (image as a content part)."""
    out = []
    for turn in rec["conversations"]:
        role = "user" if turn["from"] == "human" else "assistant"
        text = turn["value"]
        content = []
        if "<image>" in text:
            content.append({"type": "image"})
            text = text.replace("<image>\n", "").replace("<image>", "")
        content.append({"type": "text", "text": text})
        out.append({"role": role, "content": content})
    return out


def hf_collator(processor, image_folder: Path):
    """The docs' collator: render with the chat template, decode + preprocess the images, pad to
    the longest, train on every non-pad, non-image token."""
    from PIL import Image

    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)

    def collate(recs: list[dict]) -> dict:
        texts = [processor.apply_chat_template(hf_messages(r), tokenize=False) for r in recs]
        images = [Image.open(image_folder / r["image"]).convert("RGB") for r in recs if r.get("image")]
        batch = processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = -100
        labels[labels == image_id] = -100
        batch["labels"] = labels
        return dict(batch)

    return collate


def run_hf(model_dir: str, records: list[dict], image_folder: Path, out: Path, args, warm: int,
           bf16: bool) -> tuple[float, float]:
    """The plain Trainer arm; returns samples per wall / CPU second after the warm-up steps."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration, Trainer, TrainingArguments

    processor = AutoProcessor.from_pretrained(model_dir)
    processor.tokenizer.padding_side = "right"
    model = LlavaForConditionalGeneration.from_pretrained(model_dir)
    model.model.vision_tower.requires_grad_(False)  # frozen, as in both ALLaVA stages
    targs = TrainingArguments(output_dir=str(out), per_device_train_batch_size=args.batch, max_steps=args.steps,
                              learning_rate=1e-3, use_cpu=not torch.cuda.is_available(), bf16=bf16,
                              report_to="none", remove_unused_columns=False, save_strategy="no", logging_steps=10,
                              disable_tqdm=True, seed=0, dataloader_num_workers=0)
    timer = step_timer(warm)
    Trainer(model=model, args=targs, train_dataset=records, data_collator=hf_collator(processor, image_folder),
            callbacks=[timer]).train()
    return timer.rates(args.batch)


def padding(lengths: list[int], orders: list[list[int]], batch: int, collate) -> float:
    """Tokens fed per real token over the batches of each order (``collate``: a list of lengths ->
    the batch's token count)."""
    real = fed = 0
    for order in orders:
        for k in range(0, len(order) - batch + 1, batch):
            chunk = [lengths[i] for i in order[k:k + batch]]
            real, fed = real + sum(chunk), fed + collate(chunk)
    return fed / real


def padding_report(dataset, batch: int, packing: bool) -> dict[str, float]:
    """padded/real tokens: the baseline's random order padded to the longest, ours grouped and
    padded to a multiple of 8 (and packed), on the same encoded lengths."""
    import torch

    from allava.data.dataset import Collator, PackingCollator
    from allava.train.sampler import ModalityGroupedSampler

    lengths = [len(dataset.encoder.encode(dataset.record(i)[0]["conversations"]).input_ids) for i in range(len(dataset))]
    signed = [n if m > 0 else -n for n, m in zip(lengths, dataset.modality_lengths)]
    g = torch.Generator().manual_seed(0)
    rand = [torch.randperm(len(lengths), generator=g).tolist()]
    grouped = [list(ModalityGroupedSampler(signed, batch, seed=0))]

    def fake(chunk):
        return [{"input_ids": torch.zeros(n, dtype=torch.long), "labels": torch.zeros(n, dtype=torch.long),
                 "pixel_values": None} for n in chunk]

    ours = PackingCollator(0, 8) if packing else Collator(0, 8)
    return {"baseline": padding(lengths, rand, batch, lambda c: len(c) * max(c)),
            "allava": padding(lengths, grouped, batch, lambda c: ours(fake(c))["input_ids"].numel())}


def compare_hf(args, root: Path, clip: str, lm: str, data_root: Path) -> dict:
    import statistics

    import torch

    from allava.data.dataset import ConversationDataset, DataSource
    from allava.data.tokenize import ConversationEncoder
    from allava.model.build import ModelSpec, Recipe, build_model, save_checkpoint
    from allava.train.precision import use_bf16
    from allava.train.stages import StageConfig, run_stage

    spec = ModelSpec(vision_tower=clip, language_model=lm, template="human_assistant",
                     vision_feature_layer=args.layer, vision_feature_select_strategy=args.strategy)
    torch.manual_seed(0)
    model, processor = build_model(spec)
    init = root / "init"
    save_checkpoint(model, processor, Recipe(spec=spec), init)
    bf16 = use_bf16("auto")
    warm = max(1, args.steps // 10)
    images = data_root / "images"
    report: dict = {"threads": torch.get_num_threads(), "steps": args.steps, "batch": args.batch, "sets": {}}
    for name in ("mix", "vqa"):
        path = data_root / f"{name}.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()]
        cfg = StageConfig(data=[DataSource(str(path), str(images))], train=["projector", "language_model"],
                          max_steps=args.steps, global_batch_size=args.batch, per_device_batch_size=args.batch,
                          lr=1e-3, save_steps=10**9, logging_steps=10, seed=0, packing=args.packing,
                          model_max_length=2048)
        enc = ConversationEncoder(processor.tokenizer, spec.template, processor.image_token,
                                  model.config.image_seq_length, cfg.model_max_length)
        pads = padding_report(ConversationDataset(cfg.data, enc, processor.image_processor), args.batch, args.packing)
        rates: dict[str, list[float]] = {"baseline": [], "allava": []}
        cpu: dict[str, list[float]] = {"baseline": [], "allava": []}
        cache_s = 0.0
        for rnd in range(args.rounds):
            wall, per_cpu = run_hf(str(init), records, images, root / "runs" / f"hf-{name}-{rnd}", args, warm, bf16)
            rates["baseline"].append(wall)
            cpu["baseline"].append(per_cpu)
            timer = step_timer(warm)
            r = run_stage("bench", cfg, str(init), root / "runs" / f"allava-{name}-{rnd}", spec, progress=False,
                          callbacks=[timer], feature_cache_dir=root / "feature_cache")
            cache_s = max(cache_s, r.feature_cache.get("compute_s", 0.0)) if rnd == 0 else cache_s
            wall, per_cpu = timer.rates(args.batch)
            rates["allava"].append(wall)
            cpu["allava"].append(per_cpu)
            print(f"[{name} round {rnd + 1}] baseline {rates['baseline'][-1]:7.1f}  allava {rates['allava'][-1]:7.1f} "
                  f"samples/s   per CPU-s {cpu['baseline'][-1]:7.1f} vs {cpu['allava'][-1]:7.1f}", flush=True)

        def summary(values: dict[str, list[float]]) -> dict:
            ratios = [a / b for a, b in zip(values["allava"], values["baseline"])]
            out = {k: {"min": min(v), "median": statistics.median(v), "all": v} for k, v in values.items()}
            return {**out, "ratio": {"min": min(ratios), "median": statistics.median(ratios), "all": ratios}}

        wall_s, cpu_s = summary(rates), summary(cpu)
        entry = {"samples_per_s": {k: wall_s[k] for k in rates}, "ratio": wall_s["ratio"],
                 "samples_per_cpu_s": {k: cpu_s[k] for k in cpu}, "ratio_per_cpu_s": cpu_s["ratio"],
                 "padded_per_real_token": pads, "feature_cache_fill_s": cache_s, "records": len(records)}
        report["sets"][name] = entry
    label = {"mix": "image+text mix", "vqa": "short VQA"}
    print(f"\nallava train vs plain transformers.Trainer ({report['threads']} threads, {args.steps} steps of "
          f"{args.batch}, {args.rounds} interleaved rounds; packing {'on' if args.packing else 'off'})")
    for name, e in report["sets"].items():
        b, a, q = e["samples_per_s"]["baseline"], e["samples_per_s"]["allava"], e["ratio"]
        cb, ca, cq = e["samples_per_cpu_s"]["baseline"], e["samples_per_cpu_s"]["allava"], e["ratio_per_cpu_s"]
        print(f"  {label[name]:15s} baseline {b['min']:7.1f} / {b['median']:7.1f}   allava {a['min']:7.1f} / "
              f"{a['median']:7.1f} samples/s (min / median)   ratio {q['min']:.2f}-{q['median']:.2f}x   "
              f"padded/real tokens {e['padded_per_real_token']['baseline']:.2f} vs "
              f"{e['padded_per_real_token']['allava']:.2f}   (feature store filled once: {e['feature_cache_fill_s']:.1f} s)")
        print(f"  {'':15s} per CPU second: baseline {cb['min']:7.1f} / {cb['median']:7.1f}   allava {ca['min']:7.1f} / "
              f"{ca['median']:7.1f}   ratio {cq['min']:.2f}-{cq['median']:.2f}x")
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compare", choices=("hf", "features"), default="hf")
    ap.add_argument("--packing", action=argparse.BooleanOptionalAction, default=True,
                    help="allava arm packs batches (--no-packing: grouping and cache only)")
    ap.add_argument("--json", help="write the figures here too")
    ap.add_argument("--preset", default="quickstart")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--image-px", type=int, default=256, help="source image side (the processor resizes it)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--layer", type=int, default=-1, help="vision_feature_layer (quickstart: -1)")
    ap.add_argument("--strategy", default="full", help="vision_feature_select_strategy (quickstart: full)")
    ap.add_argument("--lm-vocab", type=int, default=0, help="LM head rows (0: the toy tokenizer's 512)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (min and median reported)")
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
    if args.compare == "hf":
        report = compare_hf(args, root, clip, lm, root / "data")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
        return
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
