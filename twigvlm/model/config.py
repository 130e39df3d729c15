"""The configuration of a LLaVA-1.5 model, read from either checkpoint layout users have.

One flat dataclass, as LLaVA's own `config.json` is flat: the Llama decoder's fields, the multimodal fields
(`mm_*`, `image_aspect_ratio`), and the CLIP vision config as a plain dict. Code that LLaVA users wrote against
`model.config` (`model.config.image_aspect_ratio`, `model.config.mm_use_im_start_end`) keeps working.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import transformers

LLAVA_ARCHITECTURES = ("LlavaLlamaForCausalLM",)
LLAVA_HF_ARCHITECTURES = ("LlavaForConditionalGeneration",)

# Facts from LLaVA-1.5's training: the CLIP tower it was built on, so that a checkpoint whose shards already hold
# the vision weights loads without that tower being in the Hugging Face cache.
KNOWN_VISION_TOWERS: dict[str, dict[str, Any]] = {
    "openai/clip-vit-large-patch14-336": dict(
        hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24, image_size=336,
        patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    ),
    "openai/clip-vit-large-patch14": dict(
        hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24, image_size=224,
        patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    ),
}


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the problem and the fix."""


@dataclass
class LlavaConfig:
    # Llama decoder
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    head_dim: int | None = None
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096
    hidden_act: str = "silu"
    attention_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int | None = 0
    # multimodal
    mm_vision_tower: str = "openai/clip-vit-large-patch14-336"
    mm_projector_type: str = "mlp2x_gelu"
    mm_hidden_size: int = 1024
    mm_vision_select_layer: int = -2
    mm_vision_select_feature: str = "patch"
    image_aspect_ratio: str = "pad"
    mm_use_im_start_end: bool = False
    mm_use_im_patch_token: bool = False
    tokenizer_padding_side: str = "right"
    tokenizer_model_max_length: int = 2048
    # CLIP vision config (a dict for `transformers.CLIPVisionConfig`); None until the tower is resolved
    vision_config: dict[str, Any] | None = None
    # which layout the checkpoint came in: "llava" (liuhaotian) or "llava-hf" (LlavaForConditionalGeneration)
    checkpoint_format: str = "llava"
    image_token_id: int | None = None  # llava-hf only: the id its processor expands <image> into
    name_or_path: str = ""

    @property
    def attn_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def num_visual_tokens(self) -> int:
        """Visual tokens per image: patches of the CLIP grid (plus CLS when `cls_patch` is selected)."""
        vc = self.vision_config or {}
        patches = (vc.get("image_size", 336) // vc.get("patch_size", 14)) ** 2
        return patches + (1 if self.mm_vision_select_feature == "cls_patch" else 0)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "LlavaConfig":
        """Read `config.json` of a LLaVA checkpoint folder in either layout."""
        folder = Path(path)
        if not folder.exists():
            raise FileNotFoundError(f"checkpoint folder {folder} does not exist; pass the path of a LLaVA-1.5 checkpoint")
        if not (folder / "config.json").is_file():
            raise CheckpointError(f"{folder} has no config.json, so it is not a model checkpoint folder; pass the folder "
                                  f"of a LLaVA-1.5 checkpoint (e.g. a local copy of liuhaotian/llava-v1.5-7b)")
        raw = json.loads((folder / "config.json").read_text())
        architectures = tuple(raw.get("architectures") or ())
        if "text_config" in raw or any(a in LLAVA_HF_ARCHITECTURES for a in architectures):
            cfg = cls.from_llava_hf_dict(raw)
        elif "mm_vision_tower" in raw or any(a in LLAVA_ARCHITECTURES for a in architectures):
            cfg = cls.from_llava_dict(raw)
        else:
            kind = raw.get("model_type", "unknown")
            raise CheckpointError(
                f"{folder} holds a '{kind}' model ({', '.join(architectures) or 'no architectures'}), not a LLaVA "
                f"checkpoint: its config.json has neither 'mm_vision_tower' (liuhaotian/llava-v1.5-* layout) nor "
                f"'text_config' (llava-hf layout). Pass a LLaVA-1.5 checkpoint folder; a twig goes in twig=...")
        cfg.name_or_path = str(folder)
        return cfg

    @classmethod
    def from_llava_dict(cls, raw: dict[str, Any]) -> "LlavaConfig":
        """The original layout: a Llama config.json with the `mm_*` fields added."""
        text = _llama_fields(raw)
        mm = {f: raw[f] for f in _MM_FIELDS if raw.get(f) is not None}
        # LLaVA's files name the tower only; ours also carry its config so they load without the tower's folder
        return cls(**text, **mm, vision_config=raw.get("vision_config"), checkpoint_format="llava")

    @classmethod
    def from_llava_hf_dict(cls, raw: dict[str, Any]) -> "LlavaConfig":
        """The Hugging Face conversion: nested `text_config`/`vision_config`, only non-default fields written."""
        text = _llama_fields(raw.get("text_config") or {})
        vision = transformers.CLIPVisionConfig(**(raw.get("vision_config") or {})).to_dict()
        strategy = raw.get("vision_feature_select_strategy", "default")
        return cls(
            **text,
            mm_vision_tower=(raw.get("vision_config") or {}).get("_name_or_path") or "(in checkpoint)",
            mm_projector_type=_hf_projector_type(raw.get("projector_hidden_act", "gelu")),
            mm_hidden_size=vision["hidden_size"],
            mm_vision_select_layer=raw.get("vision_feature_layer", -2),
            mm_vision_select_feature="patch" if strategy == "default" else "cls_patch",
            vision_config=vision_fields(vision),
            checkpoint_format="llava-hf",
            image_token_id=raw.get("image_token_id", raw.get("image_token_index")),
        )

    def llama_dict(self) -> dict[str, Any]:
        """The decoder's fields under `transformers.LlamaConfig` names."""
        out = {f: getattr(self, f) for f in _LLAMA_FIELDS}
        out["model_type"] = "llama"
        out["architectures"] = ["LlamaForCausalLM"]
        return out

    def to_llava_dict(self) -> dict[str, Any]:
        """config.json in the original LLaVA layout."""
        out = self.llama_dict()
        out.update({f: getattr(self, f) for f in _MM_FIELDS})
        out.update(model_type="llava", architectures=list(LLAVA_ARCHITECTURES), mm_vision_tower=self.mm_vision_tower)
        if self.vision_config:
            out["vision_config"] = self.vision_config
        return out

    def to_llava_hf_dict(self, image_token_id: int) -> dict[str, Any]:
        """config.json in the Hugging Face `LlavaForConditionalGeneration` layout."""
        act = {"mlp2x_gelu": "gelu"}.get(self.mm_projector_type)
        if act is None:
            raise CheckpointError(f"the llava-hf layout has no '{self.mm_projector_type}' projector (only mlp2x_gelu)")
        return dict(
            model_type="llava", architectures=list(LLAVA_HF_ARCHITECTURES), text_config=self.llama_dict(),
            vision_config={**(self.vision_config or {}), "model_type": "clip_vision_model"},
            image_token_index=image_token_id, projector_hidden_act=act,
            vision_feature_layer=self.mm_vision_select_layer,
            vision_feature_select_strategy="default" if self.mm_vision_select_feature == "patch" else "full",
        )

    def replace(self, **changes: Any) -> "LlavaConfig":
        return dataclasses.replace(self, **changes)


_LLAMA_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "max_position_embeddings", "hidden_act",
    "attention_bias", "mlp_bias", "bos_token_id", "eos_token_id", "pad_token_id",
)
_MM_FIELDS = (
    "mm_vision_tower", "mm_projector_type", "mm_hidden_size", "mm_vision_select_layer", "mm_vision_select_feature",
    "image_aspect_ratio", "mm_use_im_start_end", "mm_use_im_patch_token", "tokenizer_padding_side",
    "tokenizer_model_max_length",
)


def _llama_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """Decoder fields with transformers' Llama defaults filled in (llava-hf writes only non-default ones)."""
    hf = transformers.LlamaConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "model_type")})
    rope = getattr(hf, "rope_parameters", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    legacy_scaling = raw.get("rope_scaling")
    if rope_type != "default" or legacy_scaling:
        raise CheckpointError(f"RoPE scaling '{legacy_scaling or rope_type}' is not supported; LLaVA-1.5 uses plain RoPE")
    out = {f: getattr(hf, f, None) for f in _LLAMA_FIELDS if f != "rope_theta"}
    out["rope_theta"] = float(rope.get("rope_theta", getattr(hf, "rope_theta", 10000.0)))
    if out["head_dim"] == out["hidden_size"] // out["num_attention_heads"]:
        out["head_dim"] = None
    if out["num_key_value_heads"] is None:
        out["num_key_value_heads"] = out["num_attention_heads"]
    return {k: v for k, v in out.items() if v is not None or k in ("head_dim", "pad_token_id")}


def vision_fields(clip: dict[str, Any]) -> dict[str, Any]:
    """The fields of a CLIP vision config that shape the tower (enough to rebuild it)."""
    keys = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "image_size",
            "patch_size", "projection_dim", "hidden_act", "layer_norm_eps", "num_channels")
    return {k: clip[k] for k in keys if k in clip}


def _hf_projector_type(act: str) -> str:
    if act != "gelu":
        raise CheckpointError(f"llava-hf projector activation '{act}' is not supported (LLaVA-1.5 uses gelu)")
    return "mlp2x_gelu"
