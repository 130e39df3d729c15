"""Which visual tokens survive prefill — twig-guided token pruning (TTP), FastV, random, or none — and the one
pruned forward that inference and training share.

Layers [0, K) see all V visual tokens, layers [K, F) the `rank` best, layers [F, N) none ("final wipe").
R, the budget users give (`-R`, `attention_rank`), is the AVERAGE number of visual tokens per base layer:
(K*V + (F-K)*rank) / N ~= R, i.e. rank = ceil((N*R - K*V) / (F-K)). `retain_ratio` gives R as a share of each
image's V (R = ratio x V), so one setting means the same pruning for any image size and any model.
Every kept token keeps its ORIGINAL position (1-D or M-RoPE's 3-D).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from twigvlm.inference.options import METHODS
from twigvlm.model.family import MultimodalInputs, VisionLanguageModel


class PruningError(ValueError):
    """An impossible pruning request; the message names the valid range."""


def default_finalwipe_layer(num_layers: int) -> int:
    """The public code wipes at layer 24 of 32: three quarters of the depth."""
    return num_layers * 3 // 4


def keep_count(R: float, N: int, K: int, F: int, V: int) -> int:
    """Visual tokens kept in layers [K, F) so that the per-layer average over all N layers is about R."""
    if not 0 < K < F <= N:
        raise PruningError(f"need 0 < K < finalwipe_layer F <= N, got K={K}, F={F}, N={N}")
    low, high = K * V / N, F * V / N
    if not low < R <= high:
        fix = ("to keep every token use -R all (pruning 'none') instead" if R > high else
               f"a smaller budget needs a twig grown at a smaller K (layers [0,K) alone average {low:g})")
        raise PruningError(
            f"R={R:g} visual tokens per layer is out of range: with K={K}, final wipe at F={F}, N={N} layers and "
            f"V={V} visual tokens, R must be in ({low:g}, {high:g}] (layers [0,K) always see all {V}, layers "
            f"[F,N) none); {fix}")
    return math.ceil((N * R - K * V) / (F - K) - 1e-9)  # an R that is an achieved average keeps exactly its rank


@dataclass(frozen=True)
class LayerGroups:
    """Where the visual tokens of a pruned prompt go: layers [0, K) see all V, [K, F) `rank` of them, [F, N) none."""

    N: int
    K: int
    F: int

    def __post_init__(self):
        if not 0 < self.K < self.F <= self.N:
            raise PruningError(f"need 0 < K < finalwipe_layer F <= N, got K={self.K}, F={self.F}, N={self.N}; "
                               f"the final wipe must lie above the twig's layer K and within the model's {self.N} "
                               f"layers")

    def rank(self, R: float, V: int) -> int:
        return keep_count(R, self.N, self.K, self.F, V)

    def average(self, rank: int, V: int) -> float:
        """The visual tokens per base layer that keeping `rank` in [K, F) achieves (the R that keeps `rank`)."""
        return (self.K * V + (self.F - self.K) * rank) / self.N

    def report(self, rank: int, V: int, has_twig: bool) -> dict[str, float]:
        """Visual tokens seen by each layer group, and their average over the base's layers (the achieved R)."""
        groups = {f"layers_0_{self.K}": V, f"layers_{self.K}_{self.F}": rank, f"layers_{self.F}_{self.N}": 0}
        if has_twig:
            groups["twig"] = V
        return {**groups, "average": self.average(rank, V)}


def unpruned_report(N: int, V: int, has_twig: bool) -> dict[str, float]:
    groups: dict[str, float] = {f"layers_0_{N}": V}
    if has_twig:
        groups["twig"] = V
    return {**groups, "average": float(V)}


@dataclass(frozen=True)
class PruningPlan:
    """What prefill does to the visual tokens of one prompt. K comes from the twig (or FastV's scoring layer + 1)
    and is the engine's to give: the plan holds only what the user chose."""

    method: str = "none"  # none | twig | fastv | random
    R: float | None = None  # average visual tokens per layer...
    retain_ratio: float | None = None  # ... or that average as a share of the prompt's visual tokens
    F: int | None = None  # final-wipe layer; None = three quarters of the depth
    seed: int = 0  # for method 'random'

    def __post_init__(self):
        if self.method not in METHODS:
            raise PruningError(f"pruning must be one of {METHODS}, not '{self.method}'")
        if self.R is not None and self.retain_ratio is not None:
            raise PruningError("give either R (attention_rank) or retain_ratio, not both")
        if self.method != "none" and self.R is None and self.retain_ratio is None:
            raise PruningError(f"pruning '{self.method}' needs R, the average visual tokens kept per layer "
                               f"(attention_rank, -R), or retain_ratio, that average as a share of the image's tokens")
        if self.retain_ratio is not None and not 0 < self.retain_ratio <= 1:
            raise PruningError(f"retain_ratio is a share of the visual tokens in (0, 1], got {self.retain_ratio:g} "
                               f"(0.111 prunes 88.9%)")

    @property
    def active(self) -> bool:
        return self.method != "none"

    def groups(self, N: int, K: int) -> LayerGroups:
        return LayerGroups(N, K, self.F if self.F is not None else default_finalwipe_layer(N))

    def rank(self, groups: LayerGroups, V: int) -> int:
        """Visual tokens kept in layers [K, F) for a prompt with V of them."""
        if self.retain_ratio is None:
            return groups.rank(self.R, V)
        low, high = groups.K / groups.N, groups.F / groups.N
        if not low < self.retain_ratio <= high:
            raise PruningError(f"retain_ratio={self.retain_ratio:g} is out of range: with K={groups.K}, final wipe at "
                               f"F={groups.F} of N={groups.N} layers it must be in ({low:g}, {high:g}] (layers [0,K) "
                               f"always see every visual token, layers [F,N) none)")
        return groups.rank(self.retain_ratio * V, V)


# --- choosing the tokens -----------------------------------------------------------------------------------------
def visual_scores(attention: Tensor, visual: Tensor) -> Tensor:
    """Last-query attention [1, H, S] and the visual rows visual [S] (bool) -> one score per visual token [V],
    the head mean (what TTP and FastV rank by)."""
    return attention[0][:, visual].mean(dim=0)


def choose_visual_tokens(scores: Tensor | None, num_visual: int, rank: int, seed: int = 0) -> Tensor:
    """Indices (into the prompt's V visual tokens, ascending) of the `rank` to keep: the top scores, or `rank`
    random ones (from `seed`) when there are no scores."""
    if scores is None:
        chosen = torch.randperm(num_visual, generator=torch.Generator().manual_seed(seed))[:rank]
    else:
        chosen = scores.topk(rank).indices
    return chosen.sort().values


def kept_rows(inputs: MultimodalInputs, kept: Sequence[Tensor | None]) -> tuple[Tensor, Tensor]:
    """The rows each layer group sees, over the batch's rows [B, L] (bool): layers [K, F) text plus the kept visual
    tokens kept[b] (indices into sample b's visual tokens; None: sample b is not pruned, every row), layers [F, N)
    text only for the pruned samples. Padding is never kept."""
    visual = inputs.visual_mask()  # [B, L]
    middle, top = inputs.attention_mask.clone(), inputs.attention_mask.clone()
    for b, chosen in enumerate(kept):
        if chosen is None:
            continue
        rows = visual[b].nonzero().flatten()  # [V_b]: the visual rows of sample b, in order
        middle[b, rows] = False
        middle[b, rows[chosen]] = True
        top[b, rows] = False
    return middle, top


# --- the pruned forward ------------------------------------------------------------------------------------------
def kept_layout(keep: Tensor) -> tuple[Tensor, Tensor]:
    """keep [B, L] bool -> the kept rows' indices [B, L'] (ascending, right-padded) and their validity [B, L']."""
    counts = keep.sum(dim=1)  # [B]
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :int(counts.max())]  # kept first
    valid = torch.arange(order.shape[1], device=keep.device)[None] < counts[:, None]
    return order, valid


def restrict(inputs: MultimodalInputs, hidden: Tensor, current: Tensor | None,
             keep: Tensor) -> tuple[MultimodalInputs, Tensor, Tensor]:
    """Keep the rows `keep` [B, L] (original rows, a subset of `current`; None: every row) of hidden [B, L_cur, C],
    laid out as `current`; -> (their inputs: mask and ORIGINAL position ids, their hidden [B, L', C], their rows)."""
    order, valid = kept_layout(keep)  # [B, L']
    row_in_current = order if current is None else (current.cumsum(dim=1) - 1).gather(1, order)  # [B, L']
    h = hidden.gather(1, row_in_current[..., None].expand(-1, -1, hidden.shape[-1]))  # [B, L', C]
    axes = inputs.position_ids.shape[0]
    positions = inputs.position_ids.gather(2, row_in_current.expand(axes, -1, -1))  # [A, B, L']
    return dataclasses.replace(inputs, attention_mask=valid, position_ids=positions), h, order


def pruned_forward(model: VisionLanguageModel, inputs: MultimodalInputs, h_k: Tensor, groups: LayerGroups,
                   middle: Tensor | None, top: Tensor | None, caches: tuple = (None, None)
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """Base layers [K, N) from h_K [B, L, C] (the output of layers [0, K) on every row): layers [K, F) on the rows
    `middle` [B, L], layers [F, N) on the rows `top` (None: every row), each row at its original position; with
    caches (inference: a batch of one), each group appends its rows to its own. -> hidden [B, L', C] of the rows
    that reach the top, their original rows [B, L'] and validity [B, L']."""
    K, F = groups.K, groups.F
    rows = torch.arange(h_k.shape[1], device=h_k.device).expand(h_k.shape[0], -1)
    h, current = h_k, None
    for keep, layers, cache in ((middle, model.layers[K:F], caches[0]), (top, model.layers[F:], caches[1])):
        if keep is not None:
            inputs, h, rows = restrict(inputs, h, current, keep)
            current = keep
        h = model.hidden_states(inputs, layers, hidden=h, cache=cache)
    return h, rows, inputs.attention_mask
