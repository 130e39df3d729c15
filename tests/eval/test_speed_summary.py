"""Speed summary of an answer file: means of the generators' per-answer timing statistics."""

import json

import pytest

from twigvlm.eval import speed
from twigvlm.eval.speed import speed_summary


def timing(tokens, decoding, prefill, acceptance, accepted_length, visual):
    return {"prefill_time": prefill, "decoding_time": decoding, "num_tokens_generated": tokens,
            "decoding_tokens_per_second": tokens / decoding, "acceptance_rate": acceptance,
            "mean_accepted_length": accepted_length, "visual_tokens_kept": {"layers_0_2": 576, "average": visual}}


@pytest.fixture
def answers_file(tmp_path, write_jsonl, make_answer):
    return write_jsonl(tmp_path / "answers.jsonl", [
        make_answer(1, "a", metadata=timing(10, 0.5, 0.1, 0.5, 2.0, 64.0)),  # 20 tok/s
        make_answer(2, "b", metadata=timing(30, 1.0, 0.3, 0.7, 3.0, 32.0)),  # 30 tok/s
        make_answer(3, "c", metadata=timing(20, 1.5, 0.2, None, None, 576.0)),  # autoregressive, 13.33 tok/s
        make_answer(4, "d"),  # no timings (an answer file of LLaVA's own): not counted
    ])


def test_means(answers_file):
    summary = speed_summary(answers_file)
    assert summary["answers"] == 3 and summary["tokens_generated"] == 60
    assert summary["tokens_per_second"] == pytest.approx(20.0)  # 60 tokens / (0.5 + 1.0 + 1.5) s
    assert summary["mean_tokens_per_second"] == pytest.approx((20 + 30 + 40 / 3) / 3)  # 21.11
    assert summary["end_to_end_tokens_per_second"] == pytest.approx(60 / 3.6)  # prefill 0.6 s added: 16.67
    assert summary["mean_prefill_time"] == pytest.approx(0.2)  # 0.6 s / 3
    assert summary["mean_acceptance_rate"] == pytest.approx(0.6)  # (0.5 + 0.7) / 2: nulls left out
    assert summary["mean_accepted_length"] == pytest.approx(2.5)  # (2 + 3) / 2
    assert summary["mean_visual_tokens"] == pytest.approx(224.0)  # (64 + 32 + 576) / 3


def test_no_timings_no_summary(tmp_path, write_jsonl, make_answer):
    assert speed_summary(write_jsonl(tmp_path / "a.jsonl", [make_answer(1, "a")])) == {}


def test_cli(answers_file, capsys):
    speed.main(["--answers-file", str(answers_file), "--json"])
    assert json.loads(capsys.readouterr().out)["tokens_per_second"] == pytest.approx(20.0)
    speed.main(["--answers-file", str(answers_file)])
    assert "tokens_per_second" in capsys.readouterr().out
