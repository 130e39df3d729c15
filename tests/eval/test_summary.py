"""The summary table: one row per experiment, a column per scored benchmark, RelAcc against a baseline."""

import json

import pytest

from twigvlm.eval import summary
from twigvlm.eval.scores import save_scores
from twigvlm.eval.summary import relative_accuracy


def test_relative_accuracy_arithmetic():
    baseline = {"GQA": 60.0, "MME": 1800.0, "TextVQA": 50.0}
    # 57/60 = 0.95, 1710/1800 = 0.95, 49/50 = 0.98 -> mean 0.96 -> 96 %
    assert relative_accuracy({"GQA": 57.0, "MME": 1710.0, "TextVQA": 49.0}, baseline) == (
        pytest.approx(96.0), ["GQA", "MME", "TextVQA"])
    # only the benchmarks both have: 54/60 = 0.9 and 1800/1800 = 1.0 -> 95 %
    assert relative_accuracy({"GQA": 54.0, "MME": 1800.0, "TextVQA": None}, baseline) == (
        pytest.approx(95.0), ["GQA", "MME"])


@pytest.fixture
def scores_dir(tmp_path, write_jsonl, make_answer):
    for experiment, gqa, mme, textvqa in (("base", 60.0, 1800.0, 50.0), ("r64", 57.0, 1710.0, 49.0),
                                          ("r128", 54.0, 1800.0, None)):
        save_scores("gqa", experiment, gqa, {}, None, tmp_path)
        save_scores("mme", experiment, mme, {}, None, tmp_path)
        if textvqa is not None:
            save_scores("textvqa", experiment, textvqa, {}, None, tmp_path)
    timed = {"prefill_time": 0.1, "decoding_time": 2.0, "num_tokens_generated": 120}
    answers = write_jsonl(tmp_path / "mmvet.jsonl", [make_answer(1, "x", metadata=timed)])
    save_scores("mmvet", "r64", None, {}, answers, tmp_path)  # speed only: no MM-Vet score column
    return tmp_path


def test_table(scores_dir, capsys):
    summary.main(["--scores-dir", str(scores_dir), "--baseline", "base"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["experiment", "GQA", "MME", "TextVQA", "RelAcc", "%", "MM-Vet", "tok/s"]
    assert lines[2].split() == ["base", "60.00", "1800.00", "50.00", "100.00", "-"]
    assert lines[3].split() == ["r128", "54.00", "1800.00", "-", "95.00", "-"]
    assert lines[4].split() == ["r64", "57.00", "1710.00", "49.00", "96.00", "60.00"]  # 120 tokens / 2 s


def test_json(scores_dir, capsys):
    summary.main(["--scores-dir", str(scores_dir), "--baseline", "base", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["benchmarks"] == ["GQA", "MME", "TextVQA"] and printed["baseline"] == "base"
    r64 = next(entry for entry in printed["experiments"] if entry["experiment"] == "r64")
    assert r64["scores"] == {"GQA": 57.0, "MME": 1710.0, "TextVQA": 49.0}
    assert r64["relative_accuracy"] == pytest.approx(96.0) and r64["tokens_per_second"] == pytest.approx(60.0)


def test_without_baseline_no_relacc_column(scores_dir, capsys):
    summary.main(["--scores-dir", str(scores_dir)])
    assert "RelAcc" not in capsys.readouterr().out


def test_unknown_baseline_is_an_error(scores_dir):
    with pytest.raises(ValueError, match="baseline"):
        summary.main(["--scores-dir", str(scores_dir), "--baseline", "nope"])


def test_mme_perception_follows_mme_and_stays_out_of_the_relative_accuracy(tmp_path, capsys):
    for experiment, gqa, total, perception in (("base", 60.0, 1800.0, 1500.0), ("r64", 57.0, 1710.0, 1200.0)):
        save_scores("gqa", experiment, gqa, {}, None, tmp_path)
        save_scores("mme", experiment, total, {"perception": perception, "total": total}, None, tmp_path)
    summary.main(["--scores-dir", str(tmp_path), "--baseline", "base"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["experiment", "GQA", "MME", "MME-P", "RelAcc", "%"]
    # 57/60 = 0.95 and 1710/1800 = 0.95 -> 95 % (with MME-P's 1200/1500 = 0.8 it would be 90 %)
    assert lines[3].split() == ["r64", "57.00", "1710.00", "1200.00", "95.00"]
