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
        shape = (num_layers, batch, num_kv_heads, capacity, head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)  # [L, B, Hkv, capacity, D]
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v [B, Hkv, Q, D] after `length` for `layer`; return views of all keys/values [B, Hkv, S, D]."""
        end = self.length + k.shape[2]
        if end > self.capacity:
            self._grow(end)
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, num_tokens: int) -> None:
        self.length += num_tokens

    def truncate(self, length: int) -> None:
        """Forget everything after the first `length` tokens (rollback after a rejected draft)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} tokens to {length}")
        self.length = length

    def keep(self, start: int, rows: Tensor) -> None:
        """Keep the tokens at `rows` (ascending, >= start) at start, start + 1, ...; forget everything after them
        (a draft tree's kept nodes, or its accepted path)."""
        end = start + len(rows)
        if end > self.capacity:  # only a stack of no layers, never written, can be short of room here
            self._grow(end)
        self.k[:, :, :, start:end] = self.k[:, :, :, rows]
        self.v[:, :, :, start:end] = self.v[:, :, :, rows]
        self.length = end

    def _grow(self, needed: int) -> None:
        # rare: only when a caller under-estimated the capacity; doubling keeps it amortised O(1)
        extra = max(needed, 2 * self.capacity) - self.capacity
        pad = lambda t: torch.cat([t, t.new_empty(*t.shape[:3], extra, t.shape[4])], dim=3)  # noqa: E731
        self.k, self.v = pad(self.k), pad(self.v)
