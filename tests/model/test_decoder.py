"""Our compact Llama layer computes what transformers' LlamaDecoderLayer computes, with the same weights."""

import pytest
import torch
import transformers
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from twigvlm.inference.cache import KVCache
from twigvlm.model.llava import LlavaConfig
from twigvlm.model.decoder import DecoderLayer, attend, causal_mask, last_query_attention, run_layers
from twigvlm.model.family import padded_causal_mask

CFG = LlavaConfig(vocab_size=50, hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=6,
                  num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0)


class Rope:
    def __init__(self):
        from twigvlm.model.decoder import RotaryEmbedding

        self.r = RotaryEmbedding(CFG.attn_head_dim, CFG.rope_theta)

    def __call__(self, positions):
        """positions [B, Q] (one axis)."""
        return self.r(positions[None], torch.float32)


def pair(implementation="sdpa"):
    """Our layer and transformers' layer holding the same random weights."""
    torch.manual_seed(0)
    hf_cfg = transformers.LlamaConfig(**CFG.llama_dict())
    hf_cfg._attn_implementation = "eager" if implementation == "eager" else "sdpa"
    theirs = LlamaDecoderLayer(hf_cfg, layer_idx=0).eval()
    for p in theirs.parameters():
        torch.nn.init.normal_(p, std=0.2)
    ours = DecoderLayer(CFG, implementation).eval()
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs, LlamaRotaryEmbedding(hf_cfg)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_layer_matches_transformers_on_a_whole_sequence(implementation):
    ours, theirs, hf_rope = pair(implementation)
    x = torch.randn(2, 9, CFG.hidden_size)
    positions = torch.arange(9)[None].expand(2, -1)
    mask = causal_mask(9, 9, x.device)
    want = theirs(x, attention_mask=torch.zeros(9, 9).masked_fill(~mask, float("-inf"))[None, None],
                  position_embeddings=hf_rope(x, positions))
    got, _ = ours(x, Rope()(positions))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_cached_chunks_equal_one_whole_pass():
    """Prefill 5 tokens, then 3, then 1 through a cache == all 9 at once."""
    ours, _, _ = pair()
    x = torch.randn(1, 9, CFG.hidden_size)
    rope = Rope()
    whole, _ = run_layers([ours], x, rope(torch.arange(9)[None]))
    cache = KVCache(1, CFG.num_key_value_heads, CFG.attn_head_dim, capacity=4, dtype=torch.float32,
                    device=x.device)  # too small on purpose: it must grow
    parts = []
    for a, b in [(0, 5), (5, 8), (8, 9)]:
        h, _ = run_layers([ours], x[:, a:b], rope(torch.arange(a, b)[None]), cache)
        parts.append(h)
    torch.testing.assert_close(torch.cat(parts, 1), whole, atol=1e-5, rtol=1e-5)
    assert cache.length == 9


def test_sdpa_and_eager_agree_with_a_bottom_right_causal_mask():
    q = torch.randn(1, 6, 3, 8)
    k, v = torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 8)  # 3 new queries over 7 keys, 3 groups of heads
    torch.testing.assert_close(attend(q, k, v, None, "sdpa"), attend(q, k, v, None, "eager"), atol=1e-5, rtol=1e-5)
    assert causal_mask(3, 7, q.device).tolist()[0] == [True] * 5 + [False] * 2


def test_last_query_attention_is_the_last_row_of_the_softmax():
    q, k = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 5, 8)
    full = (q @ k.repeat_interleave(2, 1).transpose(2, 3) / 8 ** 0.5).softmax(-1)  # [1, 4, 5, 5]
    torch.testing.assert_close(last_query_attention(q[:, :, -1:], k), full[:, :, -1], atol=1e-6, rtol=1e-5)


def test_attention_of_rows_are_those_rows_of_transformers_eager_attention_weights():
    ours, theirs, hf_rope = pair("eager")
    x = torch.randn(2, 9, CFG.hidden_size)
    positions = torch.arange(9)[None].expand(2, -1)
    keys = torch.ones(2, 9, dtype=torch.bool)
    keys[1, 7:] = False  # sample 1 is right-padded: its padding is never a key
    allowed = causal_mask(9, 9, x.device)[None] & keys[:, None, :]  # [B, Q, S]
    bias = torch.zeros(2, 1, 9, 9).masked_fill(~allowed[:, None], float("-inf"))
    _, weights = theirs.self_attn(theirs.input_layernorm(x), position_embeddings=hf_rope(x, positions),
                                  attention_mask=bias)  # [B, H, Q, S]
    rows = torch.tensor([[8, 2], [6, 0]])
    got = ours.attention_of_rows(x, Rope()(positions), rows, keys)
    want = torch.stack([weights[b, :, rows[b]] for b in range(2)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert got[1, :, :, 7:].abs().max() == 0


def test_padding_rows_never_see_other_padding_and_real_rows_never_see_padding():
    mask = padded_causal_mask(torch.tensor([[True, True, False]]))[0, 0]
    assert mask.tolist() == [[True, False, False], [True, True, False], [True, True, True]]
