"""Decoding strategies over the engine: autoregressive and self-speculative.

Both start from the prefill's target logits and return the new tokens. `emit(tokens, from_draft)` is called as
tokens become final (streaming): `from_draft[i]` tells whether token i was drafted by the twig and accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from twigvlm.inference.engine import Engine
from twigvlm.inference.sampling import Sampling, accept_drafts, draw, next_token, probabilities

Emit = Callable[[list[int], list[bool]], None]


@dataclass(frozen=True)
class DecodeConfig:
    max_new_tokens: int
    stop_ids: frozenset[int] = frozenset()  # tokens that end the answer (EOS; Qwen: <|im_end|>, <|endoftext|>)
    sampling: Sampling = Sampling()
    num_speculations: int = 5  # most tokens drafted per step
    draft_threshold: float = 0.6  # stop drafting after a token the twig itself gives less than this


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
        logits = engine.draft_logits()[None]  # [1, V]
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

