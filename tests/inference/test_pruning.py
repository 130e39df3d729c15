"""The R rule (SPEC §2): R is the AVERAGE number of visual tokens per base layer."""

import math

import pytest

from twigvlm.inference.pruning import (LayerGroups, PruningError, PruningPlan, default_finalwipe_layer, keep_count,
                                      unpruned_report)

# LLaVA-1.5-7B: N=32 layers, K=2, final wipe F=24, V=576 visual tokens
N, K, F, V = 32, 2, 24, 576


@pytest.mark.parametrize("R, rank", [(64, 41), (128, 134), (192, 227)])
def test_paper_budgets_give_the_public_ranks(R, rank):
    # (32*64 - 2*576) / 22 = 896/22 = 40.7 -> 41; (4096-1152)/22 = 133.8 -> 134; (6144-1152)/22 = 226.9 -> 227
    assert keep_count(R, N, K, F, V) == rank


@pytest.mark.parametrize("R", [37, 64, 100, 128, 192, 300, 432])
def test_average_over_all_layers_is_R_rounded_up_to_whole_tokens(R):
    rank = keep_count(R, N, K, F, V)
    average = (K * V + (F - K) * rank) / N
    assert R <= average < R + (F - K) / N  # one more kept token moves the average by (F-K)/N


def test_R64_prunes_88_9_percent_of_the_visual_tokens():
    assert 1 - 64 / V == pytest.approx(0.889, abs=5e-4)


@pytest.mark.parametrize("R", [36, 20, 433, 576, 1000])
def test_an_unreachable_R_is_an_error_naming_the_range(R):
    # reachable: K*V/N = 36 < R <= F*V/N = 432
    with pytest.raises(PruningError, match=r"R must be in \(36, 432\]"):
        keep_count(R, N, K, F, V)


def test_finalwipe_layer_must_lie_above_K():
    with pytest.raises(PruningError, match="0 < K < finalwipe_layer"):
        keep_count(64, N, K=2, F=2, V=V)


def test_default_final_wipe_is_three_quarters_of_the_depth():
    assert default_finalwipe_layer(32) == 24 and default_finalwipe_layer(24) == 18


def test_visual_tokens_per_group_report_the_achieved_average():
    groups = PruningPlan("twig", R=64).groups(N, K)
    report = groups.report(groups.rank(64, V), V, has_twig=True)
    assert report == {"layers_0_2": 576, "layers_2_24": 41, "layers_24_32": 0, "twig": 576,
                      "average": (2 * 576 + 22 * 41) / 32}
    assert math.isclose(report["average"], 64.1875)


@pytest.mark.parametrize("rank", [1, 41, 134, 227, 396])
def test_the_achieved_average_of_a_rank_keeps_exactly_that_rank(rank):
    """The average a rank achieves is the R that asks for it (no separate inverse formula)."""
    groups = LayerGroups(N, K, F)
    assert groups.rank(groups.average(rank, V), V) == rank


def test_no_pruning_keeps_every_visual_token_everywhere():
    assert unpruned_report(N, V, has_twig=False) == {"layers_0_32": 576, "average": 576.0}


def test_a_pruning_method_without_a_budget_is_refused():
    with pytest.raises(PruningError, match="needs R"):
        PruningPlan("fastv")


@pytest.mark.parametrize("V", [576, 100, 1225])
def test_retain_ratio_is_R_as_a_share_of_each_prompts_visual_tokens(V):
    groups = LayerGroups(N, K, F)
    assert PruningPlan("twig", retain_ratio=0.25).rank(groups, V) == keep_count(0.25 * V, N, K, F, V)
    # 88.9% pruned: the ratio of R=64 on LLaVA's 576 tokens gives the public rank
    assert PruningPlan("twig", retain_ratio=64 / 576).rank(groups, 576) == 41


@pytest.mark.parametrize("ratio", [0.05, 0.0625, 0.76])
def test_an_unreachable_retain_ratio_is_an_error_naming_its_range(ratio):
    with pytest.raises(PruningError, match=r"retain_ratio=.* must be in \(0.0625, 0.75\]"):
        PruningPlan("twig", retain_ratio=ratio).rank(LayerGroups(N, K, F), V)


@pytest.mark.parametrize("ratio", [0, -0.5, 1.5])
def test_a_retain_ratio_outside_zero_to_one_is_refused_at_once(ratio):
    with pytest.raises(PruningError, match=r"in \(0, 1\]"):
        PruningPlan("twig", retain_ratio=ratio)


def test_R_and_retain_ratio_together_are_refused():
    with pytest.raises(PruningError, match="either R"):
        PruningPlan("twig", R=64, retain_ratio=0.1)
