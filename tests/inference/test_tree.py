"""Tree-based self-speculative decoding: the tree mask, verifying a tree in one forward, keeping the accepted path,
the multi-candidate acceptance rule, and greedy / sampled output equal to the target's."""

import itertools
import math

import pytest
import torch
from scipy.stats import chisquare

from test_speculative import bad_twig, good_twig
from twigvlm.inference.engine import Engine
from twigvlm.inference.generate import TwigVLM
from twigvlm.inference.pruning import PruningPlan
from twigvlm.inference.sampling import Sampling, accept_tree, probabilities, residual
from twigvlm.inference.tree import DraftTree, TreeRows
from twigvlm.model.tiny import TinySpec, random_llava
from twigvlm.model.twig import Twig


# --- the tree's rows and mask --------------------------------------------------------------------------------------
def ancestors(parents: list[int], i: int) -> set[int]:
    """i and every row above it, walking parent links (parents[0] = -1: the root)."""
    out = {i}
    while parents[i] >= 0:
        i = parents[i]
        out.add(i)
    return out


def test_tree_mask_lets_each_row_see_exactly_itself_and_its_ancestors():
    parents = [-1, 0, 0, 1, 1, 2, 3, 3, 6, 5]
    rows = TreeRows(torch.device("cpu"))
    for batch in (slice(1, 3), slice(3, 6), slice(6, 8), slice(8, 10)):  # grown in batches, as drafting does
        rows.append(parents[batch])
    want = torch.tensor([[j in ancestors(parents, i) for j in range(len(parents))] for i in range(len(parents))])
    assert torch.equal(rows.visible, want)
    assert rows.depth.tolist() == [len(ancestors(parents, i)) - 1 for i in range(len(parents))]

    keep = [0, 1, 3, 6, 8]  # a path
    rows.keep(keep)
    assert torch.equal(rows.visible, torch.ones(5, 5, dtype=torch.bool).tril())
    assert rows.depth.tolist() == [0, 1, 2, 3, 4]


def test_the_best_nodes_of_a_tree_are_a_tree_by_own_or_by_parent_value():
    tree = DraftTree()
    a, b = tree.add(0, 5, 0.7), tree.add(0, 6, 0.3)
    c, d = tree.add(a, 7, 1.0), tree.add(a, 8, 0.0)  # c ties with its parent a
    e = tree.add(c, 9, 0.9)
    for by_parent in (False, True):
        for n in range(1, 6):
            kept = set(tree.best(list(range(1, 6)), n, by_parent))
            assert len(kept) == n and all(tree.parents[i] in kept | {0} for i in kept)
    assert tree.best([a, b, c, d, e], 3) == [a, c, e]
    assert tree.best([a, b, c, d, e], 3, by_parent=True) == [a, b, c]  # a's children come in the order drawn


# --- one forward over a tree, and keeping its accepted path ---------------------------------------------------------
def prefilled(model, twig, inputs, plan):
    engine = Engine(model, twig, plan, capacity=inputs.embeds.shape[1] + 4)  # grown as needed
    engine.prefill(inputs)
    return engine


TREE_PARENTS = [-1, 0, 0, 0, 1, 1, 2, 4, 4, 7]  # the root and nine drafted nodes over four depths
TREE_TOKENS = [11, 23, 31, 7, 42, 5, 19, 23, 60, 8]


def check_tree_against_paths(model, twig, inputs, plan):
    """Every node's target and twig logits from one tree forward equal those after feeding its path as a plain
    sequence; after keeping one path, the engine continues as if only that path had been fed."""
    engine = prefilled(model, twig, inputs, plan)
    engine.extend(torch.tensor(TREE_TOKENS[:1]))
    engine.open_tree()
    engine.draft_logits()
    twig_logits = []  # nodes 1..9, fed depth by depth as drafting does
    for batch in (slice(1, 4), slice(4, 7), slice(7, 9), slice(9, 10)):
        engine.extend(torch.tensor(TREE_TOKENS[batch]), TREE_PARENTS[batch])
        twig_logits.append(engine.draft_logits(batch.stop - batch.start))
    twig_logits = torch.cat(twig_logits)  # [9, V]
    target = engine.target_logits()  # [10, V]
    linear = prefilled(model, twig, inputs, plan)
    start = linear.length
    for node in range(len(TREE_TOKENS)):
        path = sorted(ancestors(TREE_PARENTS, node))
        linear.extend(torch.tensor([TREE_TOKENS[i] for i in path]))
        torch.testing.assert_close(target[node], linear.target_logits()[-1], atol=1e-5, rtol=1e-5)
        if node:
            torch.testing.assert_close(twig_logits[node - 1], linear.draft_logits()[0], atol=1e-5, rtol=1e-5)
        linear.rollback(start)

    path = [0, 1, 4, 7, 9]
    engine.keep_tree(path, close=True)
    engine.extend(torch.tensor([3]))
    linear.extend(torch.tensor([TREE_TOKENS[i] for i in path] + [3]))
    torch.testing.assert_close(engine.target_logits()[-1], linear.target_logits()[-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(engine.draft_logits(), linear.draft_logits(), atol=1e-5, rtol=1e-5)
    assert [s.cache.length for s in (engine.lower, engine.draft, engine.middle, engine.top)] == \
        [s.cache.length for s in (linear.lower, linear.draft, linear.middle, linear.top)]


@pytest.mark.parametrize("method, R", [("none", None), ("twig", 64)])
def test_a_tree_verified_in_one_forward_equals_its_paths_fed_one_by_one(deep_model, make_prompt, pixel_values,
                                                                       method, R):
    inputs = deep_model.embed_multimodal(make_prompt("What is in the image?"), images=pixel_values[:1])
    check_tree_against_paths(deep_model, Twig.from_base(deep_model, K=2, T=3).eval(), inputs, PruningPlan(method, R))


def test_a_qwen_tree_sits_at_3d_positions_after_the_prompts_rope_delta(qwen_model, qwen_inputs, qwen_images):
    inputs = qwen_inputs("Describe the image in detail.", [qwen_images[0]])
    embedded = qwen_model.embed_multimodal(inputs["input_ids"], pixel_values=inputs["pixel_values"],
                                           image_grid_thw=inputs["image_grid_thw"])
    assert int(embedded.rope_deltas[0]) != 0  # so that a position off by the delta would show
    check_tree_against_paths(qwen_model, Twig.from_base(qwen_model, K=2, T=2).eval(), embedded,
                             PruningPlan("twig", retain_ratio=0.5))


# --- the acceptance rule ---------------------------------------------------------------------------------------------
P_TARGET = torch.tensor([0.45, 0.25, 0.15, 0.1, 0.05, 0.0])
Q_DRAFT = torch.tensor([0.05, 0.1, 0.4, 0.3, 0.05, 0.1])


def node_with_children(q, children):
    tree = DraftTree()
    tree.q[0] = q
    for token in children:
        tree.add(0, token, float(q[token]))
    return tree


def test_accept_tree_emits_the_targets_distribution_exactly_by_enumeration():
    """Over every ordered draw of c children without replacement from q, the law of what the rule emits (accept
    child i with min(1, p/q_i); else p <- norm(max(0, p - q_i)); at the end draw from p) is exactly p."""
    V, target, draft = len(P_TARGET), P_TARGET.double(), Q_DRAFT.double()
    target, draft = target / target.sum(), draft / draft.sum()  # sums of exactly 1 in float64
    for c in (1, 2, 3):
        law = torch.zeros(V, dtype=torch.float64)
        for draws in itertools.permutations(range(V), c):
            if any(Q_DRAFT[t] == 0 for t in draws):
                continue
            qs = node_with_children(draft, draws).child_distributions(0, list(range(1, c + 1)), False)
            chance = math.prod(float(qs[i, t]) for i, t in enumerate(draws))  # the ordered draw's probability
            p, still = target, 1.0  # `still`: probability that every child so far was rejected
            for i, t in enumerate(draws):
                accept = min(1.0, float(p[t] / qs[i, t]))
                law[t] += chance * still * accept
                still *= 1 - accept
                if still == 0:
                    break
                p = residual(p, qs[i])
            law += chance * still * p if still else 0
        torch.testing.assert_close(law, target, atol=1e-12, rtol=0)


def test_accept_tree_samples_the_targets_distribution():
    """accept_tree itself, with real random numbers, three children drawn without replacement (Gumbel-top-k)."""
    from twigvlm.inference.tree import draw_children

    g = torch.Generator().manual_seed(0)
    counts, n = torch.zeros(len(P_TARGET)), 12000
    for _ in range(n):
        children, _ = draw_children(Q_DRAFT[None], 3, g, greedy=False)
        tree = node_with_children(Q_DRAFT, children[0].tolist())
        qs = tree.child_distributions(0, [1, 2, 3], greedy=False)
        _, token = accept_tree(children[0], qs, P_TARGET, g)
        counts[token] += 1
    assert counts[-1] == 0  # p = 0: never emitted
    assert chisquare(counts[:-1].numpy(), (P_TARGET[:-1] * n).numpy()).pvalue > 0.001


def test_greedy_accept_tree_accepts_the_child_equal_to_the_targets_argmax():
    p = probabilities(torch.tensor([[0.0, 3.0, 1.0, 2.0]]), Sampling())[0]  # argmax 1
    tree = node_with_children(torch.full((4,), 0.25), [3, 1, 2])
    qs = tree.child_distributions(0, [1, 2, 3], greedy=True)
    assert accept_tree(torch.tensor([3, 1, 2]), qs, p, None, greedy=True) == (1, 1)
    qs = tree.child_distributions(0, [1, 3], greedy=True)
    assert accept_tree(torch.tensor([3, 2]), qs, p, None, greedy=True) == (None, 1)  # none: the target's own


# --- end to end ------------------------------------------------------------------------------------------------------
def generate(model, ids, pixels, strategy, pruning, R, max_new_tokens=40, **config):
    return model.generate(ids, images=pixels, max_new_tokens=max_new_tokens, eos_token_id=-1,
                          twigvlm_config=dict(generation_strategy=strategy, pruning=pruning, attention_rank=R,
                                              seed=0, **config))


@pytest.mark.parametrize("pruning, R", [("none", None), ("twig", 192), ("twig", 64), ("fastv", 64), ("random", 96)])
@pytest.mark.parametrize("make_twig", [good_twig, bad_twig])
def test_greedy_tree_ssd_equals_greedy_autoregressive(deep_model, make_prompt, pixel_values, pruning, R, make_twig):
    model = TwigVLM(deep_model, make_twig(deep_model, 2, 3))
    for image, question in ((0, "Describe the colors of the shapes in detail."), (2, "What is in the image?")):
        ids, pixels = make_prompt(question), pixel_values[image:image + 1]
        ar = generate(model, ids, pixels, "autoregressive", pruning, R)
        tree = generate(model, ids, pixels, "tree_speculative", pruning, R)
        assert tree.predicted_tokens.tolist() == ar.predicted_tokens.tolist()


@pytest.mark.parametrize("depth, top_k, nodes", [(1, 1, 1), (3, 2, 5), (8, 3, 40)])
def test_greedy_tree_ssd_equals_autoregressive_for_any_tree_shape(deep_model, make_prompt, pixel_values, depth, top_k,
                                                                  nodes):
    model = TwigVLM(deep_model, bad_twig(deep_model, 2, 3, seed=depth))
    ids, pixels = make_prompt("Describe the colors of the shapes in detail."), pixel_values[1:2]
    ar = generate(model, ids, pixels, "autoregressive", "twig", 64)
    tree = generate(model, ids, pixels, "tree_speculative", "twig", 64, tree_depth=depth, tree_top_k=top_k,
                    tree_nodes=nodes)
    assert tree.predicted_tokens.tolist() == ar.predicted_tokens.tolist()


def test_the_two_twigs_accept_long_and_short_tree_paths(deep_model, make_prompt, pixel_values):
    """The tree == AR tests above mean something only if one twig's trees are deep and the other's mostly not."""
    ids, pixels = make_prompt("Describe the colors of the shapes in detail."), pixel_values[:1]
    good, bad = (generate(TwigVLM(deep_model, make(deep_model, 2, 3)), ids, pixels, "tree_speculative", "twig", 64)
                 for make in (good_twig, bad_twig))
    assert good.mean_accepted_length > 4
    assert bad.mean_accepted_length < 1.6


def test_tree_generation_stops_at_eos_and_at_max_new_tokens_inside_a_tree(deep_model, make_prompt, pixel_values):
    model = TwigVLM(deep_model, good_twig(deep_model, 2, 3))
    ids, pixels = make_prompt("What is in the image?"), pixel_values[:1]
    free = generate(model, ids, pixels, "autoregressive", "none", None, max_new_tokens=16).predicted_tokens[0]
    whole = generate(model, ids, pixels, "tree_speculative", "none", None, max_new_tokens=16)
    assert whole.mean_accepted_length > 3  # so the tokens below fall inside trees, not on their roots
    for position in (3, 6, 9):
        eos = int(free[position])  # pretend this token is EOS
        out = model.generate(ids, images=pixels, max_new_tokens=16, eos_token_id=eos,
                             twigvlm_config=dict(generation_strategy="tree_speculative"))
        assert out.predicted_tokens[0].tolist() == free[:free.tolist().index(eos) + 1].tolist()
    for n in (1, 2, 5, 7, 11):
        out = generate(model, ids, pixels, "tree_speculative", "none", None, max_new_tokens=n)
        assert out.predicted_tokens[0].tolist() == free[:n].tolist()


def test_greedy_tree_ssd_leaves_the_global_rng_untouched(deep_model, make_prompt, pixel_values):
    model = TwigVLM(deep_model, bad_twig(deep_model, 2, 3))
    state = torch.get_rng_state()
    generate(model, make_prompt("What is in the image?"), pixel_values[:1], "tree_speculative", "twig", 64,
             max_new_tokens=12)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (3, 0.8)])
def test_sampled_tree_ssd_matches_the_targets_distribution_end_to_end(clip_dir, top_k, top_p):
    """A model with an 8-token vocabulary: the joint law of the first three generated tokens under tree SSD equals
    the target's exact law p(t1) p(t2 | t1) p(t3 | t1 t2), computed with plain forwards."""
    model = random_llava(TinySpec(num_layers=2, head_std=0.15, seed=3), vocab_size=8, clip_folder=clip_dir)
    drafting = TwigVLM(model, bad_twig(model, K=1, T=1, seed=5))
    sampling = Sampling(do_sample=True, temperature=1.0, top_k=top_k, top_p=top_p)
    ids = torch.tensor([[1, 5, 3, 6]])
    with torch.no_grad():
        def law(prefix):  # p(. | ids + prefix) [8]
            return probabilities(model(input_ids=torch.cat([ids, torch.tensor([prefix], dtype=torch.long)], 1)
                                       ).logits[0, -1:], sampling)[0]
        exact = torch.stack([law([])[a] * law([a])[b] * law([a, b]) for a in range(8) for b in range(8)]).flatten()
    g = torch.Generator().manual_seed(1)
    n, counts, accepted = 1000, torch.zeros(512), 0
    for _ in range(n):  # 4 tokens: a tree of depth 2 after the first, so t2 and t3 can both be accepted drafts
        out = drafting.generate(ids, max_new_tokens=4, do_sample=True, temperature=1.0, top_k=top_k, top_p=top_p,
                                eos_token_id=-1, generator=g,
                                twigvlm_config=dict(generation_strategy="tree_speculative", tree_depth=2,
                                                    tree_top_k=3, tree_nodes=5))
        t1, t2, t3 = out.predicted_tokens[0, :3].tolist()
        counts[t1 * 64 + t2 * 8 + t3] += 1
        accepted += out.num_accepted
    assert 0 < accepted < 2 * n  # drafts were both accepted and rejected (the tree offers two tokens per generation)
    support = exact > 0
    assert counts[~support].sum() == 0
    expected = exact[support] * n
    big = expected >= 5  # pool cells with small expectations so the chi-square approximation holds
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
def test_qwen_greedy_tree_ssd_equals_greedy_autoregressive(qwen_model, qwen_inputs, qwen_images, pruning, ratio,
                                                           make_twig):
    model = TwigVLM(qwen_model, make_twig(qwen_model, 2, 2))
    for images in ([qwen_images[2]], [qwen_images[1], qwen_images[3]]):  # one image, and two ranked together
        inputs = qwen_inputs("Describe the image in detail.", images)
        config = dict(pruning=pruning, retain_ratio=ratio, seed=0)
        ar = model.generate(**inputs, max_new_tokens=24, eos_token_id=-1,
                            twigvlm_config={**config, "generation_strategy": "autoregressive"})
        tree = model.generate(**inputs, max_new_tokens=24, eos_token_id=-1,
                              twigvlm_config={**config, "generation_strategy": "tree_speculative"})
        assert tree.predicted_tokens.tolist() == ar.predicted_tokens.tolist()


def test_the_qwen_twigs_accept_long_and_short_tree_paths(qwen_model, qwen_inputs, qwen_images):
    inputs = qwen_inputs("Describe the image in detail.", qwen_images[2:3])
    steps = {make.__name__: TwigVLM(qwen_model, make(qwen_model, 2, 2)).generate(
        **inputs, max_new_tokens=30, eos_token_id=-1,
        twigvlm_config={"pruning": "twig", "retain_ratio": 0.6, "generation_strategy": "tree_speculative"}
    ).mean_accepted_length for make in (good_twig, bad_twig)}
    assert steps["good_twig"] > 3 and steps["bad_twig"] < 1.6, steps
