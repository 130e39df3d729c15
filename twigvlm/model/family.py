"""What twigvlm needs from a base VLM, written once; each model family (`llava.py`, `qwen2_5_vl.py`) fills it in.

The engine, pruning, the decoding strategies, the twig, training and evaluation see a base VLM only through this:

- `config`, a `DecoderConfig`: the decoder's shape (layers, heads, rotary embedding, vocabulary);
- `embed_multimodal(input_ids, **image_inputs) -> MultimodalInputs`: the prompt embedded with every image's visual
  tokens spliced in, where each image's tokens are (`visual_spans`), and the position ids of every token
  (`position_ids` [A, B, L]: A = 1 for plain RoPE, 3 for M-RoPE's temporal/height/width) with the offset that
  decoding continues from (`rope_deltas`);
- the decoder: `embed_tokens`, `layers`, `norm`, `lm_head`, and `rope(position_ids)` for any subset of positions;
- the chat format: `chat_format(tokenizer, processor)` turns LLaVA-style turns and images into model inputs, for
  generation (the answer left open) and for training (labels on the answers only);
- loading: `accepts(config.json)` and `from_pretrained(folder)` for the checkpoint layouts users have.

A third family is one module: a subclass of `VisionLanguageModel`, its `DecoderConfig` subclass, its chat format,
and a line in `twigvlm.model.auto.FAMILIES`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from twigvlm.constants import IGNORE_INDEX
from twigvlm.model.decoder import DecoderConfig, KVStore, RotaryEmbedding, run_layers


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the problem and the fix."""


@dataclass
class MultimodalInputs:
    """A batch with every image's visual tokens spliced in where its placeholder was (right-padded)."""

    embeds: Tensor  # [B, L, C]
    attention_mask: Tensor  # [B, L] bool, False on padding
    position_ids: Tensor  # [A, B, L]: A = 1 (RoPE) or 3 (M-RoPE: temporal, height, width)
    labels: Tensor | None  # [B, L], IGNORE_INDEX on visual tokens and padding
    visual_spans: list[list[tuple[int, int]]]  # per sample, [start, end) of each image's tokens, in reading order
    rope_deltas: Tensor  # [B]: a token decoded at sequence index t sits at position t + delta on every axis
    image_grids: list[list[tuple[int, int]]]  # per sample and image, its visual tokens as (rows, columns)

    @property
    def has_padding(self) -> bool:
        return not bool(self.attention_mask.all())

    def visual_mask(self) -> Tensor:
        """[B, L] True at every visual token."""
        mask = torch.zeros_like(self.attention_mask)
        for b, spans in enumerate(self.visual_spans):
            for start, end in spans:
                mask[b, start:end] = True
        return mask

    def decode_positions(self, start: int, end: int, sample: int = 0) -> Tensor:
        """Position ids [A, 1, end - start] of the tokens at sequence indices [start, end) after the prompt."""
        axes = self.position_ids.shape[0]
        steps = torch.arange(start, end, device=self.embeds.device) + self.rope_deltas[sample]
        return steps.expand(axes, 1, -1)


class ChatFormat(Protocol):
    """How a family's prompts are written. A conversation is LLaVA's list of turns ({"from": "human"|"gpt",
    "value"}), "<image>" marking where each image goes in a human turn."""

    def generation_inputs(self, turns: list[dict[str, str]], images: Sequence[Any]) -> dict[str, Tensor]:
        """The model inputs (batch of 1) for `model.generate(**inputs)`, the assistant's answer left open."""

    def grid_box(self, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """The region (left, top, right, bottom) of an image of `size` (width, height), in its pixels, that the grid
        of its visual tokens covers: beyond the image's edges where it is padded, within them where it is cropped."""

    def training_inputs(self, turns: list[dict[str, str]], images: Sequence[Any],
                        max_length: int) -> dict[str, Tensor]:
        """input_ids [L], labels [L] (the answers and what ends them; IGNORE_INDEX elsewhere), and the images'
        inputs, each with a leading per-image dimension so that a batch concatenates them."""

    @property
    def stop_token_ids(self) -> list[int]:
        """Tokens that end an answer."""


class VisionLanguageModel(nn.Module, abc.ABC):
    """A base VLM: vision tower -> projector -> decoder. Subclasses keep their checkpoints' module names and put
    the decoder trunk (`embed_tokens`, `layers`, `norm`) under `self.model`."""

    family: ClassVar[str]  # its name in messages and in twig_config.json, e.g. "llava"
    image_input_names: ClassVar[tuple[str, ...]]  # the keyword arguments of embed_multimodal that carry images
    returns_prompt_in_generate: ClassVar[bool] = False  # transformers' generate returns prompt + answer

    config: DecoderConfig
    model: nn.Module  # the trunk: embed_tokens, layers, norm
    lm_head: nn.Linear

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        self.rotary = RotaryEmbedding(config.attn_head_dim, config.rope_theta, config.mrope_section)
        self.gradient_checkpointing = False

    # --- loading -----------------------------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def accepts(cls, raw_config: dict[str, Any]) -> bool:
        """Whether a checkpoint's config.json is of this family."""

    @classmethod
    @abc.abstractmethod
    def from_pretrained(cls, folder: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                        attn_implementation: str = "sdpa", **options: Any) -> tuple["VisionLanguageModel", Any, Any]:
        """(model in eval mode and frozen, tokenizer, processor) from a checkpoint folder."""

    @classmethod
    @abc.abstractmethod
    def read_layout(cls, folder: Path) -> tuple[int, int | None]:
        """(decoder layers N, visual tokens per image V, or None where images differ) from the configs alone: what
        a visual-token budget is checked against before any weights are read."""

    @abc.abstractmethod
    def chat_format(self, tokenizer: Any, processor: Any, conv_mode: str | None = None, **options: Any) -> ChatFormat:
        """This family's prompts, written with `tokenizer` and `processor` as `from_pretrained` returned them;
        `conv_mode` and `options` are LLaVA's (its conversation templates, image_aspect_ratio), ignored by
        families with one chat template."""

    @abc.abstractmethod
    def to_transformers(self) -> nn.Module:
        """The same weights in transformers' own class for this family (parity tests, the speed reference)."""

    @abc.abstractmethod
    def transformers_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """generate()'s inputs as that class takes them."""

    # --- the decoder ---------------------------------------------------------------------------------------------
    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.model.embed_tokens

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.layers

    @property
    def norm(self) -> nn.Module:
        return self.model.norm

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def rope(self, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        """position_ids [A, B, Q] -> cos, sin [B, 1, Q, D] in the model's dtype."""
        return self.rotary(position_ids, self.dtype)

    def logits(self, hidden: Tensor) -> Tensor:
        """The head on hidden states [..., C] -> [..., V]."""
        return self.lm_head(self.norm(hidden))

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    # --- inputs --------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def embed_multimodal(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                         max_length: int | None = None, **image_inputs: Any) -> MultimodalInputs:
        """Embed token ids [B, L] and splice in every image's visual tokens; padding (attention_mask False) is
        dropped and the batch re-padded on the right; `max_length` truncates, as training does."""

    def pad(self, embeds: list[Tensor], labels: list[Tensor] | None, positions: list[Tensor],
            spans: list[list[tuple[int, int]]], deltas: list[int],
            grids: list[list[tuple[int, int]]]) -> MultimodalInputs:
        """Per-sample embeds [L_b, C], labels [L_b] and positions [A, L_b] -> one right-padded batch."""
        batch, longest = len(embeds), max(len(e) for e in embeds)
        device = embeds[0].device
        out = embeds[0].new_zeros(batch, longest, embeds[0].shape[-1])
        mask = torch.zeros(batch, longest, dtype=torch.bool, device=device)
        position_ids = torch.zeros(positions[0].shape[0], batch, longest, dtype=torch.long, device=device)
        out_labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long, device=device)
        for b, e in enumerate(embeds):
            n = len(e)
            out[b, :n], mask[b, :n], position_ids[:, b, :n] = e, True, positions[b]
            if labels is not None:
                out_labels[b, :n] = labels[b]
        return MultimodalInputs(out, mask, position_ids, out_labels if labels is not None else None, spans,
                                torch.tensor(deltas, dtype=torch.long, device=device), grids)

    # --- the full forward (training, scoring, parity) --------------------------------------------------------------
    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                labels: Tensor | None = None, inputs: MultimodalInputs | None = None,
                **image_inputs: Any) -> CausalLMOutputWithPast:
        """Logits [B, L, V] of every position (visual tokens included) and, with labels, the next-token loss."""
        inputs = inputs or self.embed_multimodal(input_ids, attention_mask, labels, **self.image_inputs(image_inputs))
        logits = self.logits(self.hidden_states(inputs, self.layers))
        loss = next_token_loss(logits, inputs.labels) if inputs.labels is not None else None
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def image_inputs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The image inputs among keyword arguments (others, such as a processor's extras, are dropped)."""
        return {k: v for k, v in kwargs.items() if k in self.image_input_names}

    def hidden_states(self, inputs: MultimodalInputs, layers: Sequence[nn.Module], hidden: Tensor | None = None,
                      cache: KVStore | None = None) -> Tensor:
        """Run `layers` over a whole (padded) batch: [B, L, C] -> [B, L, C]; with a cache, its new tokens are
        these L (a batch of one without padding)."""
        mask = padded_causal_mask(inputs.attention_mask) if inputs.has_padding else None
        hidden, _ = run_layers(layers, inputs.embeds if hidden is None else hidden, self.rope(inputs.position_ids),
                               cache=cache, mask=mask, checkpointing=self.gradient_checkpointing and self.training)
        return hidden


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
