"""The KV cache: a static-shape step (the compiled path) computes what the ordinary step computes."""

import torch

from twigvlm.inference.cache import KVCache, SlotWriter
from twigvlm.model.decoder import DecoderConfig, DecoderLayer, RotaryEmbedding, run_layers

CFG = DecoderConfig(vocab_size=50, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=6,
                    num_key_value_heads=2)


def random_layers(n):
    torch.manual_seed(0)
    layers = [DecoderLayer(CFG).eval() for _ in range(n)]
    for p in (p for layer in layers for p in layer.parameters()):
        torch.nn.init.normal_(p, std=0.2)
    return layers


def rope(positions):
    """positions [B, Q] -> cos, sin."""
    return RotaryEmbedding(CFG.attn_head_dim, CFG.rope_theta)(positions[None], torch.float32)


def cache(capacity):
    return KVCache(2, CFG.num_key_value_heads, CFG.attn_head_dim, capacity, torch.float32, torch.device("cpu"))


@torch.no_grad()
def test_a_static_step_over_the_whole_preallocated_cache_equals_the_ordinary_step():
    layers = random_layers(2)
    x = torch.randn(1, 7, CFG.hidden_size)
    ordinary, static = cache(16), cache(16)
    for c in (ordinary, static):
        run_layers(layers, x[:, :6], rope(torch.arange(6)[None]), c)
    want, _ = run_layers(layers, x[:, 6:], rope(torch.arange(6, 7)[None]), ordinary)
    slot = torch.tensor([6])
    written = (torch.arange(16) <= slot)[None, None, None]  # [1, 1, 1, S]
    got, _ = run_layers(layers, x[:, 6:], rope(torch.arange(6, 7)[None]), SlotWriter(static, slot), written)
    static.advance(1)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert static.length == ordinary.length == 7
    for layer in range(2):
        torch.testing.assert_close(static.k[layer][:, :, :7], ordinary.k[layer][:, :, :7], atol=1e-6, rtol=1e-6)


def test_a_cache_grows_past_twice_its_capacity_and_keeps_what_it_held():
    c = cache(2)
    k = torch.randn(1, CFG.num_key_value_heads, 7, CFG.attn_head_dim)
    c.update(0, k[:, :, :1], k[:, :, :1])
    c.update(1, k[:, :, :1], k[:, :, :1])
    c.advance(1)
    keys, _ = c.update(0, k[:, :, 1:], k[:, :, 1:])  # 6 more: past 2 x 2
    assert c.capacity >= 7
    assert torch.equal(keys, k)
