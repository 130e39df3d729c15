"""Which family a checkpoint folder holds, and loading it: `load_vlm(path) -> (model, tokenizer, processor)`.

A path is a local folder or a hub id (`liuhaotian/llava-v1.5-7b`, `Qwen/Qwen2.5-VL-7B-Instruct`) already in the
local Hugging Face cache: nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from twigvlm.model.checkpoint import hf_cache_folder, read_config
from twigvlm.model.family import CheckpointError, VisionLanguageModel
from twigvlm.model.llava import LlavaLlamaForCausalLM
from twigvlm.model.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration

# A third family: its module's model class here.
FAMILIES: tuple[type[VisionLanguageModel], ...] = (LlavaLlamaForCausalLM, Qwen2_5_VLForConditionalGeneration)


def resolve_model_path(name_or_path: str | Path) -> Path:
    """A local folder as is; a hub id that is not a local folder -> its snapshot in the local Hugging Face cache."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    cached = hf_cache_folder(str(name_or_path))
    if cached is not None:
        return cached
    if len(path.parts) == 2 and not str(name_or_path).startswith((".", "/")):
        raise FileNotFoundError(f"{name_or_path} is neither a local folder nor in the local Hugging Face cache; "
                                f"download it once (huggingface-cli download {name_or_path}) or pass its folder")
    return path  # read_config names the missing folder


def family_of(folder: Path) -> type[VisionLanguageModel]:
    """The model class of the family whose checkpoint `folder` holds."""
    raw = read_config(folder)
    for family in FAMILIES:
        if family.accepts(raw):
            return family
    kind = raw.get("model_type", "unknown")
    architectures = ", ".join(raw.get("architectures") or ()) or "no architectures"
    if "K" in raw and "T" in raw:
        raise CheckpointError(f"{folder} is a twig, not a base model: pass it as the twig and its base as the model")
    raise CheckpointError(f"{folder} holds a '{kind}' model ({architectures}); twigvlm runs LLaVA-1.5 "
                          f"(liuhaotian/llava-v1.5-* or llava-hf/llava-1.5-*-hf) and Qwen2.5-VL "
                          f"(Qwen/Qwen2.5-VL-*-Instruct) checkpoints")


def load_vlm(name_or_path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             attn_implementation: str = "sdpa", **options: Any) -> tuple[VisionLanguageModel, Any, Any]:
    """(model in eval mode and frozen, tokenizer, processor) of any supported family."""
    folder = resolve_model_path(name_or_path)
    return family_of(folder).from_pretrained(folder, device=device, dtype=dtype,
                                             attn_implementation=attn_implementation, **options)
