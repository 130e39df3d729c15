"""The engine: the base decoder split into stacks around the twig, each with its own KV cache.

    tokens -> embed -> lower [0, K) -> h_K stream ─┬─> twig (T layers) -> twig norm/head   = draft model
                                                   └─> middle [K, F) -> top [F, N) -> head = target model

Layers [0, K) are shared: they run once per token and write the layer-K hidden state h_K into a buffer. The twig
and the upper stacks are two CONSUMERS of that stream, each with a cursor; running one of them consumes the h_K
rows it has not seen yet. So the h_K of drafted tokens, computed while drafting, is what the verifier reads: no
layer [0, K) runs twice for a token. Prefill is where pruning happens: the middle stack receives only the kept
visual tokens, the top stack none, each at its ORIGINAL position id. After a rejection, `rollback` sets every
cache and cursor back to the accepted length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from twigvlm.inference.cache import KVCache
from twigvlm.inference.pruning import PruningPlan, select_visual_tokens, visual_scores
from twigvlm.model.llama import run_layers


@dataclass
class Stack:
    """Consecutive decoder layers, their cache, and how many prompt tokens pruning removed from them."""

    layers: nn.ModuleList | list
    cache: KVCache
    pruned: int = 0  # cache length = logical tokens - pruned

    def truncate(self, logical_length: int) -> None:
        self.cache.truncate(max(logical_length - self.pruned, 0))


@dataclass
class PrefillResult:
    target_logits: Tensor  # [V] next-token logits of the target after the prompt
    draft_logits: Tensor | None  # [V] the twig's, when there is a twig
    kept_visual: Tensor | None  # indices (into the image tokens) kept for layers [K, F)
    visual_tokens: dict[str, float]  # visual tokens per layer group and their average over base layers


class Engine:
    """The state of ONE generation (batch size 1): caches, the h_K stream, and the cursors of its consumers."""

    def __init__(self, model: nn.Module, twig: nn.Module | None, plan: PruningPlan, capacity: int):
        cfg = model.config
        self.model, self.twig, self.plan = model, twig, plan
        self.N = cfg.num_hidden_layers
        self.K = twig.K if twig is not None else plan.K
        self.F = plan.wipe_layer(self.N) if plan.active else self.N
        layers = model.model.layers
        cache = lambda n: KVCache(n, cfg.num_key_value_heads, cfg.attn_head_dim, capacity,  # noqa: E731
                                  model.dtype, model.device)
        self.lower = Stack(layers[:self.K], cache(self.K))
        self.draft = Stack(twig.layers, cache(twig.T)) if twig is not None else None
        self.middle = Stack(layers[self.K:self.F], cache(self.F - self.K))
        self.top = Stack(layers[self.F:], cache(self.N - self.F))
        self.h_k = torch.empty(1, capacity, cfg.hidden_size, dtype=model.dtype, device=model.device)  # [1, S, C]
        self.length = 0  # tokens through the lower stack (the h_K stream's length)
        self.draft_pos = 0  # h_K rows consumed by the twig
        self.target_pos = 0  # h_K rows consumed by the upper stacks

    # --- prefill -----------------------------------------------------------------------------------------------
    def prefill(self, embeds: Tensor, visual_span: tuple[int, int] | None) -> PrefillResult:
        """Run the whole prompt embeds [1, P, C]; prune the visual tokens of `visual_span` per the plan."""
        P = embeds.shape[1]
        positions = torch.arange(P, device=embeds.device)[None]  # [1, P]
        rope = self.model.rope(positions)
        fastv = self.plan.method == "fastv" and visual_span is not None
        h, lower_attn = run_layers(self.lower.layers, embeds, rope, self.lower.cache, score_last_layer=fastv)
        self._store_h_k(h)

        draft_logits, twig_attn = None, None
        if self.draft is not None:
            ttp = self.plan.method == "twig" and visual_span is not None
            h_twig, twig_attn = run_layers(self.draft.layers, h, rope, self.draft.cache, score_last_layer=ttp)
            draft_logits = self._twig_head(h_twig[:, -1])[0]
            self.draft_pos = P
        elif self.plan.method == "twig":
            raise ValueError("twig-guided pruning needs a twig: load one (twig=...) or use pruning 'fastv'/'none'")

        V = visual_span[1] - visual_span[0] if visual_span else 0
        kept, mid_pos, top_rows = None, positions[0], None
        if self.plan.active and visual_span is not None:
            attention = lower_attn if fastv else twig_attn
            scores = visual_scores(attention, visual_span) if attention is not None else None
            kept = select_visual_tokens(self.plan, scores, V, self.plan.rank(self.N, V), embeds.device)
            start, end = visual_span
            mid_pos = torch.cat([mid_pos[:start], kept + start, mid_pos[end:]])  # [P'] ascending, original ids
            top_rows = (mid_pos < start) | (mid_pos >= end)  # the final wipe keeps text only
            h = h[:, mid_pos]
        h, _ = run_layers(self.middle.layers, h, self.model.rope(mid_pos[None]), self.middle.cache)
        top_pos = mid_pos if top_rows is None else mid_pos[top_rows]
        h = h if top_rows is None else h[:, top_rows]
        h, _ = run_layers(self.top.layers, h, self.model.rope(top_pos[None]), self.top.cache)
        self.middle.pruned, self.top.pruned = P - len(mid_pos), P - len(top_pos)
        self.target_pos = P
        visual = self.plan.visual_tokens_per_group(self.N, V, self.draft is not None)
        return PrefillResult(self._target_head(h[:, -1])[0], draft_logits, kept, visual)

    # --- decoding steps ----------------------------------------------------------------------------------------
    def extend(self, tokens: Tensor) -> None:
        """Feed new tokens [q] through the lower stack; their h_K joins the stream."""
        embeds = self.model.model.embed_tokens(tokens[None])  # [1, q, C]
        positions = torch.arange(self.length, self.length + len(tokens), device=tokens.device)[None]
        h, _ = run_layers(self.lower.layers, embeds, self.model.rope(positions), self.lower.cache)
        self._store_h_k(h)

    def draft_logits(self) -> Tensor:
        """Run the twig on the h_K rows it has not seen; logits [V] for the token after the stream."""
        h = self._consume([self.draft], self.draft_pos)
        self.draft_pos = self.length
        return self._twig_head(h[:, -1])[0]

    def target_logits(self) -> Tensor:
        """Run layers [K, N) on the h_K rows they have not seen; logits [q, V], one per consumed row."""
        h = self._consume([self.middle, self.top], self.target_pos)
        self.target_pos = self.length
        return self._target_head(h)[0]

    def rollback(self, length: int) -> None:
        """Keep the first `length` tokens of the sequence in every cache and cursor; forget the rest."""
        self.length = min(self.length, length)
        self.lower.cache.truncate(self.length)
        self.target_pos = min(self.target_pos, length)
        self.middle.truncate(self.target_pos)
        self.top.truncate(self.target_pos)
        if self.draft is not None:
            self.draft_pos = min(self.draft_pos, length)
            self.draft.truncate(self.draft_pos)

    # --- helpers -----------------------------------------------------------------------------------------------
    def _store_h_k(self, h: Tensor) -> None:
        end = self.length + h.shape[1]
        if end > self.h_k.shape[1]:
            self.h_k = torch.cat([self.h_k, torch.empty_like(self.h_k)], dim=1)
        self.h_k[:, self.length:end] = h
        self.length = end

    def _consume(self, stacks: list[Stack], start: int) -> Tensor:
        """Run the h_K rows [start, length) through `stacks` in turn, each appending to its cache."""
        positions = torch.arange(start, self.length, device=self.h_k.device)[None]
        rope = self.model.rope(positions)
        h = self.h_k[:, start:self.length]
        for stack in stacks:
            h, _ = run_layers(stack.layers, h, rope, stack.cache)
        return h

    def _twig_head(self, h: Tensor) -> Tensor:
        return self.twig.lm_head(self.twig.norm(h)).float()

    def _target_head(self, h: Tensor) -> Tensor:
        return self.model.lm_head(self.model.model.norm(h)).float()
