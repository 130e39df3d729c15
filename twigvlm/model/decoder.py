"""A compact decoder layer, weight-compatible with `transformers`' Llama and Qwen2 decoder layers (same parameter
names): every family's decoder is a stack of these.

Written out here rather than driven through `transformers` because TwigVLM needs three things its layer does not
give cheaply: a KV cache with one length per layer group (pruning makes the groups differ), kept tokens that keep
their ORIGINAL position ids, and the attention of the last query row on the side (token scoring) while the main
path keeps a fast kernel (SDPA or FlashAttention). Parity with `transformers` is a test.

Shapes: B batch, Q new (query) tokens, S keys in the cache including the new ones, H heads, Hkv key/value heads,
D head dim, C hidden size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")


@dataclass
class DecoderConfig:
    """The decoder's shape, in `transformers`' names: all the layers, caches, rotary embedding and twig need."""

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    head_dim: int | None = None
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096
    hidden_act: str = "silu"
    attention_bias: bool = False  # Llama: a bias on q, k, v and o
    qkv_bias: bool = False  # Qwen2: a bias on q, k and v only
    mlp_bias: bool = False
    mrope_section: tuple[int, ...] | None = None  # M-RoPE: rotary frequencies per (temporal, height, width) axis
    tie_word_embeddings: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pad_token_id: int | None = 0
    name_or_path: str = ""

    @property
    def attn_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def position_axes(self) -> int:
        """A in position_ids [A, B, L]: 1 for plain RoPE, 3 for M-RoPE."""
        return 1 if self.mrope_section is None else len(self.mrope_section)


class KVStore(Protocol):
    """Where a stack of layers keeps its keys and values (see `twigvlm.inference.cache`)."""

    length: int  # tokens in the cache before the current forward

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v [B, Hkv, Q, D] of `layer` after the current length; return all keys/values [B, Hkv, S, D]."""

    def advance(self, num_tokens: int) -> None:
        """Make the tokens just stored by every layer part of the cache."""


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # statistics in float32, as Llama was trained; F.rms_norm is one kernel on a GPU
        return self.weight * F.rms_norm(x.float(), self.weight.shape, eps=self.eps).to(x.dtype)


class RotaryEmbedding:
    """cos/sin of rotary position embeddings for (arbitrary) position ids, computed as transformers does (float32
    position x frequency), on the fly: no table to size, nothing read back to the host.

    Plain RoPE has one position axis; M-RoPE (Qwen2-VL and after) three, temporal, height and width: the D/2
    rotary frequencies are split into `sections`, and section i turns with the position on axis i % 3.
    The sine comes with the sign of `rotate_half` folded in (see `apply_rotary`).
    """

    def __init__(self, head_dim: int, theta: float, sections: Sequence[int] | None = None):
        # on the CPU even when the model is built on the meta device; moved to the positions' device when first used
        exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device="cpu") / head_dim
        self.inv_freq = 1.0 / (theta ** exponents)  # [D/2]
        if sections is not None and sum(sections) != head_dim // 2:
            raise ValueError(f"M-RoPE sections {list(sections)} must add up to head_dim / 2 = {head_dim // 2}")
        # the position axis each frequency turns with [D/2]; None: one axis
        self.axis_of_frequency = None if sections is None else torch.cat(
            [torch.full((n,), i % 3, dtype=torch.long, device="cpu") for i, n in enumerate(sections)])

    def __call__(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """positions [A, B, Q] (A = 1, or 3 for M-RoPE) -> cos, signed sin [B, 1, Q, D] in `dtype`."""
        if self.inv_freq.device != positions.device:
            self.inv_freq = self.inv_freq.to(positions.device)
            if self.axis_of_frequency is not None:
                self.axis_of_frequency = self.axis_of_frequency.to(positions.device)
        freqs = positions[..., None].float() * self.inv_freq  # [A, B, Q, D/2]
        if self.axis_of_frequency is None:
            freqs = freqs[0]
        else:  # frequency f turns with the position on its own axis
            freqs = freqs.gather(0, self.axis_of_frequency.expand(1, *freqs.shape[1:]))[0]  # [B, Q, D/2]
        freqs = freqs.unsqueeze(1)  # [B, 1, Q, D/2]
        cos, sin = freqs.cos(), freqs.sin()
        return torch.cat([cos, cos], dim=-1).to(dtype), torch.cat([-sin, sin], dim=-1).to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, signed_sin: Tensor) -> Tensor:
    """x * cos + rotate_half(x) * sin, transformers' rotation, with rotate_half(x) = [-x2, x1] written as the halves
    swapped, [x2, x1], times the sine whose first half is negated (exactly the same products)."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin)


def repeat_kv(x: Tensor, groups: int) -> Tensor:
    """[B, Hkv, S, D] -> [B, Hkv*groups, S, D] for grouped-query attention."""
    if groups == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, groups, s, d).reshape(b, h * groups, s, d)


def causal_mask(q_len: int, k_len: int, device: torch.device) -> Tensor:
    """Bool [Q, S]: the new tokens are the LAST q_len of the k_len keys (bottom-right aligned)."""
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(k_len - q_len)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, implementation: str) -> Tensor:
    """Scaled dot-product attention. q [B, H, Q, D], k/v [B, Hkv, S, D] -> [B, H, Q, D].

    mask None means causal with the queries being the last Q keys; otherwise a mask broadcastable to [B, H, Q, S],
    bool (True = attend) or additive (0 / -inf), e.g. causal plus padding in a training batch, or a tree of drafts.
    """
    q_len, k_len = q.shape[2], k.shape[2]
    if implementation == "flash_attention_2" and mask is None and q.is_cuda:
        from flash_attn import flash_attn_func  # imported only on this path; optional dependency

        # flash-attn takes [B, S, H, D], handles grouped-query heads itself, and aligns `causal` bottom-right
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=q_len > 1)
        return out.transpose(1, 2)
    groups = q.shape[1] // k.shape[1]
    if implementation == "eager":
        k, v = repeat_kv(k, groups), repeat_kv(v, groups)
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(q.shape[-1])  # [B, H, Q, S]
        if mask is None and q_len > 1:
            mask = causal_mask(q_len, k_len, q.device)
        if mask is not None and mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        elif mask is not None:  # additive
            scores = scores + mask
        return torch.matmul(F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype), v)
    if mask is None and q_len > 1 and q_len != k_len:
        mask = causal_mask(q_len, k_len, q.device)
    # grouped-query heads inside the kernel; CUDA's kernels that take a mask do not, so it gets the heads repeated
    gqa = groups > 1 and (mask is None or not q.is_cuda)
    if groups > 1 and not gqa:
        k, v = repeat_kv(k, groups), repeat_kv(v, groups)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and q_len > 1,
                                          enable_gqa=gqa)


def query_attention(q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
    """Attention probabilities of some query rows to the keys, in float32: q [B, H, Q, D], k [B, Hkv, S, D], mask
    broadcastable to [B, H, Q, S] (True = attend; None: every key) -> [B, H, Q, S].

    Computed beside the main kernel, which never materialises probabilities.
    """
    k = repeat_kv(k, q.shape[1] // k.shape[1])
    scores = torch.matmul(q.float(), k.float().transpose(2, 3)) / math.sqrt(q.shape[-1])  # [B, H, Q, S]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1)


def last_query_attention(q_last: Tensor, k: Tensor) -> Tensor:
    """q_last [B, H, 1, D], k [B, Hkv, S, D] -> [B, H, S]. The row is the LAST token of the sequence, so it sees
    every key and needs no mask."""
    return query_attention(q_last, k).squeeze(2)


class FusedLinear:
    """Linear layers that read the same input, run as ONE matmul with the output rows of all of them.

    For inference (eval mode, no gradients) their weights are concatenated once into one tensor and each layer's
    parameters become views of their rows: the names, the state dict and the storage stay the layers' own (nothing
    is doubled, a checkpoint loaded in place lands in the fused tensor); a parameter replaced since (`.to()`, a deep
    copy) is noticed by its address and the fusion redone. In training mode or with gradients the layers run one by
    one as written: autograd, module hooks, and optimizers that own the parameters' storage (DeepSpeed's flat
    buffers) see what they expect. `residual` is added by the same kernel (addmm).
    """

    def __init__(self, *linears: nn.Linear):
        self.linears = linears
        self.fused: tuple[Tensor, Tensor | None] | None = None  # weight [sum out, in] transposed, bias [sum out]
        self.addresses: list[int] = []

    def __call__(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """x [N, in] (+ residual [N, sum out]) -> [N, sum out]."""
        if torch.is_grad_enabled() or self.linears[0].training:
            out = torch.cat([linear(x) for linear in self.linears], dim=-1)
            return out if residual is None else residual + out
        weight_t, bias = self._weights()
        if residual is None:
            return x.mm(weight_t) if bias is None else torch.addmm(bias, x, weight_t)
        return torch.addmm(residual if bias is None else residual + bias, x, weight_t)

    def _weights(self) -> tuple[Tensor, Tensor | None]:
        params = [p for linear in self.linears for p in (linear.weight, linear.bias) if p is not None]
        changed = not torch.compiler.is_compiling() and [p.data_ptr() for p in params] != self.addresses
        if self.fused is None or changed:  # (a compiled graph runs what the eager warm-up fused)
            self.fused = (_fuse([linear.weight for linear in self.linears]).t(),
                          None if self.linears[0].bias is None else _fuse([linear.bias for linear in self.linears]))
            self.addresses = [p.data_ptr() for p in params]
        return self.fused


def _fuse(params: list[nn.Parameter]) -> Tensor:
    """Concatenate parameters along dim 0 and make each a view of its rows of the result."""
    fused = torch.cat([p.detach() for p in params]) if len(params) > 1 else params[0].detach()
    start = 0
    for p in params:
        p.data = fused[start:start + p.shape[0]]
        start += p.shape[0]
    return fused


class Attention(nn.Module):
    def __init__(self, config: DecoderConfig, implementation: str = "sdpa"):
        super().__init__()
        self.num_heads, self.num_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.attn_head_dim
        qkv_bias = config.attention_bias or config.qkv_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.attention_bias)
        self.qkv, self.out = FusedLinear(self.q_proj, self.k_proj, self.v_proj), FusedLinear(self.o_proj)
        self.implementation = implementation

    def project(self, x: Tensor, batch: int, rope: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """x [B*Q, C] -> q [B, H, Q, D] and k, v [B, Hkv, Q, D], q and k rotated to their positions."""
        heads = self.num_heads + 2 * self.num_kv_heads
        qkv = self.qkv(x).view(batch, -1, heads, self.head_dim).transpose(1, 2)  # [B, H + 2 Hkv, Q, D]
        qk, v = qkv.split([self.num_heads + self.num_kv_heads, self.num_kv_heads], dim=1)
        q, k = apply_rotary(qk, *rope).split([self.num_heads, self.num_kv_heads], dim=1)  # one rotation for both
        return q, k, v

    def forward(self, x: Tensor, residual: Tensor, batch: int, rope: tuple[Tensor, Tensor],
                kv: tuple[KVStore, int] | None, mask: Tensor | None, score_last: bool) -> tuple[Tensor, Tensor | None]:
        """x [B*Q, C] (normalised) -> residual + attention output [B*Q, C]."""
        q, k, v = self.project(x, batch, rope)  # [B, H, Q, D], [B, Hkv, Q, D] x 2
        if kv is not None:
            store, layer = kv
            k, v = store.update(layer, k, v)  # [B, Hkv, S, D]
        out = attend(q, k, v, mask, self.implementation)  # [B, H, Q, D]
        scores = last_query_attention(q[:, :, -1:], k) if score_last else None
        return self.out(out.transpose(1, 2).reshape(x.shape[0], -1), residual), scores


class MLP(nn.Module):
    def __init__(self, config: DecoderConfig):
        super().__init__()
        c, i, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        if config.hidden_act != "silu":
            raise ValueError(f"hidden_act '{config.hidden_act}' is not supported (Llama and Qwen2 use silu)")
        self.gate_proj = nn.Linear(c, i, bias=bias)
        self.up_proj = nn.Linear(c, i, bias=bias)
        self.down_proj = nn.Linear(i, c, bias=bias)
        self.gate_up, self.down = FusedLinear(self.gate_proj, self.up_proj), FusedLinear(self.down_proj)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        """x [N, C] (normalised) -> residual + MLP output [N, C]."""
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up, residual)


class DecoderLayer(nn.Module):
    def __init__(self, config: DecoderConfig, implementation: str = "sdpa"):
        super().__init__()
        self.self_attn = Attention(config, implementation)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], kv: tuple[KVStore, int] | None = None,
                mask: Tensor | None = None, score_last: bool = False) -> tuple[Tensor, Tensor | None]:
        b, q, c = x.shape
        x = x.reshape(b * q, c)  # rows: every projection is one 2-D matmul
        x, scores = self.self_attn(self.input_layernorm(x), x, b, rope, kv, mask, score_last)
        return self.mlp(self.post_attention_layernorm(x), x).view(b, q, c), scores

    def attention_of_rows(self, x: Tensor, rope: tuple[Tensor, Tensor], rows: Tensor,
                          key_valid: Tensor | None = None) -> Tensor:
        """This layer's attention probabilities [B, H, Q, S] of the rows `rows` [B, Q] of its input x [B, S, C]
        (no cache: causal, and keys where key_valid [B, S] is False are never attended)."""
        b, s, c = x.shape
        q, k, _ = self.self_attn.project(self.input_layernorm(x.reshape(b * s, c)), b, rope)  # [B, H|Hkv, S, D]
        q = q.gather(2, rows[:, None, :, None].expand(-1, q.shape[1], -1, q.shape[-1]))  # [B, H, Q, D]
        mask = rows[:, :, None] >= torch.arange(s, device=x.device)  # [B, Q, S]: causal
        if key_valid is not None:
            mask = mask & key_valid[:, None, :]
        return query_attention(q, k, mask[:, None])


def run_layers(layers: Sequence[DecoderLayer], x: Tensor, rope: tuple[Tensor, Tensor], cache: KVStore | None = None,
               mask: Tensor | None = None, score_last_layer: bool = False,
               checkpointing: bool = False) -> tuple[Tensor, Tensor | None]:
    """Run a range of decoder layers on x [B, Q, C]; the primitive every path (draft, target, prefill, verify,
    training) shares.

    With a cache, layer i of the range is layer i of the cache; the new tokens are appended and committed at the
    end. `mask` (bool, True = attend, or additive; broadcastable to [B, H, Q, S]) is over all S keys; None is
    causal, built here once for every layer when new tokens follow cached ones. With `score_last_layer`, also
    return the last layer's attention of the last query row [B, H, S]. Gradient checkpointing (training, no
    cache) recomputes each layer in the backward pass.
    """
    q_len = x.shape[1]
    if mask is None and cache is not None and cache.length and q_len > 1 and \
            layers and layers[0].self_attn.implementation != "flash_attention_2":  # flash aligns causal itself
        mask = causal_mask(q_len, cache.length + q_len, x.device)
    scores = None
    for i, layer in enumerate(layers):
        score = score_last_layer and i == len(layers) - 1
        kv = (cache, i) if cache is not None else None
        if checkpointing and torch.is_grad_enabled():
            x, scores_i = checkpoint(layer, x, rope, kv, mask, score, use_reentrant=False)
        else:
            x, scores_i = layer(x, rope, kv, mask, score)
        scores = scores_i if score else scores
    if cache is not None:
        cache.advance(q_len)
    return x, scores


def set_attn_implementation(module: nn.Module, implementation: str) -> None:
    """Switch every Attention under `module` to sdpa, eager or flash_attention_2."""
    if implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, not '{implementation}'")
    if implementation == "flash_attention_2":
        try:
            import flash_attn  # noqa: F401
        except ImportError as e:
            raise ImportError("attn_implementation='flash_attention_2' needs the flash-attn package "
                              "(pip install flash-attn --no-build-isolation); or use 'sdpa' (the default)") from e
    for m in module.modules():
        if isinstance(m, Attention):
            m.implementation = implementation
