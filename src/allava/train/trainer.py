"""``transformers.Trainer`` with what is specific to LLaVA training: per-stage freezing,
per-module learning rates, modality-grouped sampling, and two shortcuts that
leave the model and its loss unchanged:

- cached vision features: a batch may carry ``image_features`` (the frozen tower's selected
  features, from ``allava.train.feature_cache``) instead of ``pixel_values``; they are projected and
  scattered into the ``<image>`` positions exactly as ``LlavaModel`` does, so the tower never runs;
- the LM head only where there is a label: with short answers ~5% of positions carry a label, yet
  the (vocab x hidden) head ran on all of them; it now runs on the labelled positions only and the
  loss is the model's own mean cross-entropy (same ``num_items_in_batch`` normalisation).

Both work through forward pre-hooks on submodules, so the model is still called through its own
top-level ``forward`` (and whatever wraps it: autocast, DDP, DeepSpeed) and its weights, names and
saved checkpoints are untouched.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from transformers import Trainer

from allava.data.tokenize import IGNORE_INDEX

from allava.train.sampler import ModalityGroupedSampler, default_megabatch

HEAD_ROWS_MULTIPLE = 64

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


class BatchHooks:
    """Per-batch state read by two forward pre-hooks on a Llava model; inactive (no-ops) when unset."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.features: torch.Tensor | None = None  # [n_images, tokens, dim], pre-projector
        self.image_mask: torch.Tensor | None = None  # [B, T] bool: the <image> token positions
        self.positions: torch.Tensor | None = None  # [B, T] bool: positions whose shifted label is kept
        self.handles = [
            model.model.language_model.register_forward_pre_hook(self._inject, with_kwargs=True),
            model.lm_head.register_forward_pre_hook(self._select),
        ]

    def _inject(self, _module, args, kwargs):
        if self.features is None:
            return None
        embeds = kwargs["inputs_embeds"]
        # as LlavaModel.forward: project, cast to the embeddings, fill the <image> positions in order
        feats = self.model.model.multi_modal_projector(self.features)
        feats = feats.reshape(-1, feats.shape[-1]).to(embeds.device, embeds.dtype)
        mask = self.image_mask.to(embeds.device)
        if int(mask.sum()) != feats.shape[0]:
            raise ValueError(f"Image features and image tokens do not match, tokens: {int(mask.sum())}, "
                             f"features: {feats.shape[0]}")
        kwargs["inputs_embeds"] = embeds.masked_scatter(mask.unsqueeze(-1), feats)
        return args, kwargs

    def _select(self, _module, args):
        if self.positions is None:
            return None
        return (args[0][self.positions.to(args[0].device)],)

    @contextlib.contextmanager
    def batch(self, input_ids: torch.Tensor, features: torch.Tensor | None, positions: torch.Tensor | None):
        self.features, self.positions = features, positions
        self.image_mask = input_ids == self.model.config.image_token_id if features is not None else None
        try:
            yield
        finally:
            self.features = self.image_mask = self.positions = None

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class AllavaTrainer(Trainer):
    def __init__(self, *args, group_by_modality: bool = True, projector_lr: float | None = None,
                 lm_head_on_labels_only: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.group_by_modality = group_by_modality
        self.projector_lr = projector_lr
        self.lm_head_on_labels_only = lm_head_on_labels_only
        self.hooks = BatchHooks(self.accelerator.unwrap_model(self.model))

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.group_by_modality:
            return super()._get_train_sampler(train_dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        lengths = dataset.modality_lengths
        batch = self.args.train_batch_size * self.args.world_size
        return ModalityGroupedSampler(lengths, batch, seed=seed, megabatch=default_megabatch(
            len(lengths), batch, self.args.gradient_accumulation_steps))

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

    def floating_point_ops(self, inputs) -> int:
        # Trainer.floating_point_ops (6 x input tokens x non-embedding parameters), with the parameter
        # count taken once: the Trainer walks every module of the model for it at each step (~1 ms)
        main_input = getattr(self.model, "main_input_name", "input_ids")
        if main_input not in inputs or not hasattr(self.model, "num_parameters"):
            return super().floating_point_ops(inputs)
        if getattr(self, "_flop_params", None) is None:
            self._flop_params = self.model.num_parameters(exclude_embeddings=True)
        return 6 * inputs[main_input].numel() * self._flop_params

    def _track_num_input_tokens(self, inputs):
        if "num_tokens" not in inputs:
            return super()._track_num_input_tokens(inputs)
        # a packed batch has no attention mask to count: its collator counted the real tokens
        tokens = torch.as_tensor(inputs["num_tokens"], device=self.args.device, dtype=torch.int64)
        self.state.num_input_tokens_seen += self.accelerator.gather(tokens).sum().item()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        if inputs.pop("num_tokens", None) is not None:
            # packed: no cache, so transformers reads the restarting position ids as sample bounds
            inputs["use_cache"] = False
        features = inputs.pop("image_features", None)
        sparse = (self.lm_head_on_labels_only and not return_outputs and "labels" in inputs
                  and self.label_smoother is None and self.compute_loss_func is None)
        if not sparse:
            with self.hooks.batch(inputs["input_ids"], features, None):
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
        labels = inputs.pop("labels")
        # the model's own shift (ForCausalLMLoss): position t predicts label t+1
        shifted = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
        keep = (shifted != IGNORE_INDEX).contiguous()
        # round the row count up with unlabelled positions (ignored by the loss): few distinct
        # shapes keep CPU kernel caches and the allocator from growing, as the collator's padding does
        n_kept = int(keep.sum())
        spare = min(keep.numel(), -(-n_kept // HEAD_ROWS_MULTIPLE) * HEAD_ROWS_MULTIPLE) - n_kept
        if spare > 0:
            flat = keep.view(-1)
            flat[(~flat).nonzero().squeeze(1)[:spare]] = True
        with self.hooks.batch(inputs["input_ids"], features, keep):
            logits = model(**inputs).logits  # [n_kept, vocab]: the head ran on the kept positions only
        # the model's loss: sum / num_items_in_batch when the Trainer passes it (gradient accumulation),
        # else the mean over this batch's labelled positions
        n = num_items_in_batch if self.model_accepts_loss_kwargs else None
        loss = F.cross_entropy(logits.float(), shifted[keep].to(logits.device), ignore_index=IGNORE_INDEX,
                               reduction="mean" if n is None else "sum")
        if n is not None:
            loss = loss / (n.to(loss.device) if torch.is_tensor(n) else n)
            if self.args.average_tokens_across_devices:  # as Trainer.compute_loss
                loss = loss * (self.accelerator.num_processes // self.get_tp_size()
                               if self.args.n_gpu <= 1 else self.args.n_gpu)
        return loss
