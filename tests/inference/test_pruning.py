"""The R rule (SPEC §2): R is the AVERAGE number of visual tokens per base layer."""

import math

import pytest

from twigvlm.inference.pruning import PruningError, PruningPlan, default_finalwipe_layer, keep_count

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
    plan = PruningPlan("twig", R=64, K=2)
    groups = plan.visual_tokens_per_group(N, V, has_twig=True)
    assert groups == {"layers_0_2": 576, "layers_2_24": 41, "layers_24_32": 0, "twig": 576,
                      "average": (2 * 576 + 22 * 41) / 32}
    assert math.isclose(groups["average"], 64.1875)


def test_no_pruning_keeps_every_visual_token_everywhere():
    groups = PruningPlan("none").visual_tokens_per_group(N, V, has_twig=False)
    assert groups == {"layers_0_32": 576, "average": 576.0}


def test_a_pruning_method_without_R_is_refused():
    with pytest.raises(PruningError, match="needs R"):
        PruningPlan("fastv")
