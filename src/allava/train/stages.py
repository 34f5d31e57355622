"""The two-stage recipe: alignment (stage 1) then instruction tuning (stage 2), each resumable.

A stage writes ``checkpoint-N`` folders while it runs and ``final/`` plus ``summary.json`` when it
is done. Rerunning the same command skips finished stages and resumes an unfinished one from its
last complete checkpoint (optimizer, scheduler, RNG and data position restored by the Trainer).

With the vision tower frozen, a stage first fills the feature store (``feature_cache``; shared by
stages, reruns and runs pointing at the same ``feature_cache_dir``) and trains from it: the tower
never runs during training, and the saved checkpoint is the same plain Llava model, tower included.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import TrainerState, TrainingArguments, set_seed

from allava.config import ConfigError, from_dict, load_yaml
from allava.data.dataset import Collator, ConversationDataset, DataSource, PackingCollator
from allava.data.tokenize import ConversationEncoder
from allava.model import lora
from allava.model.build import ModelSpec, Recipe, build_model, load_checkpoint, save_checkpoint, use_template
from allava.model.lora import LoraSpec
from allava.train import feature_cache
from allava.train.attention import short_rows_eager
from allava.train.precision import use_bf16
from allava.train.progress import use_stage_progress
from allava.train.trainer import AllavaTrainer, set_trainable

log = logging.getLogger(__name__)


@dataclass
class StageConfig:
    data: list[DataSource]
    train: list[str] = field(default_factory=lambda: ["projector"])
    enabled: bool = True
    epochs: float = 1.0
    max_steps: int = -1
    global_batch_size: int = 128
    per_device_batch_size: int = 8
    lr: float = 2e-5
    projector_lr: float | None = None
    min_lr: float = 0.0
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    model_max_length: int = 2048
    pad_to_multiple_of: int = 8  # with length grouping: 1.0x more padding than pad-to-longest, see README
    group_by_modality: bool = True
    packing: bool = False  # pack each batch's samples into shared rows (attention kept per sample; same loss)
    gradient_checkpointing: bool = False
    bf16: str | bool = "auto"  # auto: where the hardware does bf16 natively (GPU, or CPU with AVX512-BF16/AMX)
    save_steps: int = 500
    save_total_limit: int = 2
    keep_last_checkpoint: bool = False  # false: the last checkpoint-N (optimizer state) goes once final/ is written
    report_to: str = "none"  # none | tensorboard | wandb (the Trainer's integrations; logs under <stage>/runs)
    logging_steps: int = 10
    dataloader_workers: int = 0
    deepspeed: str | None = None  # a DeepSpeed JSON: configs/deepspeed/zero2.json, zero3.json
    fsdp: str | None = None  # an FSDP JSON (transformers' fsdp_config): configs/fsdp/full_shard.json
    seed: int = 42
    # auto: train from cached vision features when the tower is frozen and preprocessing deterministic
    feature_cache: str | bool = "auto"  # auto | on | off
    lm_head_on_labels_only: bool = True  # run the LM head only at labelled positions (same loss)
    template: str | None = None  # this stage's template (None: model.template); LLaVA-1.5 pretrains with 'plain'
    lora: LoraSpec | None = None  # adapters on the LM (model/lora.py); `train:` modules other than the LM train fully

    def check(self) -> None:
        """Value rules (batch sizes, modules, deepspeed...), checked when the recipe is read."""
        from allava.data.templates import get_template
        from allava.train.preflight import check_stage

        if self.template is not None:
            get_template(self.template)
        if self.lora is not None and "language_model" not in self.train:
            raise ValueError("lora: adapts the language model; list language_model in train (its weights stay frozen)")
        if self.lora is not None and (self.fsdp or self.deepspeed):
            raise ValueError("lora: runs on one process or DDP (torchrun / accelerate launch) only: its adapters are "
                             "saved from unsharded weights; remove fsdp / deepspeed from this stage")
        check_stage(self)


@dataclass
class TrainRecipe:
    output_dir: str
    model: ModelSpec
    stages: dict[str, StageConfig]
    threads: int | None = None  # torch CPU threads; None = torch's default
    feature_cache_dir: str | None = None  # None: <output_dir>/feature_cache; point runs at one to share it
    feature_cache_max_gb: float = 100.0  # disk budget of one store: refuse to cache above it


@dataclass
class StageResult:
    name: str
    model_dir: str
    steps: int
    wall_s: float
    tokens_per_s: float
    losses: list[tuple[int, float]]
    trainable: dict[str, int]
    data: dict
    skipped: bool = False
    train_s: float = 0.0  # the Trainer's own runtime (no model loading, no feature caching)
    samples_per_s: float = 0.0
    feature_cache: dict = field(default_factory=dict)  # used, reason, hits, computed, bytes_on_disk, compute_s
    tokens: int = 0  # non-padding input tokens trained on, all processes and resumes together
    parallel: dict = field(default_factory=dict)  # engine, processes, per_device, accumulation, global_batch


def load_recipe(path: str | Path, overrides: list[str] = ()) -> TrainRecipe:
    return from_dict(TrainRecipe, load_yaml(path, overrides))


def last_checkpoint(out_dir: Path) -> str | None:
    """Newest checkpoint whose trainer state was written (the Trainer writes it last)."""
    done = [p for p in out_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return str(max(done, key=lambda p: int(re.sub(r"\D", "", p.name)))) if done else None


def run_stage(name: str, cfg: StageConfig, init: ModelSpec | str, out_dir: str | Path,
              spec: ModelSpec, progress: bool = True, callbacks: list | None = None,
              feature_cache_dir: str | Path | None = None, feature_cache_max_gb: float = 100.0) -> StageResult:
    """`callbacks`: extra `transformers.TrainerCallback`s (e.g. the quickstart's learning curve).
    `feature_cache_dir`: the vision-feature store's root (None: `<out_dir>/../feature_cache`, beside
    the stage); `feature_cache_max_gb`: its disk budget."""
    out_dir = Path(out_dir)
    summary_path = out_dir / "summary.json"
    if summary_path.exists():
        result = StageResult(**json.loads(summary_path.read_text()))
        result.skipped = True
        return result
    t0 = time.perf_counter()
    set_seed(cfg.seed)  # the projector init and any new token embeddings are random
    if isinstance(init, ModelSpec):
        model, processor = build_model(init)
        recipe = Recipe(spec=init)
    else:
        model, processor, _ = load_checkpoint(init)
        recipe = Recipe.load(init) or Recipe(spec=spec)
    trainable = set_trainable(model, cfg.train)
    if cfg.lora:
        model, trainable = lora.attach(model, processor, recipe, cfg.lora, cfg.train, init, out_dir)
    use_template(processor, recipe, cfg.template or spec.template, model)
    encoder = ConversationEncoder(processor.tokenizer, recipe.spec.template, processor.image_token,
                                  model.config.image_seq_length, cfg.model_max_length)
    dataset = ConversationDataset(cfg.data, encoder, processor.image_processor, seed=cfg.seed,
                                  images_only="language_model" not in cfg.train)
    # DeepSpeed on CPU runs without use_cpu, where transformers refuses bf16: auto means fp32 there
    bf16 = use_bf16(cfg.bf16) and not (cfg.bf16 == "auto" and cfg.deepspeed and not torch.cuda.is_available())
    args = training_args(cfg, out_dir, bf16, progress, model)
    use_cache, why = feature_cache.decide(cfg.feature_cache, cfg.train, processor.image_processor,
                                          model.model.vision_tower, cfg.deepspeed)
    cache = feature_cache.CacheStats(used=False, reason=why)
    if use_cache:
        request = feature_cache.CacheRequest(
            root=feature_cache_dir or out_dir.parent / "feature_cache", max_gb=feature_cache_max_gb, bf16=bf16,
            batch_size=max(32, cfg.per_device_batch_size), workers=cfg.dataloader_workers,
            progress=progress and args.process_index == 0, device=str(args.device))
        dataset.features, cache = feature_cache.prepare(model, processor.image_processor, dataset.image_files(), request)
        cache.reason = why
    else:
        log.info("%s: no feature cache (%s)", name, why)
    trainer_class = lora.trainer_class(AllavaTrainer) if cfg.lora else AllavaTrainer  # LoRA: small checkpoints
    trainer = trainer_class(model=model, args=args, train_dataset=dataset,
                            data_collator=(PackingCollator if cfg.packing else Collator)(
                                processor.tokenizer.pad_token_id, cfg.pad_to_multiple_of),
                            processing_class=processor, group_by_modality=cfg.group_by_modality,
                            projector_lr=cfg.projector_lr, lm_head_on_labels_only=cfg.lm_head_on_labels_only,
                            callbacks=callbacks)
    clock = use_stage_progress(trainer, name, progress, global_batch(args))
    resume = last_checkpoint(out_dir)
    if resume:
        log.info("%s: resuming from %s", name, resume)
    finished = TrainerState.load_from_json(str(Path(resume) / "trainer_state.json")) if resume else None
    if finished is not None and 0 < finished.max_steps <= finished.global_step:
        # killed after its last checkpoint, before final/: resuming mid-epoch, the Trainer would take
        # one step more before it checks max_steps; the checkpoint already is the trained model
        trainer._load_from_checkpoint(resume)
        trainer.state = finished
        clock.restore(finished.stateful_callbacks.get(type(clock).__name__))
    else:
        # on CPU in bf16 short rows take the eager attention form (train/attention.py: the SDPA kernels are slow there)
        with short_rows_eager(model, bf16 and args.device.type == "cpu"):
            trainer.train(resume_from_checkpoint=resume)
    trainer.hooks.remove()

    final = out_dir / "final"
    recipe.stage = name
    recipe.history.append({"stage": name, "config": asdict(cfg), "steps": trainer.state.global_step})
    state, train_s = trainer.state, clock.seconds()
    report = dataset.report
    result = StageResult(
        name=name, model_dir=str(final), steps=state.global_step,
        wall_s=time.perf_counter() - t0, tokens_per_s=state.num_input_tokens_seen / max(train_s, 1e-9),
        losses=[(h["step"], h["loss"]) for h in state.log_history if "loss" in h],
        trainable=trainable, train_s=train_s, tokens=state.num_input_tokens_seen, parallel=parallel(trainer),
        samples_per_s=state.global_step * global_batch(args) / max(train_s, 1e-9), feature_cache=cache.to_dict(),
        data={"records": report.total, "used": report.used, "examples_in_mix": len(dataset),
              "skipped": report.skipped, "skipped_examples": report.examples},
    )
    # sharded weights (FSDP, ZeRO-3) are gathered by every process, written by the first
    weights = (trainer.accelerator.get_state_dict(trainer.model_wrapped)
               if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled else None)
    if trainer.is_world_process_zero():
        save_checkpoint(model, processor, recipe, final)
        if weights is not None:  # the model's own tensors are shards here: write the gathered ones over them
            model.save_pretrained(final, state_dict=weights)
        summary_path.write_text(json.dumps(asdict(result), indent=2))
        if not cfg.keep_last_checkpoint:  # final/ and summary.json are written: the stage is done
            for ckpt in out_dir.glob("checkpoint-*"):
                shutil.rmtree(ckpt, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()  # the next stage (every process) starts from final/
    return result


def parallel(trainer) -> dict:
    """How the stage was spread (recorded in the summary)."""
    args = trainer.args
    engine = ("fsdp" if trainer.is_fsdp_enabled else "deepspeed" if trainer.is_deepspeed_enabled
              else "ddp" if args.world_size > 1 else "dataparallel" if args.n_gpu > 1 else "single")
    return {"engine": engine, "processes": args.world_size, "per_device": args.per_device_train_batch_size,
            "accumulation": args.gradient_accumulation_steps, "global_batch": global_batch(args)}


def global_batch(args: TrainingArguments) -> int:
    """Samples per optimizer step over all processes (``train_batch_size`` counts DataParallel GPUs)."""
    return args.train_batch_size * args.world_size * args.gradient_accumulation_steps


def training_args(cfg: StageConfig, out_dir: Path, bf16: bool, progress: bool, model=None) -> TrainingArguments:
    """The stage's TrainingArguments, gradient accumulation from the real world size (the
    processes ``torchrun`` / ``accelerate launch`` started, x GPUs under DataParallel), so one
    recipe trains at the same global batch on 1, 2 or 8 processes."""
    kwargs = dict(
        output_dir=str(out_dir),
        per_device_train_batch_size=cfg.per_device_batch_size,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.lr,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": cfg.min_lr / cfg.lr if cfg.lr else 0.0},
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        bf16=bf16,
        # bf16 autocast on CPU needs it said explicitly; DeepSpeed then runs on its CPU accelerator
        use_cpu=not torch.cuda.is_available() and not cfg.deepspeed,
        activation_checkpointing=cfg.gradient_checkpointing,
        dataloader_pin_memory=torch.cuda.is_available(),
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        report_to="none" if cfg.report_to == "none" else [cfg.report_to],
        include_num_input_tokens_seen="non_padding",  # summed over processes, kept in checkpoints
        remove_unused_columns=False,
        dataloader_num_workers=cfg.dataloader_workers,
        deepspeed=cfg.deepspeed,
        fsdp=bool(cfg.fsdp) or None,
        fsdp_config=fsdp_config(cfg.fsdp, model) if cfg.fsdp else None,
        # a text-only batch leaves the projector without gradient on every process (DDP must know)
        ddp_find_unused_parameters=True,
        seed=cfg.seed,
        disable_tqdm=not progress,
    )
    args = TrainingArguments(**kwargs)
    if not torch.cuda.is_available():  # what accelerate would otherwise quietly turn into plain DDP
        if cfg.fsdp:
            raise ConfigError(f"fsdp: {cfg.fsdp} needs GPUs (accelerate enables FSDP only on accelerators); "
                              "on CPU remove the key and launch several processes for DDP")
        if cfg.deepspeed and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError(f"deepspeed: {cfg.deepspeed} on CPU runs in one process only (the Trainer reads a "
                              "world size of 1 there); use GPUs, one process, or DDP without the key")
    per_step = args.train_batch_size * args.world_size
    if cfg.global_batch_size % per_step:
        raise ConfigError(f"global_batch_size: {cfg.global_batch_size} is not a multiple of per_device_batch_size "
                          f"{cfg.per_device_batch_size} x {per_step // cfg.per_device_batch_size} device(s); "
                          f"set a multiple of {per_step}")
    args.gradient_accumulation_steps = cfg.global_batch_size // per_step
    if args.deepspeed:  # its "auto" values were filled with accumulation 1: fill them again, as __post_init__ does
        from accelerate.utils import DeepSpeedPlugin
        from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

        args.hf_deepspeed_config = HfTrainerDeepSpeedConfig(args.deepspeed)
        args.hf_deepspeed_config.trainer_config_process(args)
        args.deepspeed_plugin = DeepSpeedPlugin(hf_ds_config=args.hf_deepspeed_config)
    if args.fsdp_plugin_args is not None and not args.fsdp_config.get("shard_vision_tower", False):
        args.fsdp_plugin_args["ignored_modules"] = "model.vision_tower"  # frozen: a full copy on every process
    return args


def fsdp_config(path: str, model) -> dict:
    """The recipe's FSDP JSON, with the LM's decoder layer as the wrap unit unless it names one
    (and the tower's encoder layer too when ``shard_vision_tower`` is set)."""
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"fsdp: cannot read {path} ({e})") from None
    if model is not None and not config.get("transformer_layer_cls_to_wrap"):
        units = [type(model.model.language_model.layers[0]).__name__]
        if config.get("shard_vision_tower"):
            units += sorted({type(m).__name__ for m in model.model.vision_tower.modules() if m.__class__.__name__.endswith("EncoderLayer")})
        config["transformer_layer_cls_to_wrap"] = units
    return config


def run_recipe(recipe: TrainRecipe, progress: bool = True,
               callbacks: dict[str, list] | None = None) -> list[StageResult]:
    """Run the enabled stages in order; each starts from the previous stage's output.
    `callbacks`: extra TrainerCallbacks per stage name."""
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    init: ModelSpec | str = recipe.model
    results = []
    for name, cfg in recipe.stages.items():
        if not cfg.enabled:
            continue
        result = run_stage(name, cfg, init, Path(recipe.output_dir) / name, recipe.model, progress,
                           (callbacks or {}).get(name), feature_cache_dir=recipe.feature_cache_dir,
                           feature_cache_max_gb=recipe.feature_cache_max_gb)
        if result.data.get("skipped"):
            log.warning("%s: skipped %d records: %s", name, sum(result.data["skipped"].values()), result.data["skipped"])
        results.append(result)
        init = result.model_dir
    return results
