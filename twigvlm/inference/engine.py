"""The engine: the base decoder split into stacks around the twig, each with its own KV cache.

    tokens -> embed -> lower [0, K) -> h_K stream ─┬─> twig (T layers) -> twig norm/head   = draft model
                                                   └─> middle [K, F) -> top [F, N) -> head = target model

Layers [0, K) are shared: they run once per token and write the layer-K hidden state h_K into a buffer. The twig
and the upper stacks are two CONSUMERS of that stream, each with a cursor; running one of them consumes the h_K
rows it has not seen yet. So the h_K of drafted tokens, computed while drafting, is what the verifier reads: no
layer [0, K) runs twice for a token. Prefill is where pruning happens: the middle stack receives only the kept
visual tokens, the top stack none, each at its ORIGINAL position (`pruning.pruned_forward`). Decoded tokens sit
at sequence index + the prompt's rope delta (0 for plain RoPE; M-RoPE's images take fewer positions than tokens).
After a rejection, `rollback` sets every cache and cursor back to the accepted length.

Tree drafts (`open_tree`): the rows after the root are the nodes of a draft tree (`TreeRows`), each at position
root + depth and attending to the cache before the root and to its own ancestors; `keep_tree` keeps some of those
rows, in order, in the stream and every cache (the best nodes before verifying; the accepted path after it).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from twigvlm.inference.cache import KVCache, SlotWriter
from twigvlm.inference.pruning import (LayerGroups, PruningPlan, choose_visual_tokens, kept_rows, pruned_forward,
                                       unpruned_report, visual_scores)
from twigvlm.inference.tree import TreeRows
from twigvlm.model.decoder import run_layers
from twigvlm.model.family import MultimodalInputs, VisionLanguageModel


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
    kept_visual: Tensor | None  # indices (into the prompt's visual tokens) kept for layers [K, F)
    visual_tokens: dict[str, float]  # visual tokens per layer group and their average over base layers
    visual_scores: Tensor | None  # [V] what they were ranked by: the twig's attention (TTP), layer K-1's (FastV)


class Engine:
    """The state of ONE generation (batch size 1): caches, the h_K stream, and the cursors of its consumers.

    K is the twig's when there is one; without a twig (FastV, or no pruning) it is `K`, FastV's scoring layer + 1.
    With `compile`, every one-token step of a stack runs `torch.compile`d with static shapes (see `_run`).
    """

    def __init__(self, model: VisionLanguageModel, twig: nn.Module | None, plan: PruningPlan, capacity: int,
                 K: int = 2, compile: bool = False):
        cfg = model.config
        self.model, self.twig, self.plan = model, twig, plan
        self.N = cfg.num_hidden_layers
        self.K = twig.K if twig is not None else K
        if plan.F is not None:  # checked even without pruning: an F beyond the depth is the user's error to see
            plan.groups(self.N, self.K)
        self.groups = plan.groups(self.N, self.K) if plan.active else LayerGroups(self.N, self.K, self.N)
        self.F = self.groups.F
        cache = lambda n: KVCache(n, cfg.num_key_value_heads, cfg.attn_head_dim, capacity,  # noqa: E731
                                  model.dtype, model.device)
        self.lower = Stack(model.layers[:self.K], cache(self.K))
        self.draft = Stack(twig.layers, cache(twig.T)) if twig is not None else None
        self.middle = Stack(model.layers[self.K:self.F], cache(self.F - self.K))
        self.top = Stack(model.layers[self.F:], cache(self.N - self.F))
        self.h_k = torch.empty(1, capacity, cfg.hidden_size, dtype=model.dtype, device=model.device)  # [1, S, C]
        self.length = 0  # tokens through the lower stack (the h_K stream's length)
        self.draft_pos = 0  # h_K rows consumed by the twig
        self.target_pos = 0  # h_K rows consumed by the upper stacks
        self.axes, self.rope_delta = cfg.position_axes, 0  # decoding positions: sequence index + rope_delta
        self.rope_table: tuple[Tensor, Tensor] | None = None  # cos, sin [1, 1, S, D] of sequence indices [0, S)
        self.compiled = compiled_run_layers() if compile else None
        self.tree: TreeRows | None = None  # the stream's rows from `tree_start` on, when they are a draft tree
        self.tree_start = 0

    # --- prefill -----------------------------------------------------------------------------------------------
    def prefill(self, inputs: MultimodalInputs) -> PrefillResult:
        """Run the whole prompt (a batch of one); prune its visual tokens per the plan."""
        P = inputs.embeds.shape[1]
        V = sum(end - start for start, end in inputs.visual_spans[0])
        self.rope_delta = int(inputs.rope_deltas[0])
        rope = self.model.rope(inputs.position_ids)
        prune = self.plan.active and V > 0
        fastv, ttp = prune and self.plan.method == "fastv", prune and self.plan.method == "twig"
        h, lower_attention = run_layers(self.lower.layers, inputs.embeds, rope, self.lower.cache,
                                        score_last_layer=fastv)
        self._store_h_k(h)

        draft_logits, twig_attention = None, None
        if self.draft is not None:
            h_twig, twig_attention = run_layers(self.draft.layers, h, rope, self.draft.cache, score_last_layer=ttp)
            draft_logits = self._twig_head(h_twig[:, -1])[0]
            self.draft_pos = P
        elif ttp:
            raise ValueError("twig-guided pruning needs a twig: load one (twig=...) or use pruning 'fastv'/'none'")

        kept, middle, top, scores = None, None, None, None
        if prune:
            rank = self.plan.rank(self.groups, V)
            attention = lower_attention if fastv else twig_attention
            scores = visual_scores(attention, inputs.visual_mask()[0]) if attention is not None else None
            kept = choose_visual_tokens(scores, V, rank, self.plan.seed)
            middle, top = kept_rows(inputs, [kept])  # [1, P] each
            visual = self.groups.report(rank, V, self.draft is not None)
        else:
            visual = unpruned_report(self.N, V, self.draft is not None)
        h, _, _ = pruned_forward(self.model, inputs, h, self.groups, middle, top, (self.middle.cache, self.top.cache))
        self.middle.pruned = 0 if middle is None else P - int(middle.sum())
        self.top.pruned = 0 if top is None else P - int(top.sum())
        self.target_pos = P
        return PrefillResult(self._target_head(h[:, -1])[0], draft_logits, kept, visual, scores)

    # --- decoding steps ----------------------------------------------------------------------------------------
    def extend(self, tokens: Tensor, parents: list[int] | None = None) -> None:
        """Feed new tokens [q] through the lower stack; their h_K joins the stream. In a tree, `parents` are their
        parents' rows (counted from the root)."""
        if parents is not None:
            self.tree.append(parents)
        embeds = self.model.embed_tokens(tokens[None])  # [1, q, C]
        end = self.length + len(tokens)
        self._store_h_k(self._run(self.lower, embeds, self._rope(self.length, end),
                                  self._mask(self.lower, self.length, end)))

    def draft_logits(self, rows: int = 1) -> Tensor:
        """Run the twig on the h_K rows it has not seen; logits [rows, V] of the last `rows` of them (the last
        one's: the twig's guess at the token after the stream)."""
        h = self._consume([self.draft], self.draft_pos)
        self.draft_pos = self.length
        return self._twig_head(h[:, -rows:])[0]

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

    # --- draft trees ----------------------------------------------------------------------------------------------
    def open_tree(self) -> None:
        """The last row of the stream becomes the root of a draft tree; `extend(tokens, parents)` grows it."""
        self.tree, self.tree_start = TreeRows(self.h_k.device), self.length - 1

    def keep_tree(self, rows: list[int], close: bool = False) -> None:
        """Keep only the tree rows `rows` (counted from the root, ascending, the root first) in the stream and every
        cache, in that order; with `close`, they are a path, now an ordinary sequence."""
        start, index = self.tree_start, torch.tensor(rows, device=self.h_k.device) + self.tree_start
        self.tree.keep(rows)
        if close:
            self.tree = None

        def keep(stack: Stack, cursor: int) -> int:  # compact the rows `stack` has seen; its new cursor
            if cursor <= start:
                return cursor
            seen = sum(row < cursor - start for row in rows)  # rows is ascending: the first `seen` of them
            stack.cache.keep(start - stack.pruned, index[:seen] - stack.pruned)
            return start + seen

        self.h_k[:, start:start + len(rows)] = self.h_k[:, index]
        keep(self.lower, self.length)
        self.length = start + len(rows)
        keep(self.middle, self.target_pos)
        self.target_pos = keep(self.top, self.target_pos)
        if self.draft is not None:
            self.draft_pos = keep(self.draft, self.draft_pos)

    # --- helpers -----------------------------------------------------------------------------------------------
    def _rope(self, start: int, end: int) -> tuple[Tensor, Tensor]:
        """cos, sin [1, 1, end - start, D] of the stream rows [start, end): sequence index + rope delta, tree rows at
        root + depth; rows of a table built once up to the capacity (M-RoPE too: a decoded token has the same
        position on its three axes)."""
        if self.rope_table is None or end > self.rope_table[0].shape[2]:
            steps = torch.arange(self.rope_delta, max(end, self.h_k.shape[1]) + self.rope_delta, device=self.h_k.device)
            self.rope_table = self.model.rope(steps.expand(self.axes, 1, -1))
        cos, sin = self.rope_table
        if self.tree is None or end <= self.tree_start + 1:
            return cos[:, :, start:end], sin[:, :, start:end]
        rows = self.tree.depth[start - self.tree_start:end - self.tree_start] + self.tree_start  # tree: root + depth
        return cos[:, :, rows], sin[:, :, rows]

    def _store_h_k(self, h: Tensor) -> None:
        end = self.length + h.shape[1]
        if end > self.h_k.shape[1]:
            grown = self.h_k.new_empty(1, max(end, 2 * self.h_k.shape[1]), self.h_k.shape[2])
            grown[:, :self.length] = self.h_k[:, :self.length]
            self.h_k = grown
        self.h_k[:, self.length:end] = h
        self.length = end

    def _mask(self, stack: Stack, start: int, end: int) -> Tensor | None:
        """The attention mask of the stream rows [start, end) in `stack` [1, 1, q, S] (None: causal). Rows up to a
        tree's root are a sequence; tree rows see the cache before the root, their ancestors and themselves."""
        if self.tree is None or end <= self.tree_start + 1:
            return None
        if start < self.tree_start:
            raise ValueError(f"rows [{start}, {end}) straddle the root of a draft tree at {self.tree_start}")
        before = torch.ones(end - start, self.tree_start - stack.pruned, dtype=torch.bool, device=self.h_k.device)
        tree = self.tree.visible[start - self.tree_start:end - self.tree_start, :end - self.tree_start]
        return torch.cat([before, tree], dim=1)[None, None]  # [1, 1, q, S]

    def _consume(self, stacks: list[Stack], start: int) -> Tensor:
        """Run the h_K rows [start, length) through `stacks` in turn, each appending to its cache."""
        rope = self._rope(start, self.length)
        h = self.h_k[:, start:self.length]
        for stack in stacks:
            h = self._run(stack, h, rope, self._mask(stack, start, self.length))
        return h

    def _run(self, stack: Stack, h: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor | None = None) -> Tensor:
        """Run `stack` on h [1, q, C] under `mask` (None: causal), appending to its cache. Compiled, a one-token
        causal step has static shapes: the token goes to a slot given as a tensor and every layer attends to the
        whole preallocated cache under a mask of the slots written; nothing in the graph changes from one token to
        the next."""
        cache = stack.cache
        if self.compiled is None or h.shape[1] != 1 or mask is not None:
            return run_layers(stack.layers, h, rope, cache, mask)[0]
        cache.reserve(cache.length + 1)
        slot = torch.tensor([cache.length], device=h.device)  # [1]
        written = (torch.arange(cache.capacity, device=h.device) <= slot)[None, None, None]  # [1, 1, 1, S]
        try:
            h, _ = self.compiled(stack.layers, h, rope, SlotWriter(cache, slot), written)
        except Exception as e:  # e.g. inductor without a C++ compiler: say so once, decode eagerly
            print(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                  f"decoding without it", file=sys.stderr)
            _COMPILED["run_layers"] = self.compiled = None
            return run_layers(stack.layers, h, rope, cache)[0]
        cache.advance(1)
        return h

    def _twig_head(self, h: Tensor) -> Tensor:
        return self.twig.lm_head(self.twig.norm(h)).float()

    def _target_head(self, h: Tensor) -> Tensor:
        return self.model.logits(h).float()


_COMPILED: dict[str, Callable | None] = {}


def compiled_run_layers() -> Callable | None:
    """`run_layers` through torch.compile (inductor), made once per process; None once it has failed."""
    if "run_layers" not in _COMPILED:
        _COMPILED["run_layers"] = torch.compile(run_layers, dynamic=False)
    return _COMPILED["run_layers"]
