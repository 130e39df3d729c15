"""Which visual tokens survive prefill: twig-guided token pruning (TTP), FastV, random, or none.

Layers [0, K) see all V visual tokens, layers [K, F) the `rank` best, layers [F, N) none ("final wipe").
R, the budget users give (`-R`, `attention_rank`), is the AVERAGE number of visual tokens per base layer:
(K*V + (F-K)*rank) / N ~= R, i.e. rank = ceil((N*R - K*V) / (F-K)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

METHODS = ("none", "twig", "fastv", "random")


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
        raise PruningError(
            f"R={R:g} visual tokens per layer is out of range: with K={K}, final wipe at F={F}, N={N} layers and "
            f"V={V} visual tokens, R must be in ({low:g}, {high:g}] (layers [0,K) always see all {V}, layers "
            f"[F,N) none); to keep every token use pruning 'none' instead of a large R")
    return math.ceil((N * R - K * V) / (F - K))


@dataclass(frozen=True)
class PruningPlan:
    """What prefill does to the visual tokens of one prompt."""

    method: str = "none"  # none | twig | fastv | random
    R: float | None = None
    K: int = 2  # layers [0, K) see everything (also the twig's root)
    F: int | None = None  # final-wipe layer; None = three quarters of the depth
    seed: int = 0  # for method 'random'

    def __post_init__(self):
        if self.method not in METHODS:
            raise PruningError(f"pruning must be one of {METHODS}, not '{self.method}'")
        if self.method != "none" and self.R is None:
            raise PruningError(f"pruning '{self.method}' needs R, the average visual tokens kept per layer")

    @property
    def active(self) -> bool:
        return self.method != "none"

    def wipe_layer(self, num_layers: int) -> int:
        return self.F if self.F is not None else default_finalwipe_layer(num_layers)

    def rank(self, num_layers: int, num_visual: int) -> int:
        return keep_count(self.R, num_layers, self.K, self.wipe_layer(num_layers), num_visual)

    def visual_tokens_per_group(self, num_layers: int, num_visual: int, has_twig: bool) -> dict[str, float]:
        """Visual tokens seen by each layer group, and the average over the base's layers (the achieved R)."""
        K, N = self.K, num_layers
        if not self.active or num_visual == 0:
            groups = {f"layers_0_{N}": num_visual}
            average = float(num_visual)
        else:
            F, rank = self.wipe_layer(N), self.rank(N, num_visual)
            groups = {f"layers_0_{K}": num_visual, f"layers_{K}_{F}": rank, f"layers_{F}_{N}": 0}
            average = (K * num_visual + (F - K) * rank) / N
        if has_twig:
            groups["twig"] = num_visual
        return {**groups, "average": average}


def visual_scores(attention: Tensor, span: tuple[int, int]) -> Tensor:
    """Last-query attention [B=1, H, S] -> one score per visual token [V], averaged over heads."""
    start, end = span
    return attention[0, :, start:end].mean(dim=0)


def select_visual_tokens(plan: PruningPlan, scores: Tensor | None, num_visual: int, rank: int,
                         device: torch.device) -> Tensor:
    """Indices (into the image's V tokens, ascending) of the `rank` tokens to keep."""
    if plan.method == "random":
        g = torch.Generator().manual_seed(plan.seed)
        chosen = torch.randperm(num_visual, generator=g)[:rank].to(device)
    else:
        chosen = scores.topk(rank).indices
    return chosen.sort().values
