"""`load_pretrained_model`: LLaVA's loader signature, plus `twig=` to grow a twig on the loaded base, for every
model family (LLaVA-1.5 in either layout, Qwen2.5-VL).

    tokenizer, model, processor, context_len = load_pretrained_model(
        model_path, model_base=None, model_name=get_model_name_from_path(model_path), twig="checkpoints/...")

`processor` is LLaVA's CLIP image processor, or Qwen2.5-VL's processor (chat template, text and images).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from twigvlm.inference.generate import FASTV_K, TwigVLM
from twigvlm.inference.options import DTYPE_NAMES, TwigVLMConfig
from twigvlm.inference.pruning import PruningPlan
from twigvlm.model.auto import family_of, load_vlm, resolve_model_path
from twigvlm.model.twig import TWIG_CONFIG_NAME, Twig, TwigConfig

log = logging.getLogger(__name__)

DTYPES = {name: getattr(torch, dtype) for name, dtype in DTYPE_NAMES.items()}
LLAVA_CONTEXT_LENGTH = 2048  # what LLaVA-1.5's loader reports for Llama checkpoints


def resolve_dtype(torch_type: torch.dtype | str | None, device: str) -> torch.dtype:
    """float16 on a GPU and float32 on the CPU unless asked otherwise."""
    if torch_type is None:
        return torch.float16 if device.startswith("cuda") else torch.float32
    if isinstance(torch_type, torch.dtype):
        return torch_type
    if torch_type not in DTYPES:
        raise ValueError(f"unknown dtype '{torch_type}'; use one of {sorted(DTYPES)}")
    return DTYPES[torch_type]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> str:
    """`device` if this machine has it; a clear error otherwise."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this machine has no CUDA GPU that PyTorch can use "
                         f"(torch {torch.__version__}); use --device cpu, or install a CUDA build of PyTorch")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise ValueError(f"unknown device '{device}': use cpu or cuda (cuda:N for the N-th GPU)")
    return device


def load_pretrained_model(model_path: str | Path, model_base: str | None = None, model_name: str | None = None,
                          load_8bit: bool = False, load_4bit: bool = False, device_map: Any = "auto",
                          device: str | None = None, torch_type: torch.dtype | str | None = None,
                          attn_implementation: str = "sdpa", use_flash_attn: bool = False,
                          twig: str | Path | None = None, twig_K: int | None = None,
                          vision_tower: str | None = None, **unused: Any) -> tuple[Any, TwigVLM, Any, int]:
    """Load a base checkpoint (a folder, or a hub id already in the local Hugging Face cache) and optionally a twig.

    K of a twig comes from its checkpoint (our format), else `twig_K` (the public format records no K); T is read
    off its weights. Returns (tokenizer, model, processor, context_len) as LLaVA's loader does; the model is in
    eval mode with every parameter frozen.
    """
    if model_base is not None:
        raise ValueError("model_base (LoRA or projector-only checkpoints) is not supported: merge the LoRA into "
                         "the base first (LLaVA's scripts/merge_lora_weights.py) and pass the merged folder")
    if load_8bit or load_4bit:
        raise ValueError("8-bit/4-bit loading is not supported; load in float16 or bfloat16")
    device = check_device(device or default_device())
    dtype = resolve_dtype(torch_type, device)
    if use_flash_attn:
        attn_implementation = "flash_attention_2"
    base, tokenizer, processor = load_vlm(model_path, device, dtype, attn_implementation, vision_tower=vision_tower)
    model = TwigVLM(base)
    if twig is not None:
        model.attach_twig(Twig.load(twig, base, twig_K, attn_implementation))
        log.info("grew a twig (K=%d, T=%d) from %s", model.twig.K, model.twig.T, twig)
    context = LLAVA_CONTEXT_LENGTH if base.family == "llava" else base.config.max_position_embeddings
    return tokenizer, model, processor, context


def check_budget(model_path: str | Path, twig: str | Path | None, twig_K: int | None,
                 generation: TwigVLMConfig) -> None:
    """Refuse an impossible -R / --retain-ratio from the checkpoints' configs alone, before any weights are read
    (PruningError naming the valid range). A budget in visual tokens on a family whose images differ in V is
    checked per image, when it is known."""
    if generation.pruning == "none":
        return
    folder = resolve_model_path(model_path)
    N, V = family_of(folder).read_layout(folder)
    if twig is not None and generation.needs_twig:
        recorded = (Path(twig) / TWIG_CONFIG_NAME).is_file()
        K = TwigConfig.load(Path(twig)).K if recorded else twig_K or FASTV_K  # the public format records no K
    else:
        K = generation.K or FASTV_K
    plan = PruningPlan(generation.pruning, generation.R, generation.retain_ratio, generation.finalwipe_layer)
    groups = plan.groups(N, K)
    if V is not None or plan.retain_ratio is not None:
        plan.rank(groups, V or 1000)  # a share's range does not depend on V

