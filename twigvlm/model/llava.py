"""LLaVA-1.5: CLIP vision tower -> projector -> Llama decoder, in the two checkpoint layouts users have.

- "llava": `liuhaotian/llava-v1.5-7b` — flat config.json (`model_type: llava`, `mm_*` fields), sharded
  `pytorch_model-*.bin` or `model-*.safetensors`, keys named as our module tree (`model.layers.N.*`,
  `model.mm_projector.{0,2}.*`, usually `model.vision_tower.vision_tower.*` too), leftover
  `rotary_emb.inv_freq` buffers, a SentencePiece `tokenizer.model`.
- "llava-hf": `llava-hf/llava-1.5-7b-hf` (`LlavaForConditionalGeneration`) — nested config, keys
  `language_model.*`/`vision_tower.*`/`multi_modal_projector.linear_{1,2}.*` (hub files) or the same under
  `model.` (files saved by transformers >= 4.52), plus `preprocessor_config.json`.

The module tree mirrors the first layout's names, so it loads without renaming. A prompt marks the image with the
placeholder id -200 (`tokenizer_image_token`); each image becomes 576 visual tokens (CLIP-L/14 at 336 px).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import transformers
from safetensors.torch import save_file
from torch import Tensor, nn

from twigvlm.constants import (DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN, IGNORE_INDEX,
                               IMAGE_TOKEN_INDEX)
from twigvlm.conversation import conv_templates
from twigvlm.mm_utils import process_images, tokenizer_image_token
from twigvlm.model.checkpoint import (hf_cache_folder, load_weights, read_config, read_keys, split_shards,
                                      weight_files)
from twigvlm.model.decoder import DecoderConfig, DecoderLayer, RMSNorm, set_attn_implementation
from twigvlm.model.family import CheckpointError, MultimodalInputs, VisionLanguageModel
from twigvlm.model.tokenizer import load_tokenizer
from twigvlm.model.vision import VisionTower, build_projector, make_image_processor

log = logging.getLogger(__name__)

LLAVA_ARCHITECTURES = ("LlavaLlamaForCausalLM",)
LLAVA_HF_ARCHITECTURES = ("LlavaForConditionalGeneration",)
VISION_PREFIX = "model.vision_tower.vision_tower."
IGNORED_KEY_SUFFIXES = ("rotary_emb.inv_freq", "embeddings.position_ids")  # stale buffers of older transformers

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

# llava-hf name -> our name (first match wins); hub files lack the leading "model."
_HF_RENAMES = (
    (r"^(?:model\.)?language_model\.model\.", "model."),
    (r"^(?:model\.)?language_model\.lm_head\.", "lm_head."),
    (r"^model\.language_model\.", "model."),
    (r"^(?:model\.)?vision_tower\.", VISION_PREFIX),
    (r"^(?:model\.)?multi_modal_projector\.linear_1\.", "model.mm_projector.0."),
    (r"^(?:model\.)?multi_modal_projector\.linear_2\.", "model.mm_projector.2."),
)


# --- configuration ------------------------------------------------------------------------------------------------
@dataclass
class LlavaConfig(DecoderConfig):
    """One flat dataclass, as LLaVA's own config.json is flat: the Llama decoder's fields, the multimodal fields
    (`mm_*`, `image_aspect_ratio`) and the CLIP vision config as a plain dict. Code that LLaVA users wrote against
    `model.config` (`model.config.image_aspect_ratio`, `model.config.mm_use_im_start_end`) keeps working."""

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

    @property
    def num_visual_tokens(self) -> int:
        """Visual tokens per image: patches of the CLIP grid (plus CLS when `cls_patch` is selected)."""
        side = self.patch_grid
        return side * side + (1 if self.mm_vision_select_feature == "cls_patch" else 0)

    @property
    def patch_grid(self) -> int:
        vc = self.vision_config or {}
        return vc.get("image_size", 336) // vc.get("patch_size", 14)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "LlavaConfig":
        """Read `config.json` of a LLaVA checkpoint folder in either layout."""
        folder = Path(path)
        raw = read_config(folder)
        if not LlavaLlamaForCausalLM.accepts(raw):
            kind = raw.get("model_type", "unknown")
            raise CheckpointError(
                f"{folder} holds a '{kind}' model ({', '.join(raw.get('architectures') or ()) or 'no architectures'}), "
                f"not a LLaVA checkpoint: its config.json has neither 'mm_vision_tower' (liuhaotian/llava-v1.5-* "
                f"layout) nor 'text_config' (llava-hf layout). Pass a LLaVA-1.5 checkpoint folder; a twig goes in "
                f"twig=...")
        architectures = tuple(raw.get("architectures") or ())
        if "text_config" in raw or any(a in LLAVA_HF_ARCHITECTURES for a in architectures):
            cfg = cls.from_llava_hf_dict(raw)
        else:
            cfg = cls.from_llava_dict(raw)
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


# --- the model ------------------------------------------------------------------------------------------------------
class LlavaLlamaModel(nn.Module):
    """The decoder trunk plus the image side; parameter names as in LLaVA's `LlavaLlamaModel`."""

    def __init__(self, config: LlavaConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList(DecoderLayer(config, attn_implementation) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.vision_tower = VisionTower(config.vision_config, config.mm_vision_select_layer,
                                        config.mm_vision_select_feature)
        self.mm_projector = build_projector(config.mm_projector_type, config.mm_hidden_size, config.hidden_size)


class LlavaLlamaForCausalLM(VisionLanguageModel):
    family = "llava"
    image_input_names = ("images", "image_sizes")

    def __init__(self, config: LlavaConfig, attn_implementation: str = "sdpa"):
        super().__init__(config)
        if config.vision_config is None:
            raise ValueError("LlavaConfig.vision_config is unset: resolve the vision tower first "
                             "(LlavaLlamaForCausalLM.from_pretrained does)")
        self.model = LlavaLlamaModel(config, attn_implementation)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    # --- what LLaVA's code calls on a model -------------------------------------------------------------------
    def get_model(self) -> LlavaLlamaModel:
        return self.model

    def get_vision_tower(self) -> VisionTower:
        return self.model.vision_tower

    def set_attn_implementation(self, implementation: str) -> None:
        """'sdpa' (default), 'eager' or 'flash_attention_2' for the decoder."""
        set_attn_implementation(self, implementation)

    # --- inputs ------------------------------------------------------------------------------------------------
    def encode_images(self, images: Tensor) -> Tensor:
        """images [N, 3, H, W] -> visual tokens in the decoder's space [N, P, C]."""
        return self.model.mm_projector(self.model.vision_tower(images)).to(self.dtype)

    def embed_multimodal(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                         max_length: int | None = None, images: Tensor | Sequence[Tensor] | None = None,
                         image_sizes: Any = None) -> MultimodalInputs:
        """Splice image i's visual tokens where the i-th <image> placeholder (IMAGE_TOKEN_INDEX) stands, in reading
        order over the batch; plain 1-D positions (0..L-1 per sample)."""
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        sequences = [ids[m] for ids, m in zip(input_ids, mask)]
        label_seqs = [lab[m] for lab, m in zip(labels, mask)] if labels is not None else None
        features = self._image_features(images, sum(int((s == IMAGE_TOKEN_INDEX).sum()) for s in sequences))
        grid = (self.config.patch_grid, self.config.patch_grid)

        embeds, labs, positions, spans, next_image = [], [], [], [], 0
        for b, ids in enumerate(sequences):
            tags = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
            text = self.model.embed_tokens(ids.clamp(min=0))  # [L_b, C]; tag rows are replaced below
            pieces, lab_pieces, sample_spans, start, length = [], [], [], 0, 0
            for t in tags + [len(ids)]:
                pieces.append(text[start:t])
                if label_seqs is not None:
                    lab_pieces.append(label_seqs[b][start:t])
                length += t - start
                if t < len(ids):
                    image = features[next_image]
                    next_image += 1
                    pieces.append(image)
                    lab_pieces.append(torch.full((len(image),), IGNORE_INDEX, dtype=torch.long, device=ids.device))
                    sample_spans.append((length, length + len(image)))
                    length += len(image)
                start = t + 1
            limit = min(max_length or length, length)
            embeds.append(torch.cat(pieces)[:limit])
            labs.append(torch.cat(lab_pieces)[:limit] if label_seqs is not None else None)
            positions.append(torch.arange(limit, device=ids.device)[None])  # [1, L_b]
            spans.append([(s, min(e, limit)) for s, e in sample_spans if s < limit])
        grids = [[grid] * len(sample_spans) for sample_spans in spans]
        return self.pad(embeds, labs if label_seqs is not None else None, positions, spans, [0] * len(embeds), grids)

    def _image_features(self, images: Tensor | Sequence[Tensor] | None, num_tags: int) -> Tensor | None:
        num_images = 0 if images is None else len(images)
        if num_tags != num_images:
            raise ValueError(f"the prompt has {num_tags} <image> tag(s) but {num_images} image(s) were given: "
                             f"put exactly one <image> (DEFAULT_IMAGE_TOKEN) in the prompt per image")
        if num_images == 0:
            return None
        if not isinstance(images, Tensor):
            images = torch.stack(list(images))
        size = self.get_vision_tower().vision_tower.config.image_size
        if images.dim() != 4 or images.shape[1:] != (3, size, size) or not images.is_floating_point():
            raise ValueError(f"images must be pixel tensors [N, 3, {size}, {size}] as process_images() returns, "
                             f"got {tuple(images.shape)} {images.dtype}")
        return self.encode_images(images.to(self.device))

    def chat_format(self, tokenizer: Any, processor: Any, conv_mode: str | None = None,
                    image_aspect_ratio: str | None = None) -> "LlavaChatFormat":
        config = self.config.replace(image_aspect_ratio=image_aspect_ratio) if image_aspect_ratio else self.config
        return LlavaChatFormat(tokenizer, processor, config, conv_mode or "vicuna_v1")

    # --- checkpoints -------------------------------------------------------------------------------------------
    @classmethod
    def accepts(cls, raw_config: dict[str, Any]) -> bool:
        architectures = tuple(raw_config.get("architectures") or ())
        return ("mm_vision_tower" in raw_config or any(a in LLAVA_ARCHITECTURES for a in architectures)
                or any(a in LLAVA_HF_ARCHITECTURES for a in architectures)
                or (raw_config.get("model_type") == "llava" and "text_config" in raw_config))

    @classmethod
    def read_layout(cls, folder: Path) -> tuple[int, int | None]:
        config = LlavaConfig.from_pretrained(folder)
        return config.num_hidden_layers, config.num_visual_tokens

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa",
                        vision_tower: str | None = None, **unused: Any) -> tuple["LlavaLlamaForCausalLM", Any, Any]:
        """(model, tokenizer, image processor) from a LLaVA-1.5 checkpoint folder in either layout."""
        folder = Path(folder)
        model, image_processor = load_llava(folder, device, dtype, attn_implementation, vision_tower)
        return model, load_tokenizer(folder), image_processor

    def save_pretrained(self, folder: str | Path, **options: Any) -> Path:
        """The original LLaVA layout (see `save_llava`)."""
        return save_llava(self, folder, **options)

    def transformers_inputs(self, inputs: dict[str, Any], image_token_id: int = 0) -> dict[str, Any]:
        """Our generate() inputs as transformers' LLaVA takes them: each -200 placeholder expanded into the image's
        visual tokens (`image_token_id`, as llava-hf's processor writes them), `images` as pixel_values."""
        ids = inputs["input_ids"]
        pieces, start = [], 0
        for tag in (ids[0] == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist():
            pieces += [ids[:, start:tag], torch.full((1, self.config.num_visual_tokens), image_token_id)]
            start = tag + 1
        out = {"input_ids": torch.cat(pieces + [ids[:, start:]], dim=1)}
        if "images" in inputs:
            out["pixel_values"] = inputs["images"]
        return out

    def to_transformers(self, image_token_id: int = 0, extra_vocab: int = 0):
        """The same weights in `transformers.LlavaForConditionalGeneration`, on this model's device and dtype
        (vocabulary padded by `extra_vocab` rows whose lm_head rows are zero, as llava-hf pads 32000 to 32064)."""
        from transformers import LlavaConfig as HFLlavaConfig
        from transformers import LlavaForConditionalGeneration

        cfg = self.config
        vocab = cfg.vocab_size + extra_vocab
        hf_cfg = HFLlavaConfig(**{**cfg.replace(vocab_size=vocab).to_llava_hf_dict(image_token_id),
                                  "architectures": None, "model_type": None})
        hf_cfg.text_config._attn_implementation = hf_cfg.vision_config._attn_implementation = "sdpa"
        with torch.device(self.device):  # built where the model lives, in its precision
            hf = LlavaForConditionalGeneration(hf_cfg).to(self.dtype).eval()
        ours = self.state_dict()
        state = {}
        for name in hf.state_dict():
            src = to_our_key(name, "llava-hf")
            if src is None:
                continue
            tensor = ours[src]
            if tensor.shape[0] == cfg.vocab_size and name.endswith(("embed_tokens.weight", "lm_head.weight")):
                pad = tensor.new_zeros(extra_vocab, tensor.shape[1])
                if name.endswith("embed_tokens.weight"):
                    pad += tensor.mean(dim=0)
                tensor = torch.cat([tensor, pad])
            state[name] = tensor
        hf.load_state_dict(state, strict=False)
        return hf.requires_grad_(False)


# --- the chat format ------------------------------------------------------------------------------------------------
class LlavaChatFormat:
    """LLaVA's conversation templates (`conv_mode`, Vicuna v1 by default), the image as -200 where "<image>" stands,
    images padded to a square and preprocessed by CLIP's processor (`process_images`)."""

    def __init__(self, tokenizer: Any, image_processor: Any, config: LlavaConfig, conv_mode: str = "vicuna_v1"):
        if conv_mode not in conv_templates:
            raise ValueError(f"unknown conversation template '{conv_mode}'; LLaVA's are {sorted(conv_templates)}")
        self.tokenizer, self.image_processor, self.config, self.conv_mode = tokenizer, image_processor, config, conv_mode

    @property
    def stop_token_ids(self) -> list[int]:
        return [self.tokenizer.eos_token_id]

    def prompt(self, turns: list[dict[str, str]]) -> str:
        """The conversation in the template; a last human turn leaves the answer open."""
        conv = conv_templates[self.conv_mode].copy()
        tag = DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN
        for i, turn in enumerate(turns):
            text = turn["value"]
            if self.config.mm_use_im_start_end:
                text = text.replace(DEFAULT_IMAGE_TOKEN, tag)
            conv.append_message(conv.roles[("human", "gpt").index(turn["from"])], text)
        if turns and turns[-1]["from"] == "human":
            conv.append_message(conv.roles[1], None)
        return conv.get_prompt()

    def image_inputs(self, images: Sequence[Any]) -> dict[str, Any]:
        if not images:
            return {}
        return {"images": process_images(list(images), self.image_processor, self.config),
                "image_sizes": [image.size for image in images]}

    def grid_box(self, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """'pad' (LLaVA-1.5): the square `expand2square` pads the image to; otherwise the square CLIP's centre crop
        keeps."""
        width, height = size
        if self.config.image_aspect_ratio == "pad":
            side = max(width, height)
            left, top = -((side - width) // 2), -((side - height) // 2)
            return (left, top, left + side, top + side)
        side = min(width, height)
        return ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)

    def generation_inputs(self, turns: list[dict[str, str]], images: Sequence[Any]) -> dict[str, Any]:
        ids = tokenizer_image_token(self.prompt(turns), self.tokenizer, return_tensors="pt")[None]
        return {"input_ids": ids, **self.image_inputs(images)}

    def training_inputs(self, turns: list[dict[str, str]], images: Sequence[Any], max_length: int,
                        name: str = "a sample") -> dict[str, Any]:
        """LLaVA's training placement (the image tag moved to the front of its turn) and answer-only labels."""
        if images:
            turns = image_tag_first(turns)
        input_ids, labels = tokenize_conversation(turns, self.tokenizer, bool(images), max_length, self.conv_mode,
                                                  name)
        inputs = {"input_ids": input_ids, "labels": labels}
        if images:
            inputs["images"] = process_images(list(images), self.image_processor, self.config)  # [N, 3, H, W]
        return inputs


def image_tag_first(turns: list[dict[str, str]]) -> list[dict[str, str]]:
    """LLaVA's placement: the turn holding <image> starts with "<image>\\n", the tag removed from its text."""
    def moved(text: str) -> str:
        return f"{DEFAULT_IMAGE_TOKEN}\n{text.replace(DEFAULT_IMAGE_TOKEN, '').strip()}".strip()

    return [{**turn, "value": moved(turn["value"])} if DEFAULT_IMAGE_TOKEN in turn["value"] else turn
            for turn in turns]


def tokenize_conversation(turns: list[dict[str, str]], tokenizer: Any, has_image: bool, max_length: int,
                          version: str = "v1", name: str = "a sample") -> tuple[Tensor, Tensor]:
    """input_ids [L] and labels [L] (L <= max_length): labels are the answers and their </s>, IGNORE_INDEX elsewhere.

    LLaVA's rule (`preprocess_v1`) splits the prompt into rounds at "</s>" and each round at " ASSISTANT: ", and
    counts the tokens of each piece encoded alone; how those counts relate to the whole prompt's tokens depends on
    the tokenizer (`legacy`, and the vocabulary: LLaVA's "-1" fix for `"legacy": false` holds for Llama's). We count
    the tokens of prompt PREFIXES instead: one ending at a round's "</s>" or before the space after "ASSISTANT:"
    tokenizes as the start of the whole prompt (SentencePiece pieces never span a space or a special token), so
    every answer is learnt exactly, whatever the tokenizer. Where LLaVA's counts are right, the labels are the same.
    When the rounds do not add up to the whole prompt (a tokenization mismatch), nothing of the sample is learnt.
    """
    def encode(text: str) -> list[int]:
        return tokenizer_image_token(text, tokenizer) if has_image else tokenizer(text).input_ids

    conv = conv_templates[version]
    prompt = render_prompt(turns, version)
    input_ids = torch.tensor(encode(prompt), dtype=torch.long)  # [L]
    labels = input_ids.clone()
    answer_sep = f"{conv.sep}{conv.roles[1]}:"
    cursor, round_start = 1, 0  # tokens (BOS) and characters of the prompt accounted for
    labels[:cursor] = IGNORE_INDEX
    while (round_end := prompt.find(conv.sep2, round_start)) >= 0:
        answer_start = prompt.find(answer_sep, round_start, round_end)
        if answer_start < 0:
            break
        question_end = len(encode(prompt[:answer_start + len(answer_sep)]))  # through "ASSISTANT:"
        labels[cursor:question_end] = IGNORE_INDEX
        round_start = round_end + len(conv.sep2)
        cursor = len(encode(prompt[:round_start]))  # through the answer's "</s>"
    labels[cursor:] = IGNORE_INDEX
    if cursor < max_length and cursor != len(input_ids):
        labels[:] = IGNORE_INDEX
        log.warning("tokenization mismatch in %s: %d vs. %d tokens; it is not learnt", name, cursor, len(input_ids))
    return input_ids[:max_length], labels[:max_length]


def render_prompt(turns: list[dict[str, str]], version: str = "v1") -> str:
    """The whole conversation in a v1 template: system USER: q ASSISTANT: a</s>USER: ..."""
    conv = conv_templates[version].copy()
    for turn in turns:
        conv.append_message(conv.roles[("human", "gpt").index(turn["from"])], turn["value"])
    return conv.get_prompt()


# --- reading checkpoints ------------------------------------------------------------------------------------------
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
    folder = _local_folder(name, checkpoint_folder) or hf_cache_folder(name)
    if checkpoint_has_weights and cfg.vision_config and override is None:
        return VisionSource(dict(cfg.vision_config), folder)  # the tower saved with it, e.g. grown since
    if folder is not None:
        clip = transformers.CLIPVisionConfig.from_pretrained(str(folder))
        return VisionSource(vision_fields(clip.to_dict()), folder)
    known = KNOWN_VISION_TOWERS.get(name)
    if checkpoint_has_weights and known:
        return VisionSource(dict(known), None)
    raise CheckpointError(
        f"vision tower '{name}' (mm_vision_tower of {checkpoint_folder}) is neither a local folder nor in the "
        f"Hugging Face cache, and the checkpoint does not hold its weights. Download it once "
        f"(huggingface-cli download {name}) or pass vision_tower=/path/to/clip")


def _local_folder(name: str, checkpoint_folder: Path) -> Path | None:
    for candidate in (Path(name), checkpoint_folder / name):
        if candidate.is_dir() and (candidate / "config.json").is_file():
            return candidate
    return None


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
        clip = transformers.CLIPVisionModel.from_pretrained(str(source.folder), local_files_only=True)
        model.model.vision_tower.vision_tower.load_state_dict(clip.state_dict())
    load_weights(model, files, lambda key: to_our_key(key, cfg.checkpoint_format), device, dtype,
                 optional=VISION_PREFIX if not has_vision else None, family="LLaVA-1.5")
    if attn_implementation != "sdpa":
        model.set_attn_implementation(attn_implementation)  # checks flash-attn is installed
    has_processor = (folder / "preprocessor_config.json").is_file()
    processor_folder = folder if has_processor else source.folder
    image_processor = make_image_processor(cfg.vision_config.get("image_size", 336), processor_folder)
    return model, image_processor


# --- writing (tests, the tiny world, users who convert) ----------------------------------------------------------
def save_llava(model: LlavaLlamaForCausalLM, folder: str | Path, config: LlavaConfig | None = None,
               safetensors: bool = False, max_shard_params: int | None = None,
               extra_tensors: dict[str, Tensor] | None = None, image_processor: Any = None,
               dtype: torch.dtype | None = None) -> Path:
    """Write `model` in the original LLaVA layout: config.json (`config`, default the model's, with the vision
    tower's config) + (sharded) weights (in `dtype`, default the model's) + index, and the image processor's
    preprocessor_config.json when given."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in model.state_dict().items()}
    state.update(extra_tensors or {})
    shards = split_shards(state, max_shard_params)
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
