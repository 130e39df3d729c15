"""The engine's pruned, cached forward equals a slow, obviously-correct reference.

The reference runs every layer group on an EXPLICIT list of rows, with no cache: layers [0, K) on everything,
layers [K, F) on text + the kept visual tokens, layers [F, N) on text only, each row at its original position.
It scores visual tokens with an eager softmax written out here. Generated tokens are appended to every group.
"""

import math

import pytest
import torch

from twigvlm.inference.engine import Engine
from twigvlm.inference.pruning import PruningPlan
from twigvlm.model.decoder import apply_rotary
from twigvlm.model.twig import Twig


def eager_last_row_attention(layer, x, rope):
    """Head-averaged attention probabilities of the last row of x [1, P, C] in `layer`, computed by hand."""
    attn = layer.self_attn
    z = layer.input_layernorm(x)
    q = attn.q_proj(z).view(1, -1, attn.num_heads, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(z).view(1, -1, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
    q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
    k = k.repeat_interleave(attn.num_heads // attn.num_kv_heads, dim=1)
    scores = (q[:, :, -1:] @ k.transpose(2, 3)) / math.sqrt(attn.head_dim)  # [1, H, 1, P]
    return scores.softmax(-1)[0, :, 0].mean(0)  # [P]


def run(layers, x, rows, model):
    """Layers on x [1, len(rows), C] whose rows sit at positions `rows`; causal over that order; no cache."""
    rope = model.rope(rows[None, None])  # positions [A=1, B=1, Q]
    for layer in layers:
        x, _ = layer(x, rope)
    return x


def reference(model, twig, input_ids, pixels, generated, method, R, K):
    """Target logits after the prompt and after each generated token [1+G, V], and the kept visual indices."""
    inputs = model.embed_multimodal(input_ids, images=pixels)
    (start, end), = inputs.visual_spans[0]
    P, G, N, V = inputs.embeds.shape[1], len(generated), model.config.num_hidden_layers, end - start
    x = torch.cat([inputs.embeds, model.model.embed_tokens(torch.tensor([generated], dtype=torch.long))], dim=1)
    rows = torch.arange(P + G)
    layers = model.model.layers
    h = run(layers[:K], x, rows, model)
    kept = None
    if method == "none":
        middle_rows, F = rows, N
    else:
        F = N * 3 // 4
        if method == "twig":
            h_twig = run(twig.layers[:-1], h[:, :P], rows[:P], model)
            scores = eager_last_row_attention(twig.layers[-1], h_twig, model.rope(rows[None, None, :P]))
        else:  # fastv: base layer K-1
            h_before = run(layers[:K - 1], x[:, :P], rows[:P], model)
            scores = eager_last_row_attention(layers[K - 1], h_before, model.rope(rows[None, None, :P]))
        rank = math.ceil((N * R - K * V) / (F - K))
        kept = scores[start:end].topk(rank).indices.sort().values
        middle_rows = torch.cat([rows[:start], kept + start, rows[end:]])
    h = run(layers[K:F], h[:, middle_rows], middle_rows, model)
    text = (middle_rows < start) | (middle_rows >= end) if method != "none" else torch.ones_like(middle_rows, dtype=bool)
    h = run(layers[F:], h[:, text], middle_rows[text], model)
    logits = model.logits(h)[0]
    return logits[-(G + 1):], kept


def engine_logits(model, twig, input_ids, pixels, generated, method, R):
    """The same logits through the engine: prefill, then one cached step per generated token."""
    inputs = model.embed_multimodal(input_ids, images=pixels)
    engine = Engine(model, twig, PruningPlan(method, R), capacity=inputs.embeds.shape[1] + 16)
    prefill = engine.prefill(inputs)
    steps = [prefill.target_logits]
    for token in generated:
        engine.extend(torch.tensor([token]))
        steps.append(engine.target_logits()[-1])
    return torch.stack(steps), prefill.kept_visual


@pytest.mark.parametrize("method, R", [("none", None), ("twig", 64), ("fastv", 64), ("twig", 192)])
def test_pruned_cached_forward_equals_the_slow_reference(deep_model, make_prompt, pixel_values, method, R):
    twig = Twig.from_base(deep_model, K=2, T=3).eval()
    ids, pixels = make_prompt("What is in the image?"), pixel_values[:1]
    generated = [5, 17, 42, 7, 99]
    want, want_kept = reference(deep_model, twig, ids, pixels, generated, method, R, K=2)
    got, got_kept = engine_logits(deep_model, twig, ids, pixels, generated, method, R)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    if method != "none":
        assert torch.equal(got_kept, want_kept)


def test_kept_tokens_keep_their_original_positions(deep_model, make_prompt, pixel_values):
    """Renumbering the kept rows 0..P'-1 (what a naive implementation does) gives different logits."""
    twig = Twig.from_base(deep_model, K=2, T=3).eval()
    ids, pixels = make_prompt("What is in the image?"), pixel_values[:1]
    got, kept = engine_logits(deep_model, twig, ids, pixels, [], "twig", 64)
    want, _ = reference(deep_model, twig, ids, pixels, [], "twig", 64, K=2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert kept.max() > len(kept)  # the kept tokens are spread over the image, so ids differ from 0..rank-1


def test_pruning_changes_the_answer_logits(deep_model, make_prompt, pixel_values):
    twig = Twig.from_base(deep_model, K=2, T=3).eval()
    ids, pixels = make_prompt("What is in the image?"), pixel_values[:1]
    full, _ = engine_logits(deep_model, twig, ids, pixels, [], "none", None)
    pruned, _ = engine_logits(deep_model, twig, ids, pixels, [], "twig", 64)
    assert not torch.allclose(full, pruned, atol=1e-4)


def test_rollback_forgets_rejected_tokens(deep_model, make_prompt, pixel_values):
    """Extending by tokens then rolling back gives the same next logits as never having seen them."""
    twig = Twig.from_base(deep_model, K=2, T=3).eval()
    inputs = deep_model.embed_multimodal(make_prompt("What is in the image?"), images=pixel_values[:1])

    def fresh():
        engine = Engine(deep_model, twig, PruningPlan("twig", 64), capacity=inputs.embeds.shape[1] + 16)
        engine.prefill(inputs)
        return engine

    clean = fresh()
    clean.extend(torch.tensor([11]))
    want_target, want_draft = clean.target_logits()[-1], clean.draft_logits()

    engine = fresh()
    start = engine.length
    engine.extend(torch.tensor([11, 23, 31]))  # as if the twig drafted 23, 31 after 11
    engine.draft_logits()
    engine.target_logits()
    engine.rollback(start)  # reject everything, 11 included
    engine.extend(torch.tensor([11]))
    torch.testing.assert_close(engine.target_logits()[-1], want_target, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(engine.draft_logits(), want_draft, atol=1e-5, rtol=1e-5)


def test_each_layer_group_caches_its_own_number_of_tokens(deep_model, make_prompt, pixel_values):
    twig = Twig.from_base(deep_model, K=2, T=3).eval()
    inputs = deep_model.embed_multimodal(make_prompt("What is in the image?"), images=pixel_values[:1])
    P = inputs.embeds.shape[1]
    engine = Engine(deep_model, twig, PruningPlan("twig", 64), capacity=P + 8)
    engine.prefill(inputs)
    # N=24, K=2, F=18: rank = ceil((24*64 - 2*576) / 16) = 24
    assert engine.lower.cache.length == engine.draft.cache.length == P
    assert engine.middle.cache.length == P - 576 + 24
    assert engine.top.cache.length == P - 576
    engine.extend(torch.tensor([3, 4]))
    engine.target_logits()
    assert (engine.lower.cache.length, engine.middle.cache.length, engine.top.cache.length) == \
        (P + 2, P - 576 + 24 + 2, P - 576 + 2)
    assert engine.draft.cache.length == P  # the twig has not consumed the new rows yet


# --- Qwen2.5-VL: 3-D positions, several images, a retain ratio ------------------------------------------------------
def qwen_reference(model, twig, inputs, generated, method, ratio, K=2):
    """The slow reference with M-RoPE: every row at its ORIGINAL 3-D position (generated tokens at sequence index
    + the prompt's rope delta), layers run on explicit row lists, visual tokens of all images ranked together."""
    embedded = model.embed_multimodal(inputs["input_ids"], pixel_values=inputs["pixel_values"],
                                      image_grid_thw=inputs["image_grid_thw"])
    P, G, N = embedded.embeds.shape[1], len(generated), model.config.num_hidden_layers
    positions = torch.cat([embedded.position_ids[:, 0], embedded.decode_positions(P, P + G)[:, 0]], dim=1)  # [3, P+G]
    visual_rows = embedded.visual_mask()[0].nonzero().flatten()  # every image's tokens, in order
    V = len(visual_rows)
    x = torch.cat([embedded.embeds, model.embed_tokens(torch.tensor([generated]))], dim=1)

    def run3(layers, h, rows):
        rope = model.rope(positions[:, rows][:, None])  # [3, 1, Q]
        for layer in layers:
            h, _ = layer(h, rope)
        return h

    rows = torch.arange(P + G)
    h = run3(model.layers[:K], x, rows)
    F = N * 3 // 4 if method != "none" else N
    middle = rows
    kept = None
    if method != "none":
        prompt = rows[:P]
        if method == "twig":
            scores = eager_last_row_attention(twig.layers[-1], run3(twig.layers[:-1], h[:, :P], prompt),
                                              model.rope(positions[:, :P][:, None]))
        else:
            scores = eager_last_row_attention(model.layers[K - 1], run3(model.layers[:K - 1], x[:, :P], prompt),
                                              model.rope(positions[:, :P][:, None]))
        rank = math.ceil((N * ratio * V - K * V) / (F - K))
        kept = scores[visual_rows].topk(rank).indices.sort().values
        dropped = torch.zeros(P + G, dtype=torch.bool)
        dropped[visual_rows] = True
        dropped[visual_rows[kept]] = False
        middle = rows[~dropped]
    h = run3(model.layers[K:F], h[:, middle], middle)
    text = ~torch.isin(middle, visual_rows) if method != "none" else torch.ones_like(middle, dtype=torch.bool)
    h = run3(model.layers[F:], h[:, text], middle[text])
    return model.logits(h)[0][-(G + 1):], kept


@pytest.mark.parametrize("method, ratio", [("none", None), ("twig", 0.3), ("fastv", 0.3), ("twig", 0.6)])
def test_qwen_pruned_cached_forward_equals_the_slow_reference_with_3d_positions(qwen_model, qwen_inputs, qwen_images,
                                                                               method, ratio):
    twig = Twig.from_base(qwen_model, K=2, T=2).eval()
    inputs = qwen_inputs("Compare the two pictures.", [qwen_images[0], qwen_images[3]])  # two images
    generated = [15, 71, 99, 8]
    want, want_kept = qwen_reference(qwen_model, twig, inputs, generated, method, ratio)
    embedded = qwen_model.embed_multimodal(inputs["input_ids"], pixel_values=inputs["pixel_values"],
                                           image_grid_thw=inputs["image_grid_thw"])
    engine = Engine(qwen_model, twig, PruningPlan(method, retain_ratio=ratio), capacity=embedded.embeds.shape[1] + 8)
    prefill = engine.prefill(embedded)
    steps = [prefill.target_logits]
    for token in generated:
        engine.extend(torch.tensor([token]))
        steps.append(engine.target_logits()[-1])
    torch.testing.assert_close(torch.stack(steps), want, atol=1e-5, rtol=1e-5)
    if method != "none":
        assert torch.equal(prefill.kept_visual, want_kept)
        assert prefill.visual_tokens["average"] == pytest.approx(ratio * len(embedded.visual_mask()[0].nonzero()),
                                                                 abs=(6 - 2) / 8)


def test_the_h_k_stream_grows_past_twice_its_capacity(deep_model, make_prompt, pixel_values):
    """An under-estimated capacity is grown as often and as far as needed, keeping every row already stored."""
    engine = Engine(deep_model, None, PruningPlan(), capacity=4)
    inputs = deep_model.embed_multimodal(make_prompt("What is in the image?"), images=pixel_values[:1])
    engine.prefill(inputs)  # hundreds of rows into a stream made for 4
    P = inputs.embeds.shape[1]
    stored = engine.h_k[:, :P].clone()
    n = 3 * engine.h_k.shape[1]  # more than doubling again
    engine.extend(torch.arange(n) % 50 + 3)
    assert engine.length == P + n and engine.h_k.shape[1] >= P + n
    assert torch.equal(engine.h_k[:, :P], stored)
