"""Self-speculative decoding: greedy output == greedy target output; sampled output ~ the target's distribution."""

import math

import pytest
import torch
from scipy.stats import chisquare

from twigvlm.inference.generate import TwigVLM
from twigvlm.inference.sampling import Sampling, accept_drafts, probabilities
from twigvlm.model.twig import Twig
from twigvlm.model.tiny import TinySpec, random_llava


def good_twig(model, K, T):
    return Twig.from_base(model, K, T).eval()


def bad_twig(model, K, T, seed=0):
    """A twig that disagrees with the base: its layers and head scrambled."""
    twig = Twig.from_base(model, K, T).eval()
    g = torch.Generator().manual_seed(seed)
    for p in twig.parameters():
        p.data.add_(torch.randn(p.shape, generator=g) * p.data.std() * 3)
    return twig


def generate(model, ids, pixels, strategy, pruning, R, max_new_tokens=40, draft_threshold=0.6):
    return model.generate(ids, images=pixels, max_new_tokens=max_new_tokens, eos_token_id=-1,
                          twigvlm_config=dict(generation_strategy=strategy, pruning=pruning, attention_rank=R,
                                              draft_threshold=draft_threshold))


@pytest.mark.parametrize("pruning, R", [("none", None), ("twig", 192), ("twig", 64), ("fastv", 64)])
@pytest.mark.parametrize("make_twig", [good_twig, bad_twig])
def test_greedy_ssd_equals_greedy_autoregressive(deep_model, make_prompt, pixel_values, pruning, R, make_twig):
    model = TwigVLM(deep_model, make_twig(deep_model, 2, 3))
    for image in range(len(pixel_values)):
        for question in ("What is in the image?", "Describe the colors of the shapes in detail."):
            ids, pixels = make_prompt(question), pixel_values[image:image + 1]
            ar = generate(model, ids, pixels, "autoregressive", pruning, R)
            # threshold 0: always draft the full 5, so long accepted runs and deep rollbacks both happen
            ssd = generate(model, ids, pixels, "self_speculative", pruning, R, draft_threshold=0.0)
            assert ssd.predicted_tokens.tolist() == ar.predicted_tokens.tolist()


@pytest.mark.parametrize("K, T", [(1, 1), (2, 2), (3, 4)])
def test_greedy_ssd_equals_autoregressive_for_any_twig_shape(tiny_model, make_prompt, pixel_values, K, T):
    model = TwigVLM(tiny_model, bad_twig(tiny_model, K, T, seed=K * 10 + T))
    ids, pixels = make_prompt("Describe the colors of the shapes in detail."), pixel_values[1:2]
    # N=8, F=6: R=240 is reachable for every K here ((72|144|216, 432])
    ar = generate(model, ids, pixels, "autoregressive", "twig", 240)
    ssd = generate(model, ids, pixels, "self_speculative", "twig", 240)
    assert ssd.predicted_tokens.tolist() == ar.predicted_tokens.tolist()


def test_the_two_twigs_cover_both_acceptance_paths(deep_model, make_prompt, pixel_values):
    """The SSD == AR tests above mean something only if one twig is mostly accepted and the other mostly not."""
    ids, pixels = make_prompt("Describe the colors of the shapes in detail."), pixel_values[:1]
    stats = {}
    for make_twig in (good_twig, bad_twig):
        stats[make_twig.__name__] = generate(TwigVLM(deep_model, make_twig(deep_model, 2, 3)), ids, pixels,
                                             "self_speculative", "twig", 64, draft_threshold=0.0)
    good, bad = stats["good_twig"], stats["bad_twig"]
    assert good.acceptance_rate > 0.8 and good.mean_accepted_length > 2.5
    assert bad.acceptance_rate < 0.3


def test_generation_stops_at_eos_and_at_max_new_tokens(deep_model, make_prompt, pixel_values):
    model = TwigVLM(deep_model, good_twig(deep_model, 2, 3))
    ids, pixels = make_prompt("What is in the image?"), pixel_values[:1]
    free = generate(model, ids, pixels, "autoregressive", "none", None, max_new_tokens=12).predicted_tokens[0]
    eos = int(free[5])  # pretend the 6th token is EOS
    for strategy in ("autoregressive", "self_speculative"):
        out = model.generate(ids, images=pixels, max_new_tokens=12, eos_token_id=eos,
                             twigvlm_config=dict(generation_strategy=strategy))
        first = free.tolist().index(eos)
        assert out.predicted_tokens[0].tolist() == free[:first + 1].tolist()
        for n in (1, 2, 7):
            out = generate(model, ids, pixels, strategy, "none", None, max_new_tokens=n)
            assert out.predicted_tokens[0].tolist() == free[:n].tolist()


# --- sampling ------------------------------------------------------------------------------------------------------
def test_acceptance_rule_output_is_distributed_as_the_target():
    """One speculative step with a draft from q: the emitted token must follow p, whatever q is."""
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([[0.5, 0.2, 0.2, 0.1, 0.0], [0.2] * 5])
    q = torch.tensor([[0.1, 0.1, 0.3, 0.3, 0.2]])
    counts = torch.zeros(5)
    n = 20000
    for _ in range(n):
        draft = torch.multinomial(q[0], 1, generator=g)
        m, after = accept_drafts(draft, q, p, g)
        counts[int(draft) if m == 1 else after] += 1
    observed, expected = counts[:4], p[0, :4] * n  # token 4 has p = 0 and must never appear
    assert counts[4] == 0
    assert chisquare(observed.numpy(), expected.numpy()).pvalue > 0.001


def test_greedy_acceptance_accepts_exactly_the_argmax_prefix():
    V = 6
    target = torch.tensor([2, 4, 1, 3])  # the target's argmax after each position
    p = probabilities(torch.nn.functional.one_hot(target, V).float() * 5, Sampling())
    drafts = torch.tensor([2, 4, 5])
    q = torch.nn.functional.one_hot(drafts, V).float()
    assert accept_drafts(drafts, q, p, None) == (2, 1)  # 2, 4 accepted; at the third position the target says 1
    assert accept_drafts(torch.tensor([2, 4, 1]), torch.nn.functional.one_hot(torch.tensor([2, 4, 1]), V).float(),
                         p, None) == (3, 3)  # all accepted; the target's own next token follows


@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (3, 0.8)])
def test_sampled_ssd_matches_the_targets_distribution_end_to_end(clip_dir, top_k, top_p):
    """A model with an 8-token vocabulary: the joint law of the first two generated tokens under SSD equals the
    target's exact law p(t1) p(t2 | t1), computed with plain forwards."""
    model = random_llava(TinySpec(num_layers=2, head_std=0.15, seed=3), vocab_size=8, clip_folder=clip_dir)
    drafting = TwigVLM(model, bad_twig(model, K=1, T=1, seed=5))
    sampling = Sampling(do_sample=True, temperature=1.0, top_k=top_k, top_p=top_p)
    ids = torch.tensor([[1, 5, 3, 6]])
    with torch.no_grad():
        p1 = probabilities(model(input_ids=ids).logits[0, -1:], sampling)[0]  # [8]
        p2 = torch.stack([probabilities(model(input_ids=torch.cat([ids, torch.tensor([[t]])], 1)).logits[0, -1:],
                                        sampling)[0] for t in range(8)])  # [8, 8]
    exact = (p1[:, None] * p2).flatten()  # [64]
    g = torch.Generator().manual_seed(1)
    n, counts, accepted = 1200, torch.zeros(64), 0
    for _ in range(n):
        out = drafting.generate(ids, max_new_tokens=3, do_sample=True, temperature=1.0, top_k=top_k, top_p=top_p,
                                eos_token_id=-1, generator=g,
                                twigvlm_config=dict(generation_strategy="self_speculative", draft_threshold=0.0))
        t1, t2 = out.predicted_tokens[0, :2].tolist()
        counts[t1 * 8 + t2] += 1
        accepted += out.num_accepted
    assert 0 < accepted < n  # drafts were both accepted and rejected (t2 is drafted once per generation)
    support = exact > 0
    assert counts[~support].sum() == 0
    # pool cells with small expectations so the chi-square approximation holds
    expected = exact[support] * n
    big = expected >= 5
    obs = torch.cat([counts[support][big], counts[support][~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    keep = exp > 0
    assert chisquare(obs[keep].numpy(), exp[keep].numpy() * obs[keep].sum().item() / exp[keep].sum().item()).pvalue \
        > 0.001
    assert math.isclose(float(exact.sum()), 1.0, rel_tol=1e-5)


# --- Qwen2.5-VL ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pruning, ratio", [("none", None), ("twig", 0.3), ("twig", 0.6), ("fastv", 0.3),
                                            ("random", 0.4)])
@pytest.mark.parametrize("make_twig", [good_twig, bad_twig])
def test_qwen_greedy_ssd_equals_greedy_autoregressive(qwen_model, qwen_inputs, qwen_images, pruning, ratio,
                                                      make_twig):
    model = TwigVLM(qwen_model, make_twig(qwen_model, 2, 2))
    for images in ([qwen_images[2]], [qwen_images[1], qwen_images[3]]):  # one image, and two ranked together
        inputs = qwen_inputs("Describe the image in detail.", images)
        config = dict(pruning=pruning, retain_ratio=ratio, draft_threshold=0.0)
        ar = model.generate(**inputs, max_new_tokens=20, eos_token_id=-1,
                            twigvlm_config={**config, "generation_strategy": "autoregressive"})
        ssd = model.generate(**inputs, max_new_tokens=20, eos_token_id=-1,
                             twigvlm_config={**config, "generation_strategy": "self_speculative"})
        assert ssd.predicted_tokens.tolist() == ar.predicted_tokens.tolist()


def test_the_qwen_twigs_cover_both_acceptance_paths(qwen_model, qwen_inputs, qwen_images):
    """The Qwen SSD == AR test above means something only if one twig is mostly accepted and the other mostly not."""
    inputs = qwen_inputs("Describe the image in detail.", qwen_images[2:3])
    rates = {make_twig.__name__: TwigVLM(qwen_model, make_twig(qwen_model, 2, 2)).generate(
        **inputs, max_new_tokens=30, eos_token_id=-1,
        twigvlm_config={"pruning": "twig", "retain_ratio": 0.6, "draft_threshold": 0.0}).acceptance_rate
        for make_twig in (good_twig, bad_twig)}
    assert rates["good_twig"] > 0.6 and rates["bad_twig"] < 0.3, rates
