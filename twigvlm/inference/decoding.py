"""Decoding strategies over the engine: autoregressive, self-speculative (a chain of drafts) and tree-speculative
(a tree of drafts, `twigvlm.inference.tree`).

Both start from the prefill's target logits and return the new tokens. `emit(tokens, from_draft)` is called as
tokens become final (streaming): `from_draft[i]` tells whether token i was drafted by the twig and accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from twigvlm.inference.engine import Engine
from twigvlm.inference.sampling import Sampling, accept_drafts, accept_tree, draw, next_token, probabilities
from twigvlm.inference.tree import DraftTree, draw_children

Emit = Callable[[list[int], list[bool]], None]


@dataclass(frozen=True)
class DecodeConfig:
    max_new_tokens: int
    stop_ids: frozenset[int] = frozenset()  # tokens that end the answer (EOS; Qwen: <|im_end|>, <|endoftext|>)
    sampling: Sampling = Sampling()
    num_speculations: int = 5  # most tokens drafted per step
    draft_threshold: float = 0.6  # stop drafting after a token the twig itself gives less than this
    tree_depth: int = 6  # tree_speculative: most drafted tokens on a path,
    tree_top_k: int = 4  # children per expanded node and nodes expanded per depth,
    tree_nodes: int = 24  # and drafted nodes verified per step


@dataclass
class DecodeStats:
    drafted: int = 0
    accepted: int = 0
    verify_steps: int = 0  # target forwards after prefill in self-speculative decoding
    tokens_from_verify: int = 0  # tokens those forwards produced (accepted drafts + the target's own)

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None

    @property
    def mean_accepted_length(self) -> float | None:
        """Tokens produced per verify forward (accepted drafts plus the target's token)."""
        return self.tokens_from_verify / self.verify_steps if self.verify_steps else None


def autoregressive(engine: Engine, first_logits: Tensor, cfg: DecodeConfig, rng: torch.Generator | None,
                   emit: Emit) -> tuple[list[int], DecodeStats]:
    """One target forward per token."""
    tokens: list[int] = []
    logits = first_logits
    while True:
        token = int(next_token(logits[None], cfg.sampling, rng))
        tokens.append(token)
        emit([token], [False])
        if token in cfg.stop_ids or len(tokens) >= cfg.max_new_tokens:
            return tokens, DecodeStats()
        engine.extend(torch.tensor([token], device=logits.device))
        logits = engine.target_logits()[-1]


def self_speculative(engine: Engine, first_logits: Tensor, cfg: DecodeConfig, rng: torch.Generator | None,
                     emit: Emit) -> tuple[list[int], DecodeStats]:
    """The twig drafts up to `num_speculations` tokens; the target checks them all in ONE forward."""
    if engine.draft is None:
        raise ValueError("self-speculative decoding needs a twig: load one (twig=...) or use 'autoregressive'")
    stats = DecodeStats()
    device = first_logits.device
    tokens = [int(next_token(first_logits[None], cfg.sampling, rng))]
    emit(tokens[:], [False])
    while tokens[-1] not in cfg.stop_ids and len(tokens) < cfg.max_new_tokens:
        start = engine.length
        engine.extend(torch.tensor(tokens[-1:], device=device))  # the last token is not in any cache yet
        room = cfg.max_new_tokens - len(tokens) - 1  # the verify step always adds one token of its own
        drafts, q = draft_tokens(engine, min(cfg.num_speculations, room), cfg, rng)
        p = probabilities(engine.target_logits(), cfg.sampling)  # [n+1, V]: after the last token and each draft
        m, token = accept_drafts(torch.tensor(drafts, device=device, dtype=torch.long), q, p, rng, cfg.sampling.greedy)
        engine.rollback(start + 1 + m)
        stats.drafted, stats.accepted = stats.drafted + len(drafts), stats.accepted + m
        stats.verify_steps += 1
        new, from_draft = drafts[:m], [True] * m
        if not (m and drafts[m - 1] in cfg.stop_ids):  # an accepted EOS ends the answer
            new, from_draft = new + [token], from_draft + [False]
        stats.tokens_from_verify += len(new)
        tokens += new
        emit(new, from_draft)
    return tokens, stats


def draft_tokens(engine: Engine, limit: int, cfg: DecodeConfig,
                 rng: torch.Generator | None) -> tuple[list[int], Tensor]:
    """Draft up to `limit` tokens; stop early at EOS or when the twig's confidence falls under the threshold.
    Returns the drafts and the distributions q [n, V] they were drawn from. Every draft is fed through the
    lower stack as it is made, so the verifier finds its layer-K hidden state in the stream."""
    drafts: list[int] = []
    qs: list[Tensor] = []
    for _ in range(limit):
        logits = engine.draft_logits()  # [1, V]
        q = probabilities(logits, cfg.sampling)
        token = int(next_token(logits, cfg.sampling, rng)) if cfg.sampling.greedy else int(draw(q, rng))
        confidence = float((logits.softmax(-1) if cfg.sampling.greedy else q)[0, token])
        drafts.append(token)
        qs.append(q[0])
        engine.extend(torch.tensor([token], device=logits.device))
        if token in cfg.stop_ids or confidence < cfg.draft_threshold:
            break
    vocab = engine.model.config.vocab_size
    return drafts, torch.stack(qs) if qs else torch.zeros(0, vocab, device=engine.h_k.device)



def tree_speculative(engine: Engine, first_logits: Tensor, cfg: DecodeConfig, rng: torch.Generator | None,
                     emit: Emit) -> tuple[list[int], DecodeStats]:
    """The twig grows a tree of drafts; the target verifies all its nodes in ONE forward; the path it accepts
    (`accept_tree` node by node from the root) is kept in every cache, the rest forgotten."""
    if engine.draft is None:
        raise ValueError("tree-speculative decoding needs a twig: load one (twig=...) or use 'autoregressive'")
    stats, greedy = DecodeStats(), cfg.sampling.greedy
    device = first_logits.device
    tokens = [int(next_token(first_logits[None], cfg.sampling, rng))]
    emit(tokens[:], [False])
    while tokens[-1] not in cfg.stop_ids and len(tokens) < cfg.max_new_tokens:
        engine.extend(torch.tensor(tokens[-1:], device=device))  # the root: the last token, in no cache yet
        engine.open_tree()
        room = cfg.max_new_tokens - len(tokens) - 1  # the verify step always adds one token of its own
        tree, rows = grow_tree(engine, min(cfg.tree_depth, room), cfg, rng)
        p = probabilities(engine.target_logits(), cfg.sampling)  # [rows, V]: after the root and each node
        node, path = 0, []
        while True:
            kept = [c for c in tree.children[node] if c in rows]
            qs = tree.child_distributions(node, kept, greedy) if kept else p.new_zeros(0, p.shape[-1])
            children = torch.tensor([tree.tokens[c] for c in kept], dtype=torch.long, device=device)
            i, token = accept_tree(children, qs, p[rows[node]], rng, greedy)
            if i is None:
                break
            node = kept[i]
            path.append(node)
            if token in cfg.stop_ids:  # an accepted EOS ends the answer
                token = None
                break
        engine.keep_tree([0] + [rows[n] for n in path], close=True)
        stats.drafted, stats.accepted = stats.drafted + len(rows) - 1, stats.accepted + len(path)
        stats.verify_steps += 1
        new = [tree.tokens[n] for n in path] + ([] if token is None else [token])
        stats.tokens_from_verify += len(new)
        tokens += new
        emit(new, [True] * len(path) + [False] * (token is not None))
    return tokens, stats


def grow_tree(engine: Engine, depth: int, cfg: DecodeConfig,
              rng: torch.Generator | None) -> tuple[DraftTree, dict[int, int]]:
    """Grow a draft tree from the root (the stream's last row), EAGLE-2 style: expand the `tree_top_k` most probable
    nodes of each depth, `tree_top_k` children each; then keep the best `tree_nodes` in the stream (fed through the
    lower stack, parents before children). Returns the tree and the row of each kept node (the root's is 0)."""
    greedy = cfg.sampling.greedy
    tree, rows = DraftTree(), {0: 0}  # rows: the nodes in the stream so far
    frontier = [0]
    for d in range(depth):
        logits = engine.draft_logits(len(frontier))  # [f, V]
        q = logits.softmax(-1) if greedy else probabilities(logits, cfg.sampling)  # greedy: values need real odds
        children, chances = draw_children(q, cfg.tree_top_k, rng, greedy)  # [f, k] each
        new = []
        for node, q_node, kids, ps in zip(frontier, q, children.tolist(), chances.tolist()):
            tree.q[node] = q_node
            new += [tree.add(node, token, chance) for token, chance in zip(kids, ps) if chance > 0]
        frontier = tree.best([n for n in new if tree.tokens[n] not in cfg.stop_ids], cfg.tree_top_k)
        if d == depth - 1 or not frontier:
            break
        _feed(engine, tree, rows, frontier)
    kept = tree.best(list(range(1, len(tree.tokens))), cfg.tree_nodes, by_parent=not greedy)
    fed = [n for n in kept if n in rows]  # node order is row order
    engine.keep_tree([0] + [rows[n] for n in fed])
    rows = {n: row for row, n in enumerate([0] + fed)}
    _feed(engine, tree, rows, [n for n in kept if n not in rows])
    return tree, rows


def _feed(engine: Engine, tree: DraftTree, rows: dict[int, int], nodes: list[int]) -> None:
    """Put `nodes` (their parents already there) into the stream, through the lower stack, as the next rows."""
    if not nodes:
        return
    parents = [rows[tree.parents[n]] for n in nodes]
    for n in nodes:
        rows[n] = len(rows)
    engine.extend(torch.tensor([tree.tokens[n] for n in nodes], device=engine.h_k.device), parents)
