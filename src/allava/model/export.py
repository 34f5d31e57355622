"""``allava export``: a checkpoint as a plain ``LlavaForConditionalGeneration`` folder.

The output loads with ``transformers`` alone (safetensors weights, processor with the chat template
the model was trained with) and serves with vLLM / SGLang as it is. A LoRA stage's folder (adapters +
trained non-LoRA weights over a named base) is merged first, which ``--merge-lora`` asks for
explicitly, so a folder of adapters is never mistaken for a full model.
"""
from __future__ import annotations

from pathlib import Path

from allava.config import ConfigError
from allava.model import lora
from allava.model.build import Recipe, load_checkpoint, save_checkpoint


def export(src: str | Path, out: str | Path, merge_lora: bool = False, dtype: str | None = None) -> dict:
    """Write `src` to `out` as a full folder; returns what was written (for the one-line summary)."""
    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve():
        raise ConfigError(f"--out {out}: the same folder as the checkpoint; choose another")
    is_lora = lora.is_lora_folder(src)
    if is_lora and not merge_lora:
        raise ConfigError(f"{src} holds LoRA adapters over {Recipe.load(src).lora_base if Recipe.load(src) else '?'}: "
                          "pass --merge-lora to write them merged into a plain model")
    if merge_lora and not is_lora:
        raise ConfigError(f"{src}: --merge-lora, but the folder holds no LoRA adapters ({lora.ADAPTER_CONFIG})")
    model, processor, _ = load_checkpoint(src, dtype=dtype)  # a LoRA folder comes back merged
    recipe = Recipe.load(src)
    if recipe is not None:
        recipe.history.append({"export": str(src), "merged_lora": is_lora})
    else:
        from allava.model.build import ModelSpec

        recipe = Recipe(spec=ModelSpec(vision_tower="?", language_model="?"))
    save_checkpoint(model, processor, recipe, out)
    return {"out": str(out), "merged_lora": lora.describe(src) if is_lora else None,
            "parameters": sum(p.numel() for p in model.parameters()), "dtype": str(next(model.parameters()).dtype)}
