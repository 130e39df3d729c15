"""The seeds' generate() API: return values, statistics, configuration, refusals."""

import io

import pytest
import torch

from twigvlm.inference.generate import GenerationOutput, TwigVLM, TwigVLMConfig
from twigvlm.inference.streaming import GREEN, SpeculativeTextStreamer
from twigvlm.model.twig import Twig


@pytest.fixture
def with_twig(tiny_model):
    return TwigVLM(tiny_model, Twig.from_base(tiny_model, K=2, T=2).eval())


@pytest.fixture
def without_twig(tiny_model):
    return TwigVLM(tiny_model)


def test_without_twigvlm_config_it_returns_new_token_ids_like_llava(without_twig, make_prompt, pixel_values):
    out = without_twig.generate(make_prompt("What is in the image?"), images=pixel_values[:1], max_new_tokens=5,
                                do_sample=False, temperature=0, top_p=None, num_beams=1, use_cache=True)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 5)


def test_the_seed_api_returns_predicted_tokens_and_statistics(with_twig, tokenizer, make_prompt, pixel_values):
    cont = with_twig.generate(make_prompt("What is in the image?"), images=pixel_values[:1], do_sample=False,
                              temperature=0, max_new_tokens=16, eos_token_id=tokenizer.eos_token_id,
                              image_sizes=[(400, 300)],
                              twigvlm_config={"enable_pruning": True, "attention_rank": 192,
                                              "generation_strategy": "self_speculative"})
    assert isinstance(cont, GenerationOutput)
    text = tokenizer.batch_decode(cont.predicted_tokens, skip_special_tokens=True)[0]
    assert isinstance(text, str)
    assert cont.num_tokens_generated == cont.predicted_tokens.shape[1]
    assert cont.prefill_time > 0 and cont.decoding_time > 0 and cont.decoding_tokens_per_second > 0
    assert 0 <= cont.acceptance_rate <= 1 and cont.mean_accepted_length >= 1
    # N=8, K=2, F=6, V=576: rank = ceil((8*192 - 2*576) / 4) = 96
    assert cont.visual_tokens_kept == {"layers_0_2": 576, "layers_2_6": 96, "layers_6_8": 0, "twig": 576,
                                       "average": (2 * 576 + 4 * 96) / 8}


def test_the_early_readme_names_still_work(with_twig):
    cfg = TwigVLMConfig.from_dict({"enable_FastV": True, "attention_rank": 192}, has_twig=True)
    assert (cfg.pruning, cfg.R, cfg.generation_strategy) == ("fastv", 192, "self_speculative")
    cfg = TwigVLMConfig.from_dict({"enable_pruning": True, "avg_retain_rank": 64, "num_speculations": 3,
                                   "finalwipe_layer": 20, "draft_threshold": 0.5}, has_twig=False)
    assert (cfg.pruning, cfg.R, cfg.num_speculations, cfg.finalwipe_layer, cfg.generation_strategy) == \
        ("twig", 64, 3, 20, "autoregressive")


def test_an_unknown_config_key_is_named(with_twig):
    with pytest.raises(ValueError, match=r"unknown twigvlm_config key\(s\) \['attention_rnak'\]"):
        TwigVLMConfig.from_dict({"attention_rnak": 64}, has_twig=True)


def test_pruning_without_R_asks_for_it():
    with pytest.raises(ValueError, match="needs attention_rank"):
        TwigVLMConfig.from_dict({"enable_pruning": True}, has_twig=True)


def test_an_impossible_R_is_reported_with_the_valid_range(with_twig, make_prompt, pixel_values):
    with pytest.raises(ValueError, match=r"R must be in \(144, 432\]"):
        with_twig.generate(make_prompt("What is in the image?"), images=pixel_values[:1], max_new_tokens=2,
                           twigvlm_config={"enable_pruning": True, "attention_rank": 64})


@pytest.mark.parametrize("config", [{"pruning": "twig", "attention_rank": 300}, {"pruning": "fastv", "attention_rank": 300},
                                    {"pruning": "none"}])
def test_a_final_wipe_beyond_the_models_depth_is_reported_with_the_valid_range(with_twig, make_prompt, pixel_values,
                                                                               config):
    with pytest.raises(ValueError, match=r"finalwipe_layer F <= N, got K=2, F=12, N=8"):
        with_twig.generate(make_prompt("What is in the image?"), images=pixel_values[:1], max_new_tokens=2,
                           twigvlm_config={**config, "finalwipe_layer": 12, "generation_strategy": "self_speculative"})


@pytest.mark.parametrize("strategy", ["autoregressive", "self_speculative"])
@pytest.mark.parametrize("pruning", ["none", "twig"])
def test_greedy_decoding_leaves_torchs_global_random_state_untouched(with_twig, make_prompt, pixel_values, strategy,
                                                                      pruning):
    budget = {"attention_rank": 300} if pruning != "none" else {}
    before = torch.get_rng_state()
    with_twig.generate(make_prompt("Describe the colors of the shapes in detail."), images=pixel_values[:1],
                       max_new_tokens=12, eos_token_id=-1,
                       twigvlm_config={"generation_strategy": strategy, "pruning": pruning, "draft_threshold": 0.0,
                                       **budget})
    assert torch.equal(torch.get_rng_state(), before)


def test_speculative_decoding_without_a_twig_is_refused(without_twig, make_prompt, pixel_values):
    with pytest.raises(ValueError, match="needs a twig"):
        without_twig.generate(make_prompt("What is in the image?"), images=pixel_values[:1], max_new_tokens=2,
                            twigvlm_config={"generation_strategy": "self_speculative"})


def test_fastv_needs_no_twig(without_twig, make_prompt, pixel_values):
    out = without_twig.generate(make_prompt("What is in the image?"), images=pixel_values[:1], max_new_tokens=3,
                              twigvlm_config={"enable_FastV": True, "attention_rank": 192})
    assert out.visual_tokens_kept["layers_2_6"] == 96 and "twig" not in out.visual_tokens_kept


def test_a_batch_of_two_is_refused_with_an_explanation(without_twig, make_prompt, pixel_values):
    ids = make_prompt("What is in the image?").repeat(2, 1)
    with pytest.raises(ValueError, match="batch size 1"):
        without_twig.generate(ids, images=pixel_values[:2], max_new_tokens=2)


def test_beam_search_is_refused(without_twig, make_prompt, pixel_values):
    with pytest.raises(ValueError, match="beam search"):
        without_twig.generate(make_prompt("Hi"), images=pixel_values[:1], num_beams=3)


def test_sampling_with_a_seed_is_reproducible_and_differs_from_greedy(with_twig, make_prompt, pixel_values):
    ids, pixels = make_prompt("Describe the image in detail."), pixel_values[:1]
    run = lambda seed, strategy: with_twig.generate(  # noqa: E731
        ids, images=pixels, max_new_tokens=20, do_sample=True, temperature=1.5, top_p=0.95,
        twigvlm_config={"generation_strategy": strategy, "seed": seed}).predicted_tokens.tolist()
    greedy = with_twig.generate(ids, images=pixels, max_new_tokens=20).tolist()
    assert run(0, "self_speculative") == run(0, "self_speculative")
    assert run(0, "autoregressive") == run(0, "autoregressive")
    assert {str(run(s, "self_speculative")) for s in range(3)} != {str(greedy)}


def test_streaming_prints_accepted_drafts_in_green_and_the_same_text(with_twig, tokenizer, make_prompt,
                                                                      pixel_values):
    ids, pixels = make_prompt("Describe the image in detail."), pixel_values[:1]
    buffer = io.StringIO()
    streamer = SpeculativeTextStreamer(tokenizer, skip_prompt=True, color=True, file=buffer)
    cont = with_twig.generate(ids, images=pixels, max_new_tokens=24, streamer=streamer,
                              twigvlm_config={"generation_strategy": "self_speculative", "draft_threshold": 0.0})
    printed = buffer.getvalue()
    assert printed.replace(GREEN, "").replace("\033[0m", "").rstrip("\n") == \
        tokenizer.decode(cont.predicted_tokens[0], skip_special_tokens=True)
    assert cont.num_accepted == 0 or GREEN in printed


def test_a_prompt_longer_than_the_context_is_refused_by_name(with_twig, make_prompt, pixel_values):
    # issue 25: it gave a silent empty answer with nonsense statistics
    ids = make_prompt("What is in the image?")
    filler = torch.full((1, 4096 - 576), int(ids[0, 1]))  # with the 576 visual tokens, past the context of 4096
    long_ids = torch.cat([ids[:, :1], filler, ids[:, 1:]], dim=1)
    with pytest.raises(ValueError, match=r"the prompt is 4\d{3} tokens \(visual tokens included\).* context of 4096"):
        with_twig.generate(long_ids, images=pixel_values[:1], max_new_tokens=4,
                           twigvlm_config={"pruning": "twig", "attention_rank": 192})


@pytest.mark.slow
def test_compiled_greedy_decoding_gives_the_eager_tokens(without_twig, make_prompt, pixel_values, capfd):
    """torch.compile (inductor, static shapes) of the one-token steps: the same answer, token for token."""
    kwargs = dict(images=pixel_values[:1], max_new_tokens=6, eos_token_id=-1, do_sample=False,
                  twigvlm_config={"generation_strategy": "autoregressive"})
    prompt = make_prompt("What is in the image?")
    eager = without_twig.generate(prompt, **kwargs).predicted_tokens
    without_twig.compile_decoding = True
    compiled = without_twig.generate(prompt, **kwargs).predicted_tokens
    assert "torch.compile failed" not in capfd.readouterr().err
    assert torch.equal(compiled, eager)
