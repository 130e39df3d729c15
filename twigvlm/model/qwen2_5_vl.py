"""Qwen2.5-VL: a window-attention ViT (transformers' own) -> 2x2 patch merger -> Qwen2 decoder with M-RoPE.

Checkpoints as users have them (`Qwen/Qwen2.5-VL-{3B,7B}-Instruct`): config.json with `model_type: qwen2_5_vl`,
sharded safetensors in the hub key layout (`model.embed_tokens`, `model.layers.N.*`, `model.norm`, `visual.*`,
`lm_head`; transformers >= 4.52 saves `model.language_model.*` / `model.visual.*` instead: both load), a byte-level
BPE tokenizer (tokenizer.json, vocab.json, merges.txt), chat_template.json and preprocessor_config.json.

What differs from LLaVA-1.5, and where it is handled:
- dynamic resolution: an image of H x W pixels becomes (H/28) x (W/28) visual tokens (after `smart_resize` to a
  multiple of 28 within [min_pixels, max_pixels]), so V varies per image; the prompt holds one `<|image_pad|>` per
  visual token, between `<|vision_start|>` and `<|vision_end|>`;
- M-RoPE: every token has a (temporal, height, width) position (`mrope_positions`): text advances all three by one,
  an image's tokens take their grid row and column from where the image starts, and the text after it resumes at
  start + max(rows, columns). A pruned visual token keeps these positions; decoding continues at sequence index +
  `rope_delta` (the positions an image saves);
- the processor (`Qwen2_5_VLProcessor` below) gives what transformers' processor gives, without torchvision.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import transformers
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import BatchFeature

from twigvlm.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX
from twigvlm.model.checkpoint import load_weights, read_config, split_shards, weight_files
from twigvlm.model.decoder import DecoderConfig, DecoderLayer, RMSNorm, set_attn_implementation
from twigvlm.model.family import CheckpointError, MultimodalInputs, VisionLanguageModel

log = logging.getLogger(__name__)

ARCHITECTURES = ("Qwen2_5_VLForConditionalGeneration",)
IMAGE_PAD, VISION_START, VISION_END = "<|image_pad|>", "<|vision_start|>", "<|vision_end|>"
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")  # the released generation_config.json stops at both


# --- configuration ------------------------------------------------------------------------------------------------
@dataclass
class Qwen2_5_VLConfig(DecoderConfig):
    """The Qwen2 decoder's fields (q/k/v with a bias, M-RoPE), the vision tower's config as a plain dict (for
    `transformers.Qwen2_5_VLVisionConfig`) and the ids of the vision tokens."""

    vision_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    max_pixels: int | None = None  # the processor's, when the checkpoint has one: larger images are refused

    @property
    def spatial_merge_size(self) -> int:
        return self.vision_config.get("spatial_merge_size", 2)

    @property
    def patch_size(self) -> int:
        return self.vision_config.get("patch_size", 14)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Qwen2_5_VLConfig":
        folder = Path(folder)
        raw = read_config(folder)
        if not Qwen2_5_VLForConditionalGeneration.accepts(raw):
            raise CheckpointError(f"{folder} holds a '{raw.get('model_type', 'unknown')}' model, not Qwen2.5-VL")
        cfg = cls.from_dict(raw)
        cfg.name_or_path = str(folder)
        generation = folder / "generation_config.json"
        if generation.is_file():  # the released one stops at <|im_end|> and <|endoftext|>
            cfg.eos_token_id = json.loads(generation.read_text()).get("eos_token_id", cfg.eos_token_id)
        preprocessor = folder / "preprocessor_config.json"
        if preprocessor.is_file():
            pre = json.loads(preprocessor.read_text())
            cfg.max_pixels = pre.get("max_pixels") or (pre.get("size") or {}).get("longest_edge")
        return cfg

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Qwen2_5_VLConfig":
        """config.json as the hub has it (text fields at the top) or as transformers >= 4.52 saves it (text_config),
        normalised by transformers' own config class."""
        hf = transformers.Qwen2_5_VLConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "model_type")})
        text = hf.text_config
        rope = getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {}
        if rope.get("rope_type", "default") not in ("default", "mrope") and rope.get("type") not in (None, "mrope"):
            raise CheckpointError(f"RoPE scaling {rope} is not supported; Qwen2.5-VL uses plain M-RoPE")
        if getattr(text, "use_sliding_window", False):
            raise CheckpointError("use_sliding_window: true is not supported (Qwen2.5-VL's released checkpoints "
                                  "turn it off); set it to false in config.json")
        vision = hf.vision_config.to_dict()
        return cls(
            vocab_size=text.vocab_size, hidden_size=text.hidden_size, intermediate_size=text.intermediate_size,
            num_hidden_layers=text.num_hidden_layers, num_attention_heads=text.num_attention_heads,
            num_key_value_heads=text.num_key_value_heads, rms_norm_eps=text.rms_norm_eps,
            rope_theta=float(rope.get("rope_theta", getattr(text, "rope_theta", 1000000.0))),
            max_position_embeddings=text.max_position_embeddings, hidden_act=text.hidden_act, qkv_bias=True,
            mrope_section=tuple(rope.get("mrope_section", (16, 24, 24))),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", getattr(hf, "tie_word_embeddings", False))),
            bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id,
            vision_config={k: v for k, v in vision.items() if k in _VISION_FIELDS},
            image_token_id=hf.image_token_id, video_token_id=hf.video_token_id,
            vision_start_token_id=hf.vision_start_token_id, vision_end_token_id=hf.vision_end_token_id)

    def to_dict(self) -> dict[str, Any]:
        """config.json in the hub's layout (what `Qwen/Qwen2.5-VL-7B-Instruct` ships)."""
        return dict(
            architectures=list(ARCHITECTURES), model_type="qwen2_5_vl", vocab_size=self.vocab_size,
            hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads, rms_norm_eps=self.rms_norm_eps, rope_theta=self.rope_theta,
            max_position_embeddings=self.max_position_embeddings, hidden_act=self.hidden_act,
            rope_scaling={"type": "mrope", "mrope_section": list(self.mrope_section or (16, 24, 24))},
            tie_word_embeddings=self.tie_word_embeddings, use_sliding_window=False, attention_dropout=0.0,
            bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id, image_token_id=self.image_token_id,
            video_token_id=self.video_token_id, vision_start_token_id=self.vision_start_token_id,
            vision_end_token_id=self.vision_end_token_id, vision_config=dict(self.vision_config))

    def replace(self, **changes: Any) -> "Qwen2_5_VLConfig":
        return dataclasses.replace(self, **changes)


_VISION_FIELDS = ("depth", "hidden_size", "hidden_act", "intermediate_size", "num_heads", "in_channels", "patch_size",
                  "spatial_merge_size", "temporal_patch_size", "tokens_per_second", "window_size", "out_hidden_size",
                  "fullatt_block_indexes", "initializer_range")


# --- positions ------------------------------------------------------------------------------------------------------
def mrope_positions(input_ids: Tensor, grids: Sequence[tuple[int, int, int]], image_token_id: int,
                    merge_size: int) -> tuple[Tensor, int, list[tuple[int, int]]]:
    """The M-RoPE positions of one prompt: input_ids [L] with one `image_token_id` per visual token, and the
    (t, h, w) patch grid of each image in order -> positions [3, L], the decoding offset delta (a token decoded at
    sequence index i sits at i + delta) and each image's [start, end) token span."""
    L = len(input_ids)
    positions = torch.empty(3, L, dtype=torch.long, device=input_ids.device)
    is_image = (input_ids == image_token_id).tolist()
    spans, i, current, image = [], 0, 0, 0
    while i < L:
        if not is_image[i]:
            j = i
            while j < L and not is_image[j]:
                j += 1
            positions[:, i:j] = torch.arange(current, current + j - i, device=input_ids.device)
            current, i = current + j - i, j
            continue
        if image >= len(grids):
            raise ValueError(f"the prompt has more {IMAGE_PAD} tokens than its images account for "
                             f"({len(grids)} image(s)); build prompts with the processor, one image per "
                             f"{VISION_START}{IMAGE_PAD}{VISION_END} of the chat template")
        t, h, w = grids[image]
        rows, columns = h // merge_size, w // merge_size
        n = t * rows * columns
        if i + n > L or not all(is_image[i:i + n]):
            raise ValueError(f"image {image + 1} needs {n} consecutive {IMAGE_PAD} tokens ({t} x {rows} x {columns}) "
                             f"but the prompt has fewer there; build prompts with the processor")
        grid = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(rows), torch.arange(columns),
                                          indexing="ij")).reshape(3, n)  # [3, n]: (t, row, column)
        positions[:, i:i + n] = grid.to(input_ids.device) + current
        spans.append((i, i + n))
        current, i, image = current + max(t, rows, columns), i + n, image + 1
    return positions, (current - L), spans


# --- the model ------------------------------------------------------------------------------------------------------
class Qwen2_5_VLTextModel(nn.Module):
    """The Qwen2 decoder trunk, parameter names as in the hub files (`model.*`)."""

    def __init__(self, config: Qwen2_5_VLConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, attn_implementation) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class Qwen2_5_VLForConditionalGeneration(VisionLanguageModel):
    """Qwen2.5-VL with the hub's module names: `visual` (transformers' vision tower), `model`, `lm_head`."""

    family = "qwen2_5_vl"
    image_input_names = ("pixel_values", "image_grid_thw")
    returns_prompt_in_generate = True

    def __init__(self, config: Qwen2_5_VLConfig, attn_implementation: str = "sdpa"):
        super().__init__(config)
        vision = transformers.Qwen2_5_VLConfig(vision_config=config.vision_config).vision_config
        vision._attn_implementation = "sdpa"
        self.visual = transformers.models.qwen2_5_vl.modeling_qwen2_5_vl.Qwen2_5_VisionTransformerPretrainedModel(
            vision)
        self.model = Qwen2_5_VLTextModel(config, attn_implementation)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()

    def set_attn_implementation(self, implementation: str) -> None:
        """'sdpa' (default), 'eager' or 'flash_attention_2' for the decoder."""
        set_attn_implementation(self.model, implementation)

    # --- inputs ------------------------------------------------------------------------------------------------
    def encode_images(self, pixel_values: Tensor, image_grid_thw: Tensor) -> list[Tensor]:
        """Patches [sum of t*h*w, 3*2*14*14] and grids [N, 3] -> each image's visual tokens [t*h*w/4, C]."""
        out = self.visual(pixel_values.to(self.device, self.visual.dtype), grid_thw=image_grid_thw.to(self.device))
        features = out.pooler_output if hasattr(out, "pooler_output") else out  # [sum of tokens, C]
        sizes = (image_grid_thw.prod(-1) // self.config.spatial_merge_size ** 2).tolist()
        return list(features.to(self.dtype).split(sizes))

    def embed_multimodal(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                         max_length: int | None = None, pixel_values: Tensor | None = None,
                         image_grid_thw: Tensor | None = None) -> MultimodalInputs:
        """Each `<|image_pad|>` row takes the next visual token, images in reading order over the batch; M-RoPE
        positions on every token."""
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        sequences = [ids[m] for ids, m in zip(input_ids, mask)]
        label_seqs = [lab[m] for lab, m in zip(labels, mask)] if labels is not None else None
        grids = self._checked_grids(pixel_values, image_grid_thw, sum(int((s == self.config.image_token_id).sum())
                                                                     for s in sequences))
        features = self.encode_images(pixel_values, image_grid_thw) if grids else []
        merge = self.config.spatial_merge_size

        embeds, labs, positions, spans, deltas, token_grids, next_image = [], [], [], [], [], [], 0
        for b, ids in enumerate(sequences):
            count = int((ids == self.config.image_token_id).sum())
            mine = []
            while count > 0 and next_image < len(grids):
                t, h, w = grids[next_image]
                mine.append(next_image)
                count -= t * h * w // merge ** 2
                next_image += 1
            pos, delta, sample_spans = mrope_positions(ids, [grids[i] for i in mine], self.config.image_token_id,
                                                       merge)
            e = self.model.embed_tokens(ids)  # [L_b, C]
            lab = label_seqs[b].clone() if label_seqs is not None else None
            for index, (start, end) in zip(mine, sample_spans):
                e = torch.cat([e[:start], features[index], e[end:]])
                if lab is not None:
                    lab[start:end] = IGNORE_INDEX
            limit = min(max_length or len(ids), len(ids))
            embeds.append(e[:limit])
            labs.append(lab[:limit] if lab is not None else None)
            positions.append(pos[:, :limit])
            kept = [(s, min(t, limit)) for s, t in sample_spans if s < limit]
            spans.append(kept)
            deltas.append(delta)
            token_grids.append([(grids[i][1] // merge, grids[i][2] // merge) for i in mine][:len(kept)])
        return self.pad(embeds, labs if label_seqs is not None else None, positions, spans, deltas, token_grids)

    def _checked_grids(self, pixel_values: Tensor | None, image_grid_thw: Tensor | None,
                       num_image_tokens: int) -> list[tuple[int, int, int]]:
        """The images' patch grids, checked against the prompt's image tokens and the processor's max_pixels."""
        if (pixel_values is None) != (image_grid_thw is None):
            raise ValueError("pixel_values and image_grid_thw go together: pass both, as the processor returns them")
        grids = [] if image_grid_thw is None else [tuple(int(x) for x in g) for g in image_grid_thw.reshape(-1, 3)]
        merge, patch = self.config.spatial_merge_size, self.config.patch_size
        given = sum(t * h * w // merge ** 2 for t, h, w in grids)
        if given != num_image_tokens:
            raise ValueError(f"the prompt has {num_image_tokens} {IMAGE_PAD} token(s) but the {len(grids)} image(s) "
                             f"give {given} visual tokens: build the prompt and the pixels together with the "
                             f"processor (one {VISION_START}{IMAGE_PAD}{VISION_END} per image in the chat template)")
        for i, (t, h, w) in enumerate(grids):
            pixels = h * w * patch * patch
            if self.config.max_pixels and pixels > self.config.max_pixels:
                raise ValueError(f"image {i + 1} is {h * patch} x {w * patch} = {pixels:,} pixels, more than the "
                                 f"processor's max_pixels {self.config.max_pixels:,}: let the processor resize it "
                                 f"(it keeps images within max_pixels) or raise max_pixels in preprocessor_config.json")
        return grids

    def chat_format(self, tokenizer: Any, processor: Any, conv_mode: str | None = None,
                    **options: Any) -> "Qwen2_5_VLChatFormat":
        return Qwen2_5_VLChatFormat(processor)

    # --- checkpoints -------------------------------------------------------------------------------------------
    @classmethod
    def accepts(cls, raw_config: dict[str, Any]) -> bool:
        return raw_config.get("model_type") == "qwen2_5_vl" or any(
            a in ARCHITECTURES for a in raw_config.get("architectures") or ())

    @classmethod
    def read_layout(cls, folder: Path) -> tuple[int, int | None]:
        return Qwen2_5_VLConfig.from_pretrained(folder).num_hidden_layers, None  # V follows each image's size

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa",
                        **unused: Any) -> tuple["Qwen2_5_VLForConditionalGeneration", Any, Any]:
        """(model, tokenizer, processor) from a Qwen2.5-VL folder in either key layout."""
        folder = Path(folder)
        cfg = Qwen2_5_VLConfig.from_pretrained(folder)
        files = weight_files(folder)
        with torch.device("meta"):
            model = cls(cfg, attn_implementation)
        # the vision tower keeps non-persistent buffers (rotary frequencies) that no checkpoint holds: build it
        vision = transformers.Qwen2_5_VLConfig(vision_config=cfg.vision_config).vision_config
        vision._attn_implementation = "sdpa"
        model.visual = type(model.visual)(vision)
        load_weights(model, files, to_our_key, device, dtype, family="Qwen2.5-VL")
        if attn_implementation != "sdpa":
            model.set_attn_implementation(attn_implementation)
        processor = Qwen2_5_VLProcessor.from_pretrained(folder)
        return model, processor.tokenizer, processor

    def save_pretrained(self, folder: str | Path, max_shard_params: int | None = None,
                        dtype: torch.dtype | None = None) -> Path:
        """config.json and safetensors shards (+ index) in the hub's key layout; the processor saves itself."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in self.state_dict().items()}
        if self.config.tie_word_embeddings:
            state.pop("lm_head.weight")
        shards = split_shards(state, max_shard_params)
        names = ["model.safetensors"] if len(shards) == 1 else \
            [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        weight_map = {}
        for name, shard in zip(names, shards):
            save_file(shard, str(folder / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in shard})
        if len(shards) > 1:
            total = sum(t.numel() * t.element_size() for t in state.values())
            (folder / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        (folder / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2))
        return folder

    def transformers_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Our generate() inputs are the processor's, which transformers' model takes as they are."""
        return dict(inputs)

    def to_transformers(self):
        """The same weights in transformers' `Qwen2_5_VLForConditionalGeneration` (SDPA), on this model's device
        and dtype."""
        hf_config = transformers.Qwen2_5_VLConfig(**{k: v for k, v in self.config.to_dict().items()
                                                     if k not in ("architectures", "model_type")})
        hf_config._attn_implementation = "sdpa"
        for sub in (hf_config.text_config, hf_config.vision_config):
            sub._attn_implementation = "sdpa"
        with torch.device(self.device):
            hf = transformers.Qwen2_5_VLForConditionalGeneration(hf_config).to(self.dtype).eval()
        ours = self.state_dict()
        state = {name: ours[to_our_key(name)] for name in hf.state_dict() if to_our_key(name) in ours}
        hf.load_state_dict(state, strict=False)
        return hf.requires_grad_(False)


def to_our_key(key: str) -> str | None:
    """A tensor name of either layout -> ours (the hub's)."""
    if key.startswith("model.language_model."):
        return "model." + key.removeprefix("model.language_model.")
    if key.startswith("model.visual."):
        return key.removeprefix("model.")
    return key


# --- the processor and the chat format --------------------------------------------------------------------------------
class Qwen2_5_VLProcessor:
    """What transformers' `Qwen2_5_VLProcessor` gives for text and images — `apply_chat_template(messages, ...)` and
    `processor(text=[...], images=[...], return_tensors="pt")` -> input_ids, attention_mask, pixel_values,
    image_grid_thw, mm_token_type_ids — built from the tokenizer, the PIL image processor and the chat template
    alone: transformers' own needs torchvision (for its video processor) even for images."""

    def __init__(self, image_processor: Any, tokenizer: Any, chat_template: str | None = None):
        self.image_processor, self.tokenizer = image_processor, tokenizer
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        self.image_token = IMAGE_PAD
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise CheckpointError(f"the tokenizer has no {IMAGE_PAD} token: it is not a Qwen2.5-VL tokenizer")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Qwen2_5_VLProcessor":
        folder = Path(folder)
        missing = [name for name in ("tokenizer_config.json", "preprocessor_config.json") if not (folder / name).is_file()]
        if missing or not ((folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()):
            raise CheckpointError(f"{folder} lacks {', '.join(missing) or 'tokenizer.json'}: a Qwen2.5-VL folder holds "
                                  f"the tokenizer (tokenizer.json or vocab.json + merges.txt, tokenizer_config.json) and "
                                  f"preprocessor_config.json beside the weights; is the download complete?")
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
        image_processor = transformers.Qwen2VLImageProcessorPil.from_pretrained(str(folder))
        template = None
        if (folder / "chat_template.json").is_file():
            template = json.loads((folder / "chat_template.json").read_text())["chat_template"]
        elif (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text()
        if template is None and not getattr(tokenizer, "chat_template", None):
            raise CheckpointError(f"{folder} has no chat template (chat_template.json); copy it from the model's "
                                  f"release")
        return cls(image_processor, tokenizer, template)

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.tokenizer.save_pretrained(str(folder))
        self.image_processor.save_pretrained(str(folder))
        (folder / "chat_template.json").write_text(json.dumps({"chat_template": self.chat_template}, indent=2))

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False,
                            tokenize: bool = False, **kwargs: Any) -> str:
        if tokenize:
            raise ValueError("use tokenize=False, then processor(text=[text], images=[...]) (the images must be "
                             "processed with the text)")
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt, **kwargs)

    def __call__(self, text: str | list[str], images: Sequence[Any] | None = None, return_tensors: str = "pt",
                 padding: bool | str = False, **kwargs: Any) -> BatchFeature:
        texts = [text] if isinstance(text, str) else list(text)
        placeholders = sum(t.count(IMAGE_PAD) for t in texts)
        if placeholders != len(images or ()):
            raise ValueError(f"{len(images or ())} image(s) but {placeholders} image placeholder(s) in the text: put "
                             f"one {{'type': 'image'}} per image in the messages")
        image_inputs: dict[str, Tensor] = {}
        if images:
            try:
                image_inputs = dict(self.image_processor(images=list(images), return_tensors="pt"))
            except ValueError as err:
                raise ValueError(f"cannot preprocess the image: {err}") from None
            tokens = iter((image_inputs["image_grid_thw"].prod(-1) // self.image_processor.merge_size ** 2).tolist())
            texts = [expand_placeholders(t, tokens) for t in texts]
        encoded = self.tokenizer(texts, return_tensors=return_tensors, padding=padding, **kwargs)
        mm_token_type_ids = (encoded["input_ids"] == self.image_token_id).int()
        return BatchFeature(data={**encoded, **image_inputs, "mm_token_type_ids": mm_token_type_ids},
                            tensor_type=return_tensors)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)


def expand_placeholders(text: str, tokens_per_image: Iterator[int]) -> str:
    """Each image's one <|image_pad|> -> as many as it has visual tokens (the next counts of `tokens_per_image`)."""
    pieces = text.split(IMAGE_PAD)
    return pieces[0] + "".join(IMAGE_PAD * next(tokens_per_image) + piece for piece in pieces[1:])


class Qwen2_5_VLChatFormat:
    """Qwen's chat template (system prompt, <|im_start|>role ... <|im_end|>), an image where "<image>" stands in a
    human turn; labels on each assistant answer and the <|im_end|> that closes it."""

    def __init__(self, processor: Qwen2_5_VLProcessor):
        self.processor, self.tokenizer = processor, processor.tokenizer
        self.im_start = self.tokenizer.convert_tokens_to_ids("<|im_start|>")
        self.im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.assistant_header = self.tokenizer("assistant\n", add_special_tokens=False).input_ids

    @property
    def stop_token_ids(self) -> list[int]:
        ids = [self.tokenizer.convert_tokens_to_ids(token) for token in STOP_TOKENS]
        return [i for i in ids if i is not None and i != self.tokenizer.unk_token_id]

    @staticmethod
    def messages(turns: list[dict[str, str]]) -> list[dict[str, Any]]:
        """LLaVA-style turns -> chat messages; "<image>" in a human turn becomes an image entry at its place."""
        messages = []
        for turn in turns:
            if turn["from"] == "gpt":
                messages.append({"role": "assistant", "content": [{"type": "text", "text": turn["value"]}]})
                continue
            content: list[dict[str, str]] = []
            pieces = turn["value"].split(DEFAULT_IMAGE_TOKEN)
            for i, piece in enumerate(pieces):
                if i:
                    content.append({"type": "image"})
                    piece = piece.lstrip("\n")  # LLaVA writes "<image>\n" + question
                if i < len(pieces) - 1:
                    piece = piece.rstrip("\n")
                if piece:
                    content.append({"type": "text", "text": piece})
            messages.append({"role": "user", "content": content})
        return messages

    @staticmethod
    def grid_box(size: tuple[int, int]) -> tuple[float, float, float, float]:
        """The whole image: the processor resizes it to a multiple of the merged patch, without cropping."""
        return (0, 0, size[0], size[1])

    def generation_inputs(self, turns: list[dict[str, str]], images: Sequence[Any]) -> dict[str, Tensor]:
        text = self.processor.apply_chat_template(self.messages(turns), add_generation_prompt=True)
        return dict(self.processor(text=[text], images=list(images) or None, return_tensors="pt"))

    def training_inputs(self, turns: list[dict[str, str]], images: Sequence[Any], max_length: int,
                        name: str = "a sample") -> dict[str, Tensor]:
        """The whole conversation; truncation to max_length happens after the visual tokens are spliced in
        (embed_multimodal), so an image is never cut from its placeholder tokens here."""
        text = self.processor.apply_chat_template(self.messages(turns), add_generation_prompt=False)
        inputs = self.processor(text=[text], images=list(images) or None, return_tensors="pt")
        input_ids = inputs["input_ids"][0]  # [L]
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        ids, header = input_ids.tolist(), self.assistant_header
        for start in (i for i, token in enumerate(ids) if token == self.im_start):
            first = start + 1 + len(header)
            if ids[start + 1:first] != header:
                continue
            end = ids.index(self.im_end, first) if self.im_end in ids[first:] else len(ids) - 1
            labels[first:end + 1] = input_ids[first:end + 1]  # the answer and its <|im_end|>
        out = {"input_ids": input_ids, "labels": labels}
        if images:
            out.update(pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"])
        return out
