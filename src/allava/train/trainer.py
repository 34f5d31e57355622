"""``transformers.Trainer`` with what is specific to LLaVA training: per-stage freezing,
per-module learning rates, modality-grouped sampling and a tokens/s count."""
from __future__ import annotations

import time

import torch
from transformers import Trainer

from allava.train.sampler import ModalityGroupedSampler

MODULES: dict[str, tuple[str, ...]] = {
    "vision_tower": ("model.vision_tower.",),
    "projector": ("model.multi_modal_projector.",),
    "language_model": ("model.language_model.", "lm_head."),
}


def set_trainable(model: torch.nn.Module, train: list[str]) -> dict[str, int]:
    """Freeze everything except the named modules; returns trainable parameter counts."""
    unknown = set(train) - set(MODULES)
    if unknown:
        raise ValueError(f"unknown modules to train: {sorted(unknown)}; choose from {sorted(MODULES)}")
    counts = dict.fromkeys(train, 0)
    for name, param in model.named_parameters():
        owner = next((m for m in train if name.startswith(MODULES[m])), None)
        param.requires_grad = owner is not None
        if owner:
            counts[owner] += param.numel()
    return counts


class AllavaTrainer(Trainer):
    def __init__(self, *args, group_by_modality: bool = True, projector_lr: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.group_by_modality = group_by_modality
        self.projector_lr = projector_lr
        self.tokens_seen = 0
        self.started = time.perf_counter()

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.group_by_modality:
            return super()._get_train_sampler(train_dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return ModalityGroupedSampler(dataset.modality_lengths, self.args.train_batch_size * self.args.world_size,
                                      seed=seed, megabatch=max(1, self.args.gradient_accumulation_steps))

    def create_optimizer(self, model=None):
        if self.optimizer is None and self.projector_lr is not None:
            model = model if model is not None else self.model
            decay = set(self.get_decay_parameter_names(model))
            groups: dict[tuple[float, float], list] = {}
            for name, param in model.named_parameters():
                if param.requires_grad:
                    lr = self.projector_lr if name.startswith(MODULES["projector"]) else self.args.learning_rate
                    wd = self.args.weight_decay if name in decay else 0.0
                    groups.setdefault((lr, wd), []).append(param)
            cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            kwargs.pop("lr", None)
            self.optimizer = cls([{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()], **kwargs)
        return super().create_optimizer(model)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # ``save_pretrained`` writes llava-hf's original key names, which the Trainer's own
        # ``load_state_dict(strict=False)`` silently fails to match: load through
        # ``from_pretrained`` (which maps the names back) and copy strictly.
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        model = model if model is not None else self.model
        saved = type(model).from_pretrained(resume_from_checkpoint, dtype=next(model.parameters()).dtype)
        model.load_state_dict(saved.state_dict(), strict=True)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.tokens_seen += int(inputs["attention_mask"].sum())
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def tokens_per_second(self) -> float:
        return self.tokens_seen / max(1e-9, time.perf_counter() - self.started)
