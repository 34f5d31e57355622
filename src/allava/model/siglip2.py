"""SigLIP2 vision towers in a LLaVA model.

SigLIP2 ships two kinds of checkpoint:

- **FixRes** (``google/siglip2-{base,large,so400m,giant}-patch{14,16}-{224,256,384,512}``): saved as
  ``model_type: siglip`` with the ``SiglipModel`` graph; they load as ``SiglipVisionModel`` like
  SigLIP 1 and need nothing here.
- **NaFlex** (``google/siglip2-*-naflex``, ``model_type: siglip2``): ``Siglip2VisionModel`` takes
  patch sequences, not images: ``pixel_values`` ``[B, max_num_patches, 3*P*P]`` plus a
  ``pixel_attention_mask`` and the ``spatial_shapes`` of each image, which keeps its aspect ratio,
  so images have different numbers of real patches. That does not fit ``LlavaForConditionalGeneration``
  (transformers 5.x):
  1. ``LlavaProcessor`` counts each image's ``<image>`` tokens from the pixel tensor's height and
     width, which a patch sequence does not have, and the model has one ``image_seq_length``;
  2. ``LlavaModel.get_image_features`` calls the tower with ``pixel_values`` only; the mask and the
     shapes could ride in ``**kwargs``, but those kwargs also go to the language model, and the
     features of the padding patches would be scattered into the prompt as image tokens.

What is supported: a NaFlex tower at one fixed square grid of ``g x g`` patches (``g`` =
floor(sqrt(the processor's ``max_num_patches``))) is exactly a SigLIP 1 vision transformer at
``image_size = g * P``: the linear patch embedding is a ``P``-strided convolution over the same
``(P, P, C)`` patch layout, and the position table is the model's own bilinear (antialiased)
resize of its grid to ``g x g``, computed once. ``to_fixed_resolution`` converts it so, and
``fixed_resolution_processor`` gives the matching ``SiglipImageProcessor`` (same resampling,
rescale and normalisation, resized to ``g*P`` square). On a square image the converted tower's
hidden states equal the NaFlex tower's (tests/test_backbones.py); other aspect ratios are squashed
to the square, as LLaVA's CLIP/SigLIP towers do. The checkpoint is a plain Llava + SigLIP folder.
"""
from __future__ import annotations

import math

import torch

from allava.config import ConfigError


def is_naflex(config) -> bool:
    """A SigLIP2 NaFlex vision config (or a dual encoder holding one)."""
    return getattr(config, "model_type", "") in ("siglip2", "siglip2_vision_model")


def fixed_resolution(tower: torch.nn.Module, image_processor) -> tuple[torch.nn.Module, object]:
    """The NaFlex ``tower`` and its processor as a SigLIP tower + processor at one square grid."""
    side = grid_side(image_processor, tower.config)
    return to_fixed_resolution(tower, side), fixed_resolution_processor(image_processor, side, tower.config.patch_size)


def grid_side(image_processor, config) -> int:
    """Patches per side of the fixed square grid: the processor's ``max_num_patches`` (its
    resolution), else the tower's own position grid."""
    n = getattr(image_processor, "max_num_patches", None) or config.num_patches
    return math.isqrt(int(n))


def to_fixed_resolution(tower: torch.nn.Module, side: int) -> torch.nn.Module:
    """A ``SiglipVisionModel`` computing what the NaFlex ``tower`` computes on ``side x side`` patches."""
    from transformers import SiglipVisionConfig, SiglipVisionModel
    from transformers.models.siglip2.modeling_siglip2 import Siglip2VisionEmbeddings

    c = tower.config
    grid = math.isqrt(c.num_patches)
    if grid * grid != c.num_patches or side < 1:
        raise ConfigError(f"model.vision_tower: a SigLIP2 NaFlex tower with num_patches={c.num_patches} (not a square "
                          f"grid) or a grid of {side} patches per side cannot run at a fixed square resolution")
    config = SiglipVisionConfig(
        hidden_size=c.hidden_size, intermediate_size=c.intermediate_size, num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads, num_channels=c.num_channels, image_size=side * c.patch_size,
        patch_size=c.patch_size, hidden_act=c.hidden_act, layer_norm_eps=c.layer_norm_eps,
        attention_dropout=c.attention_dropout, vision_use_head=getattr(c, "vision_use_head", True))
    dtype = tower.embeddings.patch_embedding.weight.dtype
    state = dict(tower.state_dict())
    p, d = c.patch_size, c.hidden_size
    # Linear over a flattened (P, P, C) patch == a P-strided Conv2d with weights [D, C, P, P]
    linear = state.pop("embeddings.patch_embedding.weight")
    state["embeddings.patch_embedding.weight"] = linear.reshape(d, p, p, c.num_channels).permute(0, 3, 1, 2).contiguous()
    table = state.pop("embeddings.position_embedding.weight").reshape(grid, grid, d)
    with torch.no_grad():
        resized = Siglip2VisionEmbeddings.resize_positional_embeddings(
            table, torch.tensor([[side, side]]), max_length=side * side)[0]
    state["embeddings.position_embedding.weight"] = resized.to(table.dtype)
    model = SiglipVisionModel(config).to(dtype)
    model.load_state_dict(state, strict=True)
    model.config.name_or_path = getattr(c, "_name_or_path", "")
    return model


def fixed_resolution_processor(image_processor, side: int, patch_size: int):
    """The ``SiglipImageProcessor`` feeding ``to_fixed_resolution``'s tower what the NaFlex
    processor feeds the NaFlex tower for a square image."""
    from transformers import SiglipImageProcessor

    size = side * patch_size
    return SiglipImageProcessor(size={"height": size, "width": size}, resample=image_processor.resample,
                                do_rescale=image_processor.do_rescale, rescale_factor=image_processor.rescale_factor,
                                do_normalize=image_processor.do_normalize, image_mean=image_processor.image_mean,
                                image_std=image_processor.image_std, do_convert_rgb=True)
