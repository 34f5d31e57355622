"""Tiny model presets: the same architectures as the real recipe, small enough for a laptop CPU.

Tests and the offline quickstart build their backbones from these configs and save them to a
folder, so the code that loads a hub id or local path is the code that runs.
"""
from __future__ import annotations

from dataclasses import dataclass

from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig, LlamaConfig


@dataclass
class TinyLM:
    """A Llama-architecture causal LM; Phi-2 / Vicuna stand-in."""

    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 768
    max_position_embeddings: int = 512

    def config(self, vocab_size: int, bos_token_id: int, eos_token_id: int, pad_token_id: int | None) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=True,
        )


@dataclass
class TinyCLIP:
    """A CLIP (ViT + text transformer) trained contrastively; CLIP-ViT-L/14-336 stand-in."""

    image_size: int = 96
    patch_size: int = 32  # one patch sees one cell of the scene grid (96 px, 3x3)
    vision_hidden: int = 192
    vision_layers: int = 4
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    projection_dim: int = 128
    max_text_positions: int = 77

    def config(self, vocab_size: int, bos_token_id: int, eos_token_id: int, pad_token_id: int) -> CLIPConfig:
        text = CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=self.text_hidden,
            intermediate_size=4 * self.text_hidden,
            num_hidden_layers=self.text_layers,
            num_attention_heads=self.text_heads,
            max_position_embeddings=self.max_text_positions,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            projection_dim=self.projection_dim,
        )
        vision = CLIPVisionConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            hidden_size=self.vision_hidden,
            intermediate_size=4 * self.vision_hidden,
            num_hidden_layers=self.vision_layers,
            num_attention_heads=self.vision_heads,
            projection_dim=self.projection_dim,
        )
        return CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=self.projection_dim)


PRESETS = {
    # Fast enough for unit tests (seconds).
    "test": (TinyLM(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
             TinyCLIP(image_size=32, patch_size=8, vision_hidden=32, vision_layers=2, vision_heads=2,
                      text_hidden=32, text_layers=1, text_heads=2, projection_dim=32)),
    # The offline quickstart. Narrow (128) so steps are cheap on 2 CPU cores; 4 layers because look-ups
    # by the question's content compose two attention hops: on cached features a 4-layer LM reached in
    # 1,000 steps (38.5%) what the 2-layer one needed 2,000+ for, at about twice the cost per step.
    "quickstart": (TinyLM(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=384),
                   TinyCLIP()),
}
