"""Draft trees for tree-based self-speculative decoding: their shape, the attention mask of their rows, and the
nodes the twig grows.

A step grows a tree from the last accepted token (the root, node 0), EAGLE-2 style: the twig's top-k children of
the most probable nodes, depth by depth (a node's value is its cumulative draft probability), then keeps the best
`nodes` of them. The target verifies them all in one forward in which each node attends to the cache and to its
ancestors (`TreeRows.visible`), at position root + depth.

Greedy keeps nodes by their own value (EAGLE-2). Sampling keeps the exactness of speculative sampling: a node's
children are drawn WITHOUT replacement from the twig's distribution, in order, and whether a node is kept depends
on its parent's value only, never on its own draw, so the children kept at a node are the first ones drawn
(`accept_tree` needs exactly that).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor


class TreeRows:
    """The rows of a tree in a token stream, from its root on: who sees whom and at which depth.

    Row 0 is the root; a row's parent always comes before it. `visible` [n, n] bool: row i attends to row j
    (j is i or one of its ancestors); `depth` [n]: position offset from the root.
    """

    def __init__(self, device: torch.device):
        self.visible = torch.ones(1, 1, dtype=torch.bool, device=device)  # [n, n]
        self.depth = torch.zeros(1, dtype=torch.long, device=device)  # [n]

    def __len__(self) -> int:
        return self.depth.shape[0]

    def append(self, parents: list[int]) -> None:
        """New rows, children of the rows `parents` (rows already there)."""
        n, m = len(self), len(parents)
        index = torch.tensor(parents, dtype=torch.long, device=self.depth.device)
        visible = torch.zeros(n + m, n + m, dtype=torch.bool, device=self.depth.device)
        visible[:n, :n] = self.visible
        visible[n:, :n] = self.visible[index]  # a child sees what its parent sees...
        visible[n:, n:] = torch.eye(m, dtype=torch.bool, device=self.depth.device)  # ...and itself
        self.visible, self.depth = visible, torch.cat([self.depth, self.depth[index] + 1])

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (ascending, the root and every kept row's ancestors among them), in that order."""
        index = torch.tensor(rows, dtype=torch.long, device=self.depth.device)
        self.visible, self.depth = self.visible[index][:, index], self.depth[index]


@dataclass
class DraftTree:
    """The nodes one step drafted. Node 0 is the root (the last accepted token); `children[i]` in the order they
    were drawn; `q[i]` the twig's distribution at an expanded node [V] (what its children were drawn from)."""

    tokens: list[int] = field(default_factory=lambda: [-1])
    parents: list[int] = field(default_factory=lambda: [-1])
    values: list[float] = field(default_factory=lambda: [1.0])  # cumulative draft probability of the path
    children: list[list[int]] = field(default_factory=lambda: [[]])
    q: dict[int, Tensor] = field(default_factory=dict)

    def add(self, parent: int, token: int, probability: float) -> int:
        node = len(self.tokens)
        self.tokens.append(token)
        self.parents.append(parent)
        self.values.append(self.values[parent] * probability)
        self.children.append([])
        self.children[parent].append(node)
        return node

    def best(self, candidates: list[int], n: int, by_parent: bool = False) -> list[int]:
        """The n best candidates by value (or by their parent's value), ties to the earlier node, in node order. A
        child's value never exceeds its parent's, so the best nodes of a tree are a tree."""
        score = (lambda i: self.values[self.parents[i]]) if by_parent else (lambda i: self.values[i])  # noqa: E731
        return sorted(sorted(candidates, key=lambda i: (-score(i), i))[:n])

    def child_distributions(self, node: int, kept: list[int], greedy: bool) -> Tensor:
        """What each kept child of `node` was drawn from, given the children drawn before it [c, V]: one-hot when
        greedy (the top-k are certain); otherwise the twig's q without the earlier children, renormalised."""
        q = self.q[node]
        tokens = torch.tensor([self.tokens[c] for c in kept], dtype=torch.long, device=q.device)
        if greedy:
            return F.one_hot(tokens, q.shape[-1]).float()
        earlier = F.one_hot(tokens, q.shape[-1]).float().cumsum(0).roll(1, 0)  # [c, V]: drawn before child i
        earlier[0] = 0
        qs = q * (1 - earlier)
        return qs / qs.sum(-1, keepdim=True)


def draw_children(q: Tensor, k: int, rng: torch.Generator | None, greedy: bool) -> tuple[Tensor, Tensor]:
    """q [f, V] -> up to k children per row [f, k] and their probabilities under q [f, k]: the top-k when greedy,
    else k draws without replacement in the order drawn (Gumbel-top-k); a child of probability 0 is no child."""
    if greedy:
        probabilities, tokens = q.topk(k, dim=-1)
        return tokens, probabilities
    u = torch.rand(q.shape, generator=rng, device=q.device).clamp_min(torch.finfo(q.dtype).tiny)
    keys = q.log() - (-u.log()).log()  # log q + Gumbel noise; -inf where q = 0
    tokens = keys.topk(k, dim=-1).indices  # [f, k], largest key first: the order of sequential draws
    return tokens, q.gather(-1, tokens)
