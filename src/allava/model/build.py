"""Build, save and load the LLaVA model: a Hugging Face ``LlavaForConditionalGeneration``.

Any vision tower (CLIP / SigLIP) and any causal LM, each by hub id or local path, joined by a
2-layer GELU MLP projector. A saved checkpoint is a plain ``transformers`` folder (model +
processor with the chat template it was trained on) plus ``allava_recipe.json`` (our metadata),
so it loads with ``LlavaForConditionalGeneration.from_pretrained`` + ``AutoProcessor``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoProcessor,
    AutoTokenizer,
    CLIPVisionModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from allava.config import ConfigError
from allava.data.templates import get_template, resolve_template
from allava.data.tokenize import chat_template_for, stop_token_ids
from allava.model import siglip2

RECIPE_FILE = "allava_recipe.json"
IMAGE_TOKEN = "<image>"
DTYPES = ("float32", "bfloat16", "float16")
PAD_TOKEN = "<pad>"


@dataclass
class ModelSpec:
    vision_tower: str
    language_model: str
    template: str = "vicuna_v1"
    vision_feature_layer: int = -2  # LLaVA-1.5: the penultimate layer's patch features
    vision_feature_select_strategy: str = "default"  # drop CLS
    projector_hidden_act: str = "gelu"
    dtype: str = "float32"

    def check(self) -> None:
        """Refuse a bad template, dtype or missing local folder when the recipe is loaded, not
        after both models have been built."""
        from allava.model.paths import check_model_path

        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: {self.dtype!r} is not a dtype; choose from {list(DTYPES)}")
        if self.vision_feature_select_strategy not in ("default", "full"):
            raise ValueError(f"vision_feature_select_strategy: {self.vision_feature_select_strategy!r}; "
                             "choose default (drop CLS) or full")
        try:
            get_template(self.template) if self.template != "auto" else None
        except ValueError as e:
            raise ValueError(f"template: {e}") from None
        check_model_path(self.vision_tower, "vision_tower")
        check_model_path(self.language_model, "language_model")


@dataclass
class Recipe:
    """What we know about how a checkpoint was made, saved beside the model."""

    spec: ModelSpec
    stage: str = "init"
    history: list[dict] = field(default_factory=list)
    lora_base: str | None = None  # a LoRA stage's folder: the checkpoint its adapters apply to (model/lora.py)

    def save(self, out_dir: str | Path) -> None:
        Path(out_dir, RECIPE_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, out_dir: str | Path) -> "Recipe | None":
        path = Path(out_dir, RECIPE_FILE)
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        if raw["spec"].get("template") == "plain" and _saved_template_has(out_dir, "Human: "):
            raw["spec"]["template"] = "human_assistant"  # saved before 'plain' meant LLaVA's pretraining format
        return cls(spec=ModelSpec(**raw["spec"]), stage=raw.get("stage", "init"), history=raw.get("history", []),
                   lora_base=raw.get("lora_base"))


def _saved_template_has(folder: str | Path, text: str) -> bool:
    """Whether the chat template saved in `folder` (any of the files processors write) contains `text`."""
    names = ("chat_template.jinja", "chat_template.json", "processor_config.json", "tokenizer_config.json")
    return any(text in Path(folder, n).read_text(errors="replace") for n in names if Path(folder, n).is_file())


def _load_vision_tower(name: str, dtype: torch.dtype) -> torch.nn.Module:
    """The vision half as the class LlavaModel rebuilds from its config (CLIPVisionModel,
    SiglipVisionModel, ...), so a saved checkpoint's tower keys load back as they were trained."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    config = AutoConfig.from_pretrained(name)
    if config.model_type == "clip":  # a full CLIP checkpoint, like openai/clip-vit-large-patch14-336
        return CLIPVisionModel.from_pretrained(name, dtype=dtype)
    vision_config = getattr(config, "vision_config", None)
    if vision_config is not None and type(vision_config) in MODEL_MAPPING:  # SigLIP / SigLIP2 dual encoders
        return MODEL_MAPPING[type(vision_config)].from_pretrained(name, dtype=dtype)
    return AutoModel.from_pretrained(name, dtype=dtype)


def _prepare_tokenizer(name: str):
    tokenizer = AutoTokenizer.from_pretrained(name)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    tokenizer.padding_side = "left"  # batched generation; training pads in our collator
    return tokenizer


def num_additional_image_tokens(vision: torch.nn.Module) -> int:
    """1 for towers that prepend a CLS token (CLIP), 0 otherwise (SigLIP)."""
    return 1 if vision.config.model_type in ("clip_vision_model", "clip") else 0


def num_image_tokens(vision: torch.nn.Module, strategy: str = "default") -> int:
    """Image tokens per image, counted as ``LlavaProcessor`` counts them ("default" drops the CLS)."""
    n = (vision.config.image_size // vision.config.patch_size) ** 2 + num_additional_image_tokens(vision)
    return n - 1 if strategy == "default" else n


def _fetch(load, name: str, what: str):
    """`load(name)`, with a hub or network failure turned into one line naming the model."""
    from allava.model.paths import check_model_path, hub_error, looks_local

    check_model_path(name, what)
    try:
        return load(name)
    except OSError as e:
        if looks_local(name):
            raise
        raise hub_error(name, what, e) from None


def build_model(spec: ModelSpec) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """Join a pretrained vision tower and LM; only the projector starts from random init."""
    dtype = getattr(torch, spec.dtype)
    tokenizer = _fetch(_prepare_tokenizer, spec.language_model, "model.language_model")
    vision = _fetch(lambda n: _load_vision_tower(n, dtype), spec.vision_tower, "model.vision_tower")
    image_processor = None
    if siglip2.is_naflex(vision.config):  # SigLIP2 NaFlex: run as SigLIP at one square resolution (model/siglip2.py)
        vision, image_processor = siglip2.fixed_resolution(vision, AutoImageProcessor.from_pretrained(spec.vision_tower))
    lm = _fetch(lambda n: AutoModelForCausalLM.from_pretrained(n, dtype=dtype), spec.language_model,
                "model.language_model")
    config = LlavaConfig(
        vision_config=vision.config.to_dict(),
        text_config=lm.config.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=num_image_tokens(vision, spec.vision_feature_select_strategy),
        projector_hidden_act=spec.projector_hidden_act,
        vision_feature_layer=spec.vision_feature_layer,
        vision_feature_select_strategy=spec.vision_feature_select_strategy,
        tie_word_embeddings=lm.config.tie_word_embeddings,
    )
    with torch.device("meta"):  # no throw-away random init of the big parts
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = vision
    model.model.language_model = lm.base_model
    model.lm_head = lm.get_output_embeddings()
    model.model.multi_modal_projector = LlavaMultiModalProjector(config).to(dtype)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.config.text_config.vocab_size = model.get_input_embeddings().num_embeddings
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id

    if spec.vision_feature_select_strategy == "default" and not num_additional_image_tokens(vision):
        raise ConfigError(f"model.vision_feature_select_strategy: default drops the CLS token, but "
                          f"{vision.config.model_type} has none (every token is a patch); use full")
    image_processor = image_processor or AutoImageProcessor.from_pretrained(spec.vision_tower)
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision.config.patch_size,
        vision_feature_select_strategy=spec.vision_feature_select_strategy,
        chat_template=chat_template_for(resolve_template(spec.template, tokenizer), tokenizer),
        num_additional_image_tokens=num_additional_image_tokens(vision),
    )
    return model, processor


def use_template(processor, recipe: Recipe, name: str, model=None) -> None:
    """Train with template `name` from here on: the recipe records it, the processor's saved
    ``chat_template`` renders it and (with `model`) the generation config stops at the token it
    trains as the answer's stop, so the checkpoint serves with the format it was last trained on."""
    if name == "auto" and recipe.spec.template != "auto":  # resolved when the model was built: a checkpoint's
        name = recipe.spec.template                        # tokenizer carries our chat template, not its own
    name = resolve_template(name, processor.tokenizer)
    recipe.spec = replace(recipe.spec, template=name)  # a copy: the run's own ModelSpec stays as written
    processor.chat_template = chat_template_for(name, processor.tokenizer)
    if model is not None:
        stops = stop_token_ids(name, processor.tokenizer)
        model.generation_config.eos_token_id = stops[0] if len(stops) == 1 else stops


def save_checkpoint(model, processor, recipe: Recipe, out_dir: str | Path) -> None:
    """A full model folder; for a model with LoRA adapters, the adapters and the trained non-LoRA
    weights only (``model/lora.py``), its recipe naming the base they apply to."""
    from allava.model import lora

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if lora.has_adapters(model):
        lora.save(model, out_dir)
    else:
        recipe.lora_base = None
        model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    recipe.save(out_dir)


def load_checkpoint(path: str | Path, dtype: str | None = None):
    """Load a saved checkpoint (ours or any llava-hf one). Returns model, processor, template name."""
    from allava.model.paths import check_model_path, hub_error, looks_local

    from allava.model import lora

    name = str(path)
    check_model_path(name, "--model")
    path = Path(path)
    if lora.is_lora_folder(path):
        if dtype is not None and dtype not in DTYPES:
            raise ConfigError(f"--dtype: {dtype!r} is not a dtype; choose from {list(DTYPES)}")
        return lora.load(path, dtype)
    if path.exists() and not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: not a model folder (no config.json)")
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"--dtype: {dtype!r} is not a dtype; choose from {list(DTYPES)}")
    kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
    try:
        model = LlavaForConditionalGeneration.from_pretrained(path if looks_local(name) else name, **kwargs)
        processor = AutoProcessor.from_pretrained(path if looks_local(name) else name)
    except OSError as e:
        if looks_local(name):
            raise
        raise hub_error(name, "--model", e) from None
    processor.tokenizer.padding_side = "left"
    recipe = Recipe.load(path) if path.exists() else None
    template = resolve_template(recipe.spec.template, processor.tokenizer) if recipe else "vicuna_v1"
    return model, processor, template
