"""Score files: names, where they go, what they hold, server scores, the console table."""

import json

import pytest

from twigvlm.eval import scores
from twigvlm.eval.files import experiment_name, read_jsonl
from twigvlm.eval.scores import load_scores, record_score, save_scores
from twigvlm.eval.table import format_table


@pytest.mark.parametrize("path, name", [
    ("playground/data/eval/textvqa/answers/llava-v1.5-7b.jsonl", "llava-v1.5-7b"),  # single-GPU layout
    ("playground/data/eval/gqa/answers/llava_gqa_testdev_balanced/twig-R64/merge.jsonl", "twig-R64"),  # merged
])
def test_experiment_name_from_llava_layouts(path, name):
    assert experiment_name(path) == name


def test_saved_where_and_what(tmp_path, write_jsonl, make_answer):
    timed = {"prefill_time": 0.1, "decoding_time": 1.0, "num_tokens_generated": 8, "decoding_tokens_per_second": 8.0}
    answers = write_jsonl(tmp_path / "a.jsonl", [make_answer(1, "x", metadata=timed)])
    save_scores("pope", "exp", 85.9, {"f1": 85.9}, answers, tmp_path / "scores")
    saved = json.loads((tmp_path / "scores" / "pope" / "exp.json").read_text())
    assert saved["benchmark"] == "pope" and saved["experiment"] == "exp" and saved["score"] == 85.9
    assert saved["answers_file"] == str(answers) and saved["speed"]["tokens_per_second"] == 8.0


def test_no_speed_key_without_timings(tmp_path):
    save_scores("gqa", "exp", 61.9, {}, None, tmp_path)
    assert "speed" not in json.loads((tmp_path / "gqa" / "exp.json").read_text())


def test_unknown_benchmark_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark"):
        save_scores("vizwiz", "exp", 1.0, {}, None, tmp_path)


def test_server_score_recorded_beside_the_speed(tmp_path):
    save_scores("vqav2", "exp", None, {"answers": 3}, None, tmp_path)
    scores.main(["--benchmark", "vqav2", "--experiment", "exp", "--score", "78.5", "--scores-dir", str(tmp_path)])
    saved = load_scores(tmp_path)["exp"]["vqav2"]
    assert (saved["score"], saved["score_source"], saved["metrics"]) == (78.5, "server", {"answers": 3})
    assert record_score("mmvet", "new", 31.1, tmp_path)["score"] == 31.1  # no file yet: created


def test_table_alignment_and_missing_values():
    # names left-aligned, numbers right-aligned with 2 decimals, a missing value as "-"
    lines = format_table(["name", "GQA", "MME"], [["base", 61.944, 1862.0], ["r64", None, 1700]]).splitlines()
    assert lines == ["name    GQA      MME",
                     "----  -----  -------",
                     "base  61.94  1862.00",
                     "r64       -     1700"]


def test_broken_lines_skipped_only_when_asked(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n')
    assert read_jsonl(path, skip_broken=True) == [{"a": 1}]
    with pytest.raises(ValueError, match=r"a.jsonl, line 3: not JSON"):
        read_jsonl(path)
