"""`python -m twigvlm.eval.bench_speed --json`: one JSON object with a run per decoding setup, each SSD run checked
against the AR run with the same pruning."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from twigvlm.eval.bench_speed import OpCounter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result() -> dict:
    out = subprocess.run([sys.executable, "-m", "twigvlm.eval.bench_speed", "--random-model", "tiny", "--device",
                          "cpu", "--prompts", "2", "--repeats", "2", "--max-new-tokens", "12", "--json"],
                         capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout)  # stdout is the JSON object and nothing else


def test_every_setup_and_the_transformers_reference_is_run(result):
    setups = {(run["strategy"], run["pruning"]) for run in result["runs"]}
    assert setups == {("autoregressive", "none"), ("autoregressive", "twig"), ("self_speculative", "twig"),
                      ("self_speculative", "none"), ("tree_speculative", "twig"), ("tree_speculative", "none"),
                      ("transformers", "none")}
    for run in result["runs"]:
        assert run["tokens_per_second"] > 0 and run["prefill_seconds"] > 0
        passes = 1 if run["strategy"] == "transformers" else 2  # our setups run interleaved, --repeats times
        assert run["tokens"] == passes * 2 * 12  # random models generate max-new-tokens
        assert run["speedup"] > 0
        assert run["R"] == (64 if run["pruning"] == "twig" else None)


def test_speculative_runs_report_acceptance_and_match_autoregressive(result):
    for run in result["runs"]:
        if run["strategy"] in ("self_speculative", "tree_speculative"):
            assert 0 <= run["acceptance_rate"] <= 1 and run["mean_accepted_length"] >= 1
            assert run["same_output_as_autoregressive"] is True
        else:
            assert run["acceptance_rate"] is None and run["same_output_as_autoregressive"] is None


def test_every_run_counts_the_aten_ops_and_host_syncs_of_its_decoding(result):
    runs = {(run["strategy"], run["pruning"]): run for run in result["runs"] if run["strategy"] != "transformers"}
    for run in runs.values():
        # 24 decoder layers, each at least its 2 norms, 7 projections and an attention
        assert run["aten_ops_per_token"] > 24 * 10 and run["host_syncs_per_token"] >= 0
    ar, pruned = runs["autoregressive", "none"], runs["autoregressive", "twig"]
    assert ar["host_syncs_per_token"] >= 1  # each new token is read back to decide whether to stop
    # a decoding step is the same ops, pruned or not, but for one: pruned, layers [K, N) are two stacks, [K, F) and
    # [F, N), and each stack's cache makes the index of its new slots once per step (unpruned, [F, N) is empty)
    steps = 12 - 1  # the first token comes from the prefill
    assert pruned["aten_ops_per_token"] - ar["aten_ops_per_token"] == pytest.approx(steps / 12)


def test_the_op_counter_counts_each_dispatched_op_and_each_read_back():
    x = torch.ones(3)
    with OpCounter() as counter:
        y = (x + 1).sum()  # add, sum
        float(y)  # _local_scalar_dense: a host sync
        x.nonzero()  # a data-dependent shape: a host sync
    assert (counter.ops, counter.syncs) == (4, 2)


def test_pruned_runs_keep_R_visual_tokens_per_layer_on_average(result):
    averages = {run["pruning"]: run["visual_tokens_average"] for run in result["runs"]}
    assert averages["twig"] == pytest.approx(64, abs=0.5) and averages["none"] == 576


def test_speedups_are_relative_to_autoregressive_without_pruning(result):
    baseline = result["runs"][0]
    assert (baseline["strategy"], baseline["pruning"], baseline["speedup"]) == ("autoregressive", "none", 1.0)


def test_a_qwen_shaped_model_runs_every_setup_with_a_retain_ratio():
    out = subprocess.run([sys.executable, "-m", "twigvlm.eval.bench_speed", "--random-model", "qwen-tiny", "--device",
                          "cpu", "--prompts", "1", "--repeats", "1", "--max-new-tokens", "8", "--retain-ratio", "0.2",
                          "--json"], capture_output=True, text=True, timeout=600, check=True)
    result = json.loads(out.stdout)
    assert result["family"] == "qwen2_5_vl"
    runs = {(run["strategy"], run["pruning"]): run for run in result["runs"]}
    assert runs["autoregressive", "none"]["visual_tokens_average"] == 256  # a 448 x 448 px image
    assert runs["self_speculative", "twig"]["R"] == pytest.approx(0.2 * 256)
    assert all(run["same_output_as_autoregressive"] for run in result["runs"]
               if run["strategy"] in ("self_speculative", "tree_speculative"))
