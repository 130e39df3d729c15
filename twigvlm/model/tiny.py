"""Tiny random models, built offline: the tiny world's starting point (`python -m twigvlm.world.build`), the
benchmark's random shapes and the tests' fixtures.

Shapes are tiny except where it matters: the CLIP tower works at 336 px with 14 px patches, so an image is 576
visual tokens as in LLaVA-1.5-7B, and the pruning arithmetic of the real model applies unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from twigvlm.model.family import VisionLanguageModel
from twigvlm.model.llava import LlavaConfig, LlavaLlamaForCausalLM, vision_fields
from twigvlm.model.vision import make_image_processor


def randomize_decoder(model: VisionLanguageModel, skip: str, init_std: float = 0.05, head_std: float = 0.3,
                      quiet_from: int | None = None, quiet_scale: float = 0.05) -> VisionLanguageModel:
    """Random weights for everything but the parameters under `skip` (the vision tower): norms at one, biases and
    matrices normal (the head with `head_std`: peaked next-token distributions, no near-ties for greedy
    comparisons); decoder layers from `quiet_from` on barely move the residual stream (a twig copy of the layers
    below then agrees well with the whole model). Returns the model, eval and frozen."""
    for name, p in model.named_parameters():
        if name.startswith(skip):
            continue
        if p.dim() == 1:
            nn.init.ones_(p) if name.endswith("norm.weight") else nn.init.zeros_(p)
        else:
            nn.init.normal_(p, std=head_std if name == "lm_head.weight" else init_std)
    if quiet_from is not None:
        for layer in model.layers[quiet_from:]:
            layer.self_attn.o_proj.weight.data.mul_(quiet_scale)
            layer.mlp.down_proj.weight.data.mul_(quiet_scale)
    return model.eval().requires_grad_(False)


@dataclass(frozen=True)
class TinySpec:
    num_layers: int = 8
    hidden_size: int = 64
    intermediate_size: int = 128
    num_heads: int = 4
    num_kv_heads: int = 2  # grouped-query attention, so the kv-head path is exercised
    vision_hidden_size: int = 32
    vision_layers: int = 3
    vision_heads: int = 2
    image_size: int = 336
    patch_size: int = 14
    init_std: float = 0.05
    head_std: float = 0.3  # peaked next-token distributions: no near-ties for greedy comparisons
    quiet_from_layer: int | None = None  # layers from here on barely change the residual stream (a twig copy
    quiet_scale: float = 0.05            # of the layers below then agrees well with the whole model)
    seed: int = 0


def clip_config(spec: TinySpec) -> dict:
    return dict(hidden_size=spec.vision_hidden_size, intermediate_size=2 * spec.vision_hidden_size,
                num_attention_heads=spec.vision_heads, num_hidden_layers=spec.vision_layers,
                image_size=spec.image_size, patch_size=spec.patch_size, projection_dim=spec.vision_hidden_size,
                hidden_act="quick_gelu", layer_norm_eps=1e-5)


def write_clip(folder: str | Path, spec: TinySpec = TinySpec()) -> Path:
    """A random tiny CLIP vision tower saved by transformers, with CLIP's image preprocessing config."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    folder = Path(folder)
    torch.manual_seed(spec.seed + 1)
    CLIPVisionModel(CLIPVisionConfig(**clip_config(spec))).save_pretrained(str(folder))
    make_image_processor(spec.image_size).save_pretrained(str(folder))
    return folder


def tiny_config(spec: TinySpec, vocab_size: int, vision_tower: str) -> LlavaConfig:
    return LlavaConfig(
        vocab_size=vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_kv_heads,
        rms_norm_eps=1e-5, max_position_embeddings=4096, mm_vision_tower=vision_tower,
        mm_hidden_size=spec.vision_hidden_size, vision_config=vision_fields(clip_config(spec)))


def random_llava(spec: TinySpec, vocab_size: int, clip_folder: Path) -> LlavaLlamaForCausalLM:
    """A random tiny LLaVA whose vision tower holds the weights of `clip_folder`."""
    from transformers import CLIPVisionModel

    torch.manual_seed(spec.seed)
    model = LlavaLlamaForCausalLM(tiny_config(spec, vocab_size, str(clip_folder)))
    randomize_decoder(model, "model.vision_tower", spec.init_std, spec.head_std, spec.quiet_from_layer,
                      spec.quiet_scale)
    clip = CLIPVisionModel.from_pretrained(str(clip_folder))
    model.get_vision_tower().vision_tower.load_state_dict(clip.state_dict())
    return model
