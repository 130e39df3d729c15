"""LLaVA-1.5: CLIP vision tower -> projector -> Llama decoder, with LLaVA's module names.

The module tree mirrors `liuhaotian/llava-v1.5-7b`'s parameter names (`model.layers.N.*`, `model.mm_projector.*`,
`model.vision_tower.vision_tower.*`, `lm_head`), so that layout loads without renaming. `forward` gives logits
and the loss as LLaVA's does; `generate` is the inference engine's (see `twigvlm.inference.generate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from twigvlm.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from twigvlm.model.config import LlavaConfig
from twigvlm.model.llama import DecoderLayer, RMSNorm, RotaryEmbedding, run_layers, set_attn_implementation
from twigvlm.model.vision import VisionTower, build_projector



@dataclass
class MultimodalInputs:
    """A batch with every image spliced in where its <image> tag was (right-padded unless configured left)."""

    embeds: Tensor  # [B, L, C]
    attention_mask: Tensor  # [B, L] bool, False on padding
    position_ids: Tensor  # [B, L]
    labels: Tensor | None  # [B, L], IGNORE_INDEX on image tokens and padding
    visual_spans: list[list[tuple[int, int]]]  # per sample, [start, end) of each image's tokens

    @property
    def has_padding(self) -> bool:
        return not bool(self.attention_mask.all())


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


class LlavaLlamaForCausalLM(nn.Module):
    def __init__(self, config: LlavaConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        if config.vision_config is None:
            raise ValueError("LlavaConfig.vision_config is unset: resolve the vision tower first "
                             "(twigvlm.model.checkpoint.load_llava does)")
        self.config = config
        self.model = LlavaLlamaModel(config, attn_implementation)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.rotary = RotaryEmbedding(config.attn_head_dim, config.rope_theta, config.max_position_embeddings)
        self.twig: nn.Module | None = None  # attached by load_pretrained_model(twig=...) / attach_twig
        self.gradient_checkpointing = False

    # --- what LLaVA's code calls on a model -------------------------------------------------------------------
    def get_model(self) -> LlavaLlamaModel:
        return self.model

    def get_vision_tower(self) -> VisionTower:
        return self.model.vision_tower

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.layers

    def set_attn_implementation(self, implementation: str) -> None:
        """'sdpa' (default), 'eager' or 'flash_attention_2', for the decoder and an attached twig."""
        set_attn_implementation(self, implementation)

    def attach_twig(self, twig: nn.Module | None) -> None:
        """Grow (or remove, with None) a twig on this base; see `twigvlm.model.twig`."""
        if twig is not None:
            twig.check_fits(self.config)
            twig.to(device=self.device, dtype=self.dtype)
        self.twig = twig

    # --- inputs ------------------------------------------------------------------------------------------------
    def encode_images(self, images: Tensor) -> Tensor:
        """images [N, 3, H, W] -> visual tokens in the decoder's space [N, P, C]."""
        return self.model.mm_projector(self.model.vision_tower(images)).to(self.dtype)

    def rope(self, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        return self.rotary(position_ids, self.dtype)

    def embed_multimodal(self, input_ids: Tensor, images: Tensor | Sequence[Tensor] | None = None,
                         attention_mask: Tensor | None = None, labels: Tensor | None = None,
                         max_length: int | None = None) -> MultimodalInputs:
        """Embed token ids [B, L] and splice image i's visual tokens where the i-th <image> tag
        (IMAGE_TOKEN_INDEX) stands, in reading order over the batch. Padding (attention_mask False) is dropped
        and the batch re-padded; `max_length` truncates, as LLaVA does in training."""
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        sequences = [ids[m] for ids, m in zip(input_ids, mask)]
        label_seqs = [lab[m] for lab, m in zip(labels, mask)] if labels is not None else None
        features = self._image_features(images, sum(int((s == IMAGE_TOKEN_INDEX).sum()) for s in sequences))

        embeds, labs, spans, next_image = [], [], [], 0
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
            limit = max_length or length
            embeds.append(torch.cat(pieces)[:limit])
            labs.append(torch.cat(lab_pieces)[:limit] if label_seqs is not None else None)
            spans.append([(s, min(e, limit)) for s, e in sample_spans if s < limit])
        return self._pad(embeds, labs if label_seqs is not None else None, spans)

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

    def _pad(self, embeds: list[Tensor], labels: list[Tensor] | None,
             spans: list[list[tuple[int, int]]]) -> MultimodalInputs:
        batch, longest = len(embeds), max(len(e) for e in embeds)
        left = self.config.tokenizer_padding_side == "left"
        device = embeds[0].device
        out = embeds[0].new_zeros(batch, longest, embeds[0].shape[-1])
        mask = torch.zeros(batch, longest, dtype=torch.bool, device=device)
        positions = torch.zeros(batch, longest, dtype=torch.long, device=device)
        out_labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long, device=device)
        for b, e in enumerate(embeds):
            n = len(e)
            sl = slice(longest - n, longest) if left else slice(0, n)
            out[b, sl], mask[b, sl] = e, True
            positions[b, sl] = torch.arange(n, device=device)
            if labels is not None:
                out_labels[b, sl] = labels[b]
            if left:
                spans[b] = [(s + longest - n, e_ + longest - n) for s, e_ in spans[b]]
        return MultimodalInputs(out, mask, positions, out_labels if labels is not None else None, spans)

    # --- the full forward (training, scoring, parity) ----------------------------------------------------------
    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                images: Tensor | None = None, image_sizes: Any = None, labels: Tensor | None = None,
                inputs: MultimodalInputs | None = None, **unused: Any) -> CausalLMOutputWithPast:
        """Logits [B, L, V] of every position (image tokens included) and, with labels, the next-token loss."""
        inputs = inputs or self.embed_multimodal(input_ids, images, attention_mask, labels)
        hidden = self.hidden_states(inputs, self.model.layers)
        logits = self.lm_head(self.model.norm(hidden))
        loss = next_token_loss(logits, inputs.labels) if inputs.labels is not None else None
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def hidden_states(self, inputs: MultimodalInputs, layers: Sequence[DecoderLayer],
                      hidden: Tensor | None = None) -> Tensor:
        """Run `layers` over a whole (padded) batch without a cache: [B, L, C] -> [B, L, C]."""
        mask = padded_causal_mask(inputs.attention_mask) if inputs.has_padding else None
        hidden, _ = run_layers(layers, inputs.embeds if hidden is None else hidden, self.rope(inputs.position_ids),
                               mask=mask, checkpointing=self.gradient_checkpointing and self.training)
        return hidden

    @torch.no_grad()
    def generate(self, inputs: Tensor | None = None, images: Tensor | None = None, **kwargs: Any) -> Any:
        """LLaVA's `model.generate(...)`, plus `twigvlm_config=` for pruning and self-speculative decoding."""
        from twigvlm.inference.generate import generate  # the engine lives one layer up

        return generate(self, inputs if inputs is not None else kwargs.pop("input_ids"), images=images, **kwargs)


def padded_causal_mask(attention_mask: Tensor) -> Tensor:
    """[B, L] key validity -> bool [B, 1, L, L]: causal, and no attention to padding."""
    length = attention_mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    mask = causal[None] & attention_mask[:, None, :]
    # a padding row that can see nothing would give NaNs in SDPA; let it see itself (its output is ignored)
    mask |= torch.eye(length, dtype=torch.bool, device=mask.device)[None] & ~attention_mask[:, :, None]
    return mask[:, None]


def next_token_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of predicting labels[t+1] from position t, IGNORE_INDEX skipped, in float32."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)
