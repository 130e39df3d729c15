"""Turning logits into tokens, and the one rule that accepts or rejects drafted tokens.

Greedy decoding is sampling from one-hot distributions. Seen that way, speculative decoding needs a single
acceptance rule: accept draft d with probability min(1, p(d)/q(d)), on rejection draw from norm(max(0, p - q)).
With one-hot p and q this accepts exactly the drafts equal to the target's argmax and then emits the argmax, so
the greedy output equals greedy target decoding; with real distributions the output is distributed as the
target's (Leviathan et al. 2023; Chen et al. 2023). A draft tree offers several children at a node: `accept_tree`
tries them in turn, each against what the rejections before it left of the target (SpecInfer; Jeon et al. 2024).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Sampling:
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0

    def __post_init__(self):
        if self.do_sample and self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def probabilities(logits: Tensor, sampling: Sampling) -> Tensor:
    """logits [n, V] -> the distribution tokens are drawn from [n, V] (float32); one-hot argmax when greedy."""
    if sampling.greedy:
        return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).float()
    logits = logits.float() / sampling.temperature
    if sampling.top_k > 0:
        kth = logits.topk(min(sampling.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # drop a token once the more likely ones already cover top_p (the top token always stays)
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= sampling.top_p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return logits.softmax(dim=-1)


def draw(probs: Tensor, rng: torch.Generator | None, greedy: bool = False) -> Tensor:
    """One token per row of probs [n, V] -> [n]. Greedy distributions are one-hot: their argmax is the draw, and no
    random number is used (greedy decoding never touches any generator, torch's global one included)."""
    if greedy:
        return probs.argmax(dim=-1)
    return torch.multinomial(probs, 1, generator=rng).squeeze(-1)


def uniform(n: int, rng: torch.Generator | None, greedy: bool, device: torch.device) -> Tensor:
    """n numbers u in [0, 1) for acceptance tests u < p/q; 0 when greedy (one-hot p: accepted iff p = 1)."""
    if greedy:
        return torch.zeros(n, device=device)
    return torch.rand(n, generator=rng, device=device)


def residual(p: Tensor, q: Tensor) -> Tensor:
    """Where to draw from after a rejection: norm(max(0, p - q)) over the last dimension."""
    r = (p - q).clamp(min=0)
    return r / r.sum(dim=-1, keepdim=True)


def next_token(logits: Tensor, sampling: Sampling, rng: torch.Generator | None) -> Tensor:
    """logits [n, V] -> tokens [n]; argmax directly when greedy (no distribution needed)."""
    if sampling.greedy:
        return logits.argmax(dim=-1)
    return draw(probabilities(logits, sampling), rng)


def accept_drafts(drafts: Tensor, q: Tensor, p: Tensor, rng: torch.Generator | None,
                  greedy: bool = False) -> tuple[int, int]:
    """Speculative acceptance. drafts [n] drawn from q [n, V]; p [n+1, V] the target's distributions at the
    same positions plus one more. Returns (number of drafts accepted m, the token that follows them)."""
    n = drafts.shape[0]
    rows = torch.arange(n, device=drafts.device)
    p_d, q_d = p[rows, drafts], q[rows, drafts]  # [n]
    accepted = (uniform(n, rng, greedy, drafts.device) * q_d < p_d).long()  # u < p/q, without dividing by a zero q
    m = int(accepted.cumprod(dim=0).sum())
    if m == n:
        return m, int(draw(p[n:n + 1], rng, greedy))
    return m, int(draw(residual(p[m], q[m])[None], rng, greedy))


def accept_tree(children: Tensor, qs: Tensor, p: Tensor, rng: torch.Generator | None,
                greedy: bool = False) -> tuple[int | None, int]:
    """Multi-candidate speculative acceptance at one node of a draft tree. children [c] drafted in order, child i
    drawn from qs[i] [V] (its distribution given the children drawn before it); p [V] the target's distribution at
    the node. Child i is accepted with probability min(1, p(x)/q_i(x)); on a rejection p <- norm(max(0, p - q_i))
    and the next child is tried. Returns (the accepted child's index, its token), or (None, a token drawn from what
    is left of p) when every child is rejected; the token is distributed as p."""
    c = children.shape[0]
    u = uniform(c, rng, greedy, p.device)
    for i, token in enumerate(children.tolist()):
        if u[i] * qs[i, token] < p[token]:  # u < p/q, without dividing by a zero q
            return i, token
        p = residual(p, qs[i])
    return None, int(draw(p[None], rng, greedy))
