"""Reading and writing LLaVA-1.5 checkpoints in the two layouts users have.

- "llava": `liuhaotian/llava-v1.5-7b` — flat config.json (`model_type: llava`, `mm_*` fields), sharded
  `pytorch_model-*.bin` or `model-*.safetensors`, keys named as our module tree (`model.layers.N.*`,
  `model.mm_projector.{0,2}.*`, usually `model.vision_tower.vision_tower.*` too), leftover
  `rotary_emb.inv_freq` buffers, a SentencePiece `tokenizer.model`.
- "llava-hf": `llava-hf/llava-1.5-7b-hf` (`LlavaForConditionalGeneration`) — nested config, keys
  `language_model.*`/`vision_tower.*`/`multi_modal_projector.linear_{1,2}.*` (hub files) or the same under
  `model.` (files saved by transformers >= 4.52), plus `preprocessor_config.json`.

Weights are loaded shard by shard into a model built on the meta device, so a 7B model is never held twice.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from transformers import CLIPVisionConfig, CLIPVisionModel

from twigvlm.model.config import KNOWN_VISION_TOWERS, CheckpointError, LlavaConfig, vision_fields
from twigvlm.model.llava import LlavaLlamaForCausalLM
from twigvlm.model.vision import VisionTower

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VISION_PREFIX = "model.vision_tower.vision_tower."
IGNORED_KEY_SUFFIXES = ("rotary_emb.inv_freq", "embeddings.position_ids")  # stale buffers of older transformers

# llava-hf name -> our name (first match wins); hub files lack the leading "model."
_HF_RENAMES = (
    (r"^(?:model\.)?language_model\.model\.", "model."),
    (r"^(?:model\.)?language_model\.lm_head\.", "lm_head."),
    (r"^model\.language_model\.", "model."),
    (r"^(?:model\.)?vision_tower\.", VISION_PREFIX),
    (r"^(?:model\.)?multi_modal_projector\.linear_1\.", "model.mm_projector.0."),
    (r"^(?:model\.)?multi_modal_projector\.linear_2\.", "model.mm_projector.2."),
)


def make_image_processor(image_size: int = 336, folder: Path | None = None):
    """CLIP's image processor, PIL backend (the one LLaVA-1.5 used), from a folder's preprocessor_config.json
    or, without one, with CLIP's published settings for `image_size`."""
    try:
        from transformers import CLIPImageProcessorPil as Processor  # transformers >= 5
    except ImportError:
        from transformers import CLIPImageProcessor as Processor  # PIL-based before 5
    if folder is not None and (folder / "preprocessor_config.json").is_file():
        return Processor.from_pretrained(str(folder))
    return Processor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                     image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD), do_convert_rgb=True, resample=3)


# --- the vision tower a checkpoint names -------------------------------------------------------------------------
@dataclass
class VisionSource:
    """Where the CLIP config, weights and image processor come from."""

    config: dict
    folder: Path | None  # a local CLIP folder (also a resolved Hugging Face cache snapshot), or None


def resolve_vision_tower(cfg: LlavaConfig, checkpoint_folder: Path, checkpoint_has_weights: bool,
                         override: str | None = None) -> VisionSource:
    """Find the CLIP tower of `mm_vision_tower` without touching the network: a local folder, the Hugging Face
    cache, or (when the shards already hold its weights) the config saved in config.json by twigvlm or the
    published config of a known tower."""
    if cfg.checkpoint_format == "llava-hf" and override is None:
        return VisionSource(cfg.vision_config, None)
    name = override or cfg.mm_vision_tower
    folder = _local_folder(name, checkpoint_folder) or _hf_cache_folder(name)
    if checkpoint_has_weights and cfg.vision_config and override is None:
        return VisionSource(dict(cfg.vision_config), folder)  # the tower saved with it, e.g. grown since
    if folder is not None:
        return VisionSource(vision_fields(CLIPVisionConfig.from_pretrained(str(folder)).to_dict()), folder)
    known = KNOWN_VISION_TOWERS.get(name)
    if checkpoint_has_weights and known:
        return VisionSource(dict(known), None)
    raise CheckpointError(
        f"vision tower '{name}' (mm_vision_tower of {checkpoint_folder}) is neither a local folder nor in the "
        f"Hugging Face cache ({os.environ.get('HF_HUB_CACHE') or os.environ.get('HF_HOME') or '~/.cache/huggingface'}), "
        f"and the checkpoint does not hold its weights. Download it once "
        f"(huggingface-cli download {name}) or pass vision_tower=/path/to/clip")


def _local_folder(name: str, checkpoint_folder: Path) -> Path | None:
    for candidate in (Path(name), checkpoint_folder / name):
        if candidate.is_dir() and (candidate / "config.json").is_file():
            return candidate
    return None


def _hf_cache_folder(name: str) -> Path | None:
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        return None
    from huggingface_hub import try_to_load_from_cache

    # read the cache location at call time: HF_HUB_CACHE set after import is honoured
    found = try_to_load_from_cache(name, "config.json", cache_dir=os.environ.get("HF_HUB_CACHE"))
    return Path(found).parent if isinstance(found, str) else None


# --- reading weights ---------------------------------------------------------------------------------------------
def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's weight files, safetensors preferred, shards in order."""
    for pattern in ("model*.safetensors", "pytorch_model*.bin"):
        files = sorted(p for p in folder.glob(pattern) if p.is_file())
        if files:
            return files
    raise CheckpointError(f"{folder} has a config.json but no weights (model*.safetensors or pytorch_model*.bin); "
                          f"is the download complete?")


def read_keys(files: list[Path]) -> list[str]:
    """All tensor names, without loading tensors where the format allows."""
    index = files[0].parent / ("model.safetensors.index.json" if files[0].suffix == ".safetensors"
                               else "pytorch_model.bin.index.json")
    if index.is_file():
        return list(json.loads(index.read_text())["weight_map"])
    keys: list[str] = []
    for f in files:
        if f.suffix == ".safetensors":
            with safe_open(str(f), "pt") as sf:
                keys += list(sf.keys())
        else:
            keys += list(torch.load(f, map_location="meta", weights_only=True, mmap=True).keys())
    return keys


def read_shards(files: list[Path]) -> Iterator[dict[str, Tensor]]:
    for f in files:
        if f.suffix == ".safetensors":
            with safe_open(str(f), "pt") as sf:
                yield {k: sf.get_tensor(k) for k in sf.keys()}
        else:
            yield torch.load(f, map_location="cpu", weights_only=True, mmap=True)


def to_our_key(key: str, checkpoint_format: str) -> str | None:
    """A checkpoint's tensor name -> our parameter name; None for stale buffers to skip."""
    if key.endswith(IGNORED_KEY_SUFFIXES):
        return None
    if checkpoint_format == "llava-hf":
        for pattern, repl in _HF_RENAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                return new
    return key


# --- the whole model ---------------------------------------------------------------------------------------------
def load_llava(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               attn_implementation: str = "sdpa", vision_tower: str | None = None):
    """Load a LLaVA-1.5 checkpoint folder (either layout) -> (model, image_processor), eval mode, frozen."""
    folder = Path(path)
    cfg = LlavaConfig.from_pretrained(folder)
    files = weight_files(folder)
    keys = {k for k in (to_our_key(k, cfg.checkpoint_format) for k in read_keys(files)) if k}
    has_vision = any(k.startswith(VISION_PREFIX) for k in keys)
    source = resolve_vision_tower(cfg, folder, has_vision, vision_tower)
    cfg.vision_config = source.config

    with torch.device("meta"):
        model = LlavaLlamaForCausalLM(cfg, attn_implementation)
    # CLIP keeps non-persistent buffers (position ids) that a checkpoint never holds: build it for real
    model.model.vision_tower = VisionTower(cfg.vision_config, cfg.mm_vision_select_layer, cfg.mm_vision_select_feature)
    if not has_vision:
        _load_clip_weights(model.model.vision_tower, source.folder)

    expected = set(model.state_dict())
    loaded: set[str] = set()
    for shard in read_shards(files):
        ours = {}
        for key, tensor in shard.items():
            name = to_our_key(key, cfg.checkpoint_format)
            if name is None:
                continue
            if name not in expected:
                log.warning("ignoring tensor %s (%s): the model has no such parameter", key, folder.name)
                continue
            ours[name] = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)
        model.load_state_dict(ours, strict=False, assign=True)
        loaded |= set(ours)
    missing = sorted(k for k in expected - loaded if not (k.startswith(VISION_PREFIX) and not has_vision))
    if missing:
        raise CheckpointError(f"{folder} lacks {len(missing)} weight(s) of a LLaVA model, e.g. {missing[:3]}; "
                              f"the checkpoint is incomplete or not a LLaVA-1.5 checkpoint")
    model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    has_processor = (folder / "preprocessor_config.json").is_file()
    processor_folder = folder if has_processor else source.folder
    image_processor = make_image_processor(cfg.vision_config.get("image_size", 336), processor_folder)
    return model, image_processor


def _load_clip_weights(tower: VisionTower, folder: Path | None) -> None:
    clip = CLIPVisionModel.from_pretrained(str(folder), local_files_only=True)
    tower.vision_tower.load_state_dict(clip.state_dict())


# --- writing (tests, the tiny world, users who convert) ----------------------------------------------------------
def save_llava(model: LlavaLlamaForCausalLM, folder: str | Path, config: LlavaConfig | None = None,
               safetensors: bool = False, max_shard_params: int | None = None,
               extra_tensors: dict[str, Tensor] | None = None, image_processor=None,
               dtype: torch.dtype | None = None) -> Path:
    """Write `model` in the original LLaVA layout: config.json (`config`, default the model's, with the vision
    tower's config) + (sharded) weights (in `dtype`, default the model's) + index, and the image processor's
    preprocessor_config.json when given. The twig, if attached, is not part of the base checkpoint."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in model.state_dict().items()
             if not k.startswith("twig.")}
    state.update(extra_tensors or {})
    shards = _split(state, max_shard_params)
    stem, ext = ("model", "safetensors") if safetensors else ("pytorch_model", "bin")
    names = [f"{stem}.{ext}"] if len(shards) == 1 else \
        [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{ext}" for i in range(len(shards))]
    weight_map = {}
    for name, shard in zip(names, shards):
        if safetensors:
            save_file(shard, str(folder / name), metadata={"format": "pt"})
        else:
            torch.save(shard, folder / name)
        weight_map.update({k: name for k in shard})
    if len(shards) > 1:
        index = folder / f"{stem}.{ext}.index.json"
        total = sum(t.numel() * t.element_size() for t in state.values())
        index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    if image_processor is not None:
        image_processor.save_pretrained(str(folder))
    (folder / "config.json").write_text(json.dumps((config or model.config).to_llava_dict(), indent=2))
    return folder


def _split(state: dict[str, Tensor], max_params: int | None) -> list[dict[str, Tensor]]:
    if not max_params:
        return [state]
    shards: list[dict[str, Tensor]] = [{}]
    size = 0
    for k, v in state.items():
        if size and size + v.numel() > max_params:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += v.numel()
    return shards
