"""LoRA / QLoRA stages through ``peft``: adapters on the language model, the rest as ``train:`` says.

A stage with ``lora: {r, alpha, dropout, target_modules, quantize}`` (defaults: LLaVA-1.5's LoRA
recipe, ``scripts/v1_5/finetune_lora.sh``: r 128, alpha 256, dropout 0.05, every linear layer of
the LM as LLaVA's ``find_all_linear_names`` picks them, the LM head excluded) freezes the LM's own
weights, injects adapters into it in place (``peft.inject_adapter_in_model``: the model stays a
``LlavaForConditionalGeneration``, so the Trainer hooks, feature cache and per-module learning
rates work unchanged) and trains them together with the modules ``train:`` lists fully (the
projector).

What a LoRA stage writes, in its checkpoints and in ``final/`` alike: ``adapter_config.json`` +
``adapter_model.safetensors`` (peft's format and key names: ``PeftModel.from_pretrained`` takes
them) and ``non_lora_trainables.safetensors`` (LLaVA's name: the fully trained modules), never the
frozen base, which ``allava_recipe.json`` names (``lora_base``: the folder the stage started from,
or ``<stage>/base/`` saved once when it started from hub models). Loading such a folder
(``load_checkpoint``: the next stage, eval, chat, serve, export) rebuilds base + adapters and
merges them; ``allava export DIR --merge-lora --out OUT`` writes that as a plain folder.

``quantize: 4bit|8bit`` loads the frozen base through bitsandbytes (QLoRA; CUDA only) and merges
into the full-precision base on export, as QLoRA merges are done.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
NON_LORA_WEIGHTS = "non_lora_trainables.safetensors"
PEFT_PREFIX = "base_model.model."  # PeftModel's key prefix, so peft loads the adapters as they are
LM_PREFIX = "model.language_model."
QUANTIZE = ("4bit", "8bit")


@dataclass
class LoraSpec:
    """A stage's ``lora:`` section."""

    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=list)  # [] = every linear layer of the LM (LLaVA)
    quantize: str | None = None  # 4bit | 8bit: QLoRA (bitsandbytes, CUDA)

    def check(self) -> None:
        if self.r < 1:
            raise ValueError(f"r: expected a positive rank, got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"alpha: expected a positive number, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: expected a value in [0, 1), got {self.dropout}")
        if self.quantize is not None:
            check_quantize(self.quantize)
        require_peft()


def check_quantize(quantize: str) -> None:
    """One line where QLoRA cannot run: an unknown mode, no CUDA, or no bitsandbytes."""
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize: {quantize!r}; choose 4bit or 8bit (or leave it out for full-precision LoRA)")
    if not torch.cuda.is_available():
        raise ValueError(f"quantize: {quantize} (QLoRA) needs a CUDA GPU and bitsandbytes; this machine has no CUDA "
                         "device: leave quantize out to train the adapters in full precision")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ValueError(f"quantize: {quantize} needs bitsandbytes: pip install 'allava[qlora]'") from None


def lm_linear_names(model: torch.nn.Module, targets: list[str]) -> list[str]:
    """Full names of the LM's linear layers to adapt: all of them (``targets`` empty), or those whose
    last name part is listed (``q_proj``, ``v_proj``...). The LM head is never among them."""
    names = [n for n, m in model.named_modules()
             if n.startswith(LM_PREFIX) and isinstance(m, torch.nn.Linear)]
    if targets:
        names = [n for n in names if n.rsplit(".", 1)[-1] in targets]
        if not names:
            raise ValueError(f"lora.target_modules: none of {targets} is a linear layer of the language model")
    return names


def peft_config(spec: LoraSpec, model: torch.nn.Module):
    from peft import LoraConfig

    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=lm_linear_names(model, spec.target_modules), bias="none")


def require_peft() -> None:
    """One line where peft is not installed (it is an optional extra)."""
    try:
        import peft  # noqa: F401
    except ImportError:
        from allava.config import ConfigError

        raise ConfigError("lora: needs peft: pip install 'allava[lora]'") from None


def has_adapters(model: torch.nn.Module) -> bool:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # without peft no model has adapters
        return False
    return any(isinstance(m, LoraLayer) for m in model.modules())


def attach(model, processor, recipe, spec: LoraSpec, train: list[str], base, stage_dir: str | Path):
    """Freeze the LM, inject adapters, keep `train`'s other modules trainable; returns (model,
    trainable counts). `base`: the checkpoint folder the stage starts from, or the ModelSpec it was
    built from (then the built model is saved once to ``<stage_dir>/base``, the adapters' base)."""
    require_peft()
    from peft import inject_adapter_in_model

    from allava.model.build import save_checkpoint
    from allava.train.trainer import set_trainable

    if "language_model" not in train:
        raise ValueError("lora: adapts the language model; list language_model in train "
                         "(its own weights stay frozen, the adapters train)")
    if not isinstance(base, (str, Path)):
        base = Path(stage_dir) / "base"
        if not (base / "config.json").exists():
            save_checkpoint(model, processor, recipe, base)
    recipe.lora_base = str(Path(base).resolve())
    if spec.quantize:
        model = load_quantized(recipe.lora_base, spec.quantize, model)
    config = peft_config(spec, model)
    inject_adapter_in_model(config, model)  # (freezes all but the adapters: `train`'s modules are set after)
    counts = set_trainable(model, [m for m in train if m != "language_model"])
    model.allava_lora_config, model.allava_lora_base = config, recipe.lora_base
    model.enable_input_require_grads()  # gradient checkpointing with frozen embeddings still reaches the adapters
    lora = 0
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.requires_grad = True
            lora += param.numel()
    return model, {**counts, "language_model_lora": lora}


def load_quantized(base: str, quantize: str, like):
    """The base checkpoint again, its LM weights in 4 or 8 bit (bitsandbytes); tower, projector
    and head stay in `like`'s dtype (LLaVA's QLoRA keeps them out of the quantizer)."""
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig, LlavaForConditionalGeneration

    check_quantize(quantize)
    dtype = next(like.parameters()).dtype
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    bnb = BitsAndBytesConfig(load_in_4bit=quantize == "4bit", load_in_8bit=quantize == "8bit",
                             bnb_4bit_compute_dtype=compute, bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4",
                             llm_int8_skip_modules=["vision_tower", "multi_modal_projector", "lm_head"])
    model = LlavaForConditionalGeneration.from_pretrained(base, quantization_config=bnb, dtype=dtype,
                                                          device_map={"": torch.cuda.current_device()})
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def save(model, out_dir: str | Path) -> None:
    """Adapters (peft's format) + the fully trained non-LoRA weights; nothing frozen."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    adapters = {PEFT_PREFIX + k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(model).items()}
    save_file(adapters, out_dir / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    rest = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters()
            if p.requires_grad and "lora_" not in n}
    save_file(rest, out_dir / NON_LORA_WEIGHTS, metadata={"format": "pt"})
    config = model.allava_lora_config
    base = getattr(model, "allava_lora_base", None)
    config.base_model_name_or_path = base
    config.save_pretrained(out_dir)


def load_into(model, folder: str | Path) -> None:
    """Load saved adapters + non-LoRA weights into a model that has the same adapters; every saved
    tensor must land (a mismatch is an error, never a silent partial load)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(folder)
    adapters = {k[len(PEFT_PREFIX):]: v for k, v in load_file(folder / ADAPTER_WEIGHTS).items()}
    result = set_peft_model_state_dict(model, adapters)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise ValueError(f"{folder}: adapter weights that match no adapter: {unexpected[:3]}")
    rest = load_file(folder / NON_LORA_WEIGHTS)
    params = dict(model.named_parameters())
    missing = sorted(set(rest) - set(params))
    if missing:
        raise ValueError(f"{folder}: {NON_LORA_WEIGHTS} names weights the model lacks: {missing[:3]}")
    with torch.no_grad():
        for name, tensor in rest.items():
            params[name].copy_(tensor.to(params[name].dtype))


def merge(model) -> None:
    """Fold every adapter into its base layer (W + B A alpha / r) and remove it: a plain model."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    if hasattr(model, "allava_lora_config"):
        del model.allava_lora_config


def is_lora_folder(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).exists() and (Path(path) / NON_LORA_WEIGHTS).exists()


def load(path: str | Path, dtype: str | None = None, merged: bool = True):
    """A LoRA stage's folder as (model, processor, template): its base loaded (``lora_base``), the
    adapters and trained weights applied, merged unless `merged` is False."""
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import AutoProcessor

    from allava.config import ConfigError
    from allava.model.build import Recipe, load_checkpoint

    require_peft()
    path = Path(path)
    recipe = Recipe.load(path)
    if recipe is None or not recipe.lora_base:
        raise ConfigError(f"{path}: LoRA adapters without allava_recipe.json naming their base (lora_base)")
    if not Path(recipe.lora_base).exists():
        raise ConfigError(f"{path}: the adapters' base {recipe.lora_base} does not exist (moved or deleted?)")
    model, _, _ = load_checkpoint(recipe.lora_base, dtype=dtype)
    config = LoraConfig.from_pretrained(str(path))
    inject_adapter_in_model(config, model)
    model.allava_lora_config = config
    model.allava_lora_base = recipe.lora_base
    load_into(model, path)
    if merged:
        merge(model)
    processor = AutoProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = "left"
    return model, processor, recipe.spec.template


def trainer_class(base):
    """`base` (the stage's Trainer class) with checkpoints that hold only what trains: adapters +
    non-LoRA trainables (so they stay small), loaded back strictly on resume."""

    class LoraTrainer(base):
        def _save(self, output_dir=None, state_dict=None):
            output_dir = output_dir if output_dir is not None else self.args.output_dir
            save(self.accelerator.unwrap_model(self.model), output_dir)
            torch.save(self.args, Path(output_dir) / "training_args.bin")

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            load_into(model if model is not None else self.model, resume_from_checkpoint)

    return LoraTrainer


def describe(path: str | Path) -> dict:
    """What a LoRA folder holds (for the export summary)."""
    config = json.loads((Path(path) / ADAPTER_CONFIG).read_text())
    return {"r": config.get("r"), "alpha": config.get("lora_alpha"), "base": config.get("base_model_name_or_path"),
            "target_modules": len(config.get("target_modules") or [])}
