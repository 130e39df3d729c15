"""A preallocated KV cache for one stack of consecutive layers.

TwigVLM splits the decoder into stacks whose caches hold different tokens: layers [0, K) and the twig hold every
token, layers [K, F) only the kept visual tokens, layers [F, N) none. Each stack therefore has its own cache and
length; rolling back after a rejected draft is setting that length back, O(1), nothing copied or rebuilt.
"""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: torch.device, batch: int = 1):
        shape = (batch, num_kv_heads, capacity, head_dim)
        # zeros: a static step attends to every slot, the unwritten ones masked (garbage could be NaN, and NaN x 0 is NaN)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]  # [B, Hkv, capacity, D]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.length = 0
        self.slots: Tensor | None = None  # [Q] where the current forward's tokens go, made by its first layer

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2] if self.k else 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v [B, Hkv, Q, D] after `length` for `layer`; return views of all keys/values [B, Hkv, S, D]."""
        end = self.length + k.shape[2]
        self.reserve(end)
        if self.slots is None:
            self.slots = torch.arange(self.length, end, device=k.device)
        self.k[layer].index_copy_(2, self.slots, k)
        self.v[layer].index_copy_(2, self.slots, v)
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, num_tokens: int) -> None:
        self.length += num_tokens
        self.slots = None

    def truncate(self, length: int) -> None:
        """Forget everything after the first `length` tokens (rollback after a rejected draft)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} tokens to {length}")
        self.length = length

    def keep(self, start: int, rows: Tensor) -> None:
        """Keep the tokens at `rows` (ascending, >= start) at start, start + 1, ...; forget everything after them
        (a draft tree's kept nodes, or its accepted path)."""
        end = start + len(rows)
        self.reserve(end)  # only a stack of no layers, never written, can be short of room here
        for t in (*self.k, *self.v):  # [B, Hkv, capacity, D]
            t[:, :, start:end] = t[:, :, rows]
        self.length = end

    def reserve(self, needed: int) -> None:
        """Room for `needed` tokens. Rare: only when a caller under-estimated the capacity; doubling keeps it
        amortised O(1)."""
        if needed <= self.capacity:
            return
        extra = max(needed, 2 * self.capacity) - self.capacity
        pad = lambda t: torch.cat([t, t.new_zeros(*t.shape[:2], extra, t.shape[3])], dim=2)  # noqa: E731
        self.k, self.v = [pad(t) for t in self.k], [pad(t) for t in self.v]


class SlotWriter:
    """A KVStore for ONE new token with static shapes, what `torch.compile` wants of a decode step: its keys and
    values go to `slot` [1] of `cache` (a tensor, so its value is no part of the compiled graph) and every layer
    attends to the WHOLE preallocated cache, under a mask of the slots written (run_layers' `mask`). The caller
    reserves the room and advances the cache."""

    def __init__(self, cache: KVCache, slot: Tensor):
        self.cache, self.slot, self.length = cache, slot, cache.length

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        self.cache.k[layer].index_copy_(2, self.slot, k)
        self.cache.v[layer].index_copy_(2, self.slot, v)
        return self.cache.k[layer], self.cache.v[layer]

    def advance(self, num_tokens: int) -> None:
        pass
