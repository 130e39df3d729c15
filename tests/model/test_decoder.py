"""Our compact Llama layer computes what transformers' LlamaDecoderLayer computes, with the same weights."""

import pytest
import torch
import transformers
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding, apply_rotary_pos_emb

from twigvlm.eval.bench_speed import OpCounter
from twigvlm.inference.cache import KVCache
from twigvlm.model.llava import LlavaConfig
from twigvlm.model.decoder import DecoderLayer, apply_rotary, attend, causal_mask, last_query_attention, run_layers
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


class OpNames(OpCounter):
    """Every aten op's name, in order, besides OpCounter's counts."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__.split(".")[0])
        return super().__torch_dispatch__(func, types, args, kwargs)


def random_layers(n):
    torch.manual_seed(0)
    layers = [DecoderLayer(CFG).eval() for _ in range(n)]
    for p in (p for layer in layers for p in layer.parameters()):
        torch.nn.init.normal_(p, std=0.2)
    return layers


@torch.no_grad()
def test_a_one_token_step_costs_at_most_36_ops_per_layer_and_reads_nothing_back_to_the_host():
    layers, rope = random_layers(3), Rope()
    cache = KVCache(3, CFG.num_key_value_heads, CFG.attn_head_dim, capacity=16, dtype=torch.float32,
                    device=torch.device("cpu"))
    x = torch.randn(1, 9, CFG.hidden_size)
    run_layers(layers, x[:, :8], rope(torch.arange(8)[None]), cache)
    step_rope, verify_rope = rope(torch.arange(8, 9)[None]), rope(torch.arange(9, 13)[None])
    with OpNames() as counter:
        run_layers(layers, x[:, 8:], step_rope, cache)
    assert counter.syncs == 0
    assert counter.ops <= 36 * 3 + 1  # + where this step's keys go
    with OpNames() as counter:  # a verify step: 4 new tokens after 9 cached ones
        run_layers(layers, torch.randn(1, 4, CFG.hidden_size), verify_rope, cache)
    assert counter.syncs == 0
    assert counter.names.count("tril") == 1  # one causal mask for every layer


def test_fused_projections_keep_their_names_and_share_one_storage():
    ours, theirs, _ = pair()
    with torch.no_grad():
        ours(torch.randn(1, 4, CFG.hidden_size), Rope()(torch.arange(4)[None]))  # inference fuses
    attn, mlp = ours.self_attn, ours.mlp
    assert list(ours.state_dict()) == list(theirs.state_dict())
    storage = lambda p: p.untyped_storage().data_ptr()  # noqa: E731
    assert storage(attn.q_proj.weight) == storage(attn.k_proj.weight) == storage(attn.v_proj.weight)
    assert storage(mlp.gate_proj.weight) == storage(mlp.up_proj.weight)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


@torch.no_grad()
def test_weights_loaded_or_converted_after_fusion_are_the_ones_the_layer_uses():
    ours, theirs, hf_rope = pair()
    x, positions = torch.randn(1, 9, CFG.hidden_size), torch.arange(9)[None]
    bias = torch.zeros(9, 9).masked_fill(~causal_mask(9, 9, x.device), float("-inf"))[None, None]
    ours(x, Rope()(positions))  # fused
    for p in theirs.parameters():
        torch.nn.init.normal_(p, std=0.2)
    ours.load_state_dict(theirs.state_dict())  # in place, into the fused tensors
    want = theirs(x, attention_mask=bias, position_embeddings=hf_rope(x, positions))
    torch.testing.assert_close(ours(x, Rope()(positions))[0], want, atol=1e-5, rtol=1e-5)
    ours.double(), theirs.double()  # new tensors: fused again
    x = x.double()
    want = theirs(x, attention_mask=bias.double(), position_embeddings=hf_rope(x, positions))
    got, _ = ours(x, Rope().r(positions[None], torch.float64))
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_with_gradients_every_projection_gets_one_and_the_output_is_the_inference_output():
    ours, _, _ = pair()
    x, rope = torch.randn(2, 5, CFG.hidden_size), Rope()(torch.arange(5)[None].expand(2, -1))
    with torch.no_grad():
        want, _ = ours(x, rope)
    got, _ = ours(x, rope)
    got.square().sum().backward()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ours.parameters())


def test_the_rotation_is_transformers_rotate_half_rotation():
    _, _, hf_rope = pair()
    q, k = torch.randn(2, 6, 9, CFG.attn_head_dim), torch.randn(2, 2, 9, CFG.attn_head_dim)
    positions = torch.arange(3, 12)[None].expand(2, -1)
    want_q, want_k = apply_rotary_pos_emb(q, k, *hf_rope(q, positions))
    rope = Rope()(positions)
    torch.testing.assert_close(apply_rotary(q, *rope), want_q, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(apply_rotary(k, *rope), want_k, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_a_bool_mask_and_its_additive_form_give_the_same_attention(implementation):
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 6, 3, 8), torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 8)
    allowed = torch.rand(3, 7) > 0.4
    allowed[:, 0] = True  # every query sees at least one key
    additive = torch.zeros(3, 7).masked_fill(~allowed, float("-inf"))
    torch.testing.assert_close(attend(q, k, v, additive, implementation), attend(q, k, v, allowed, implementation),
                               atol=1e-6, rtol=1e-6)
