"""`python -m twigvlm.world.report`: accuracy against R from the score files of shapes.sh runs."""

from __future__ import annotations

from twigvlm.eval.scores import save_scores
from twigvlm.world import report

RUNS = {"none_Rall": ("all", "none", 90.0), "twig_R64": ("64", "twig", 88.2), "fastv_R64": ("64", "fastv", 72.0),
        "twig_R192": ("192", "twig", 90.0), "twig_R64_short": ("64", "twig", 10.0)}


def write_runs(scores_dir):
    for name, (R, pruning, accuracy) in RUNS.items():
        subset = "_short" if name.endswith("_short") else ""
        strategy = "autoregressive" if pruning != "twig" else "self_speculative"
        save_scores("shapes", f"TwigVLM-shapes-tiny-K2-T3_R{R}_{pruning}_{strategy}{subset}", accuracy,
                    {"short_accuracy": accuracy}, scores_dir=scores_dir)


def test_the_table_gives_accuracy_and_accuracy_relative_to_no_pruning(tmp_path, capsys):
    write_runs(tmp_path)
    report.main(["--scores-dir", str(tmp_path), "--plot", str(tmp_path / "plot.png")])
    out = capsys.readouterr().out
    assert "88.2 (98.0)" in out and "72.0 (80.0)" in out  # 88.2 / 90 and 72 / 90
    lines = out.splitlines()
    assert lines.index(next(l for l in lines if l.strip().startswith("192"))) < \
        lines.index(next(l for l in lines if l.strip().startswith("64")))  # largest budget first
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_a_question_subset_is_reported_apart(tmp_path):
    write_runs(tmp_path)
    assert report.collect(tmp_path, "")[("twig", "64")] == 88.2
    assert report.collect(tmp_path, "_short") == {("twig", "64"): 10.0}


def test_the_chat_table_gives_each_turn_in_the_chat_and_alone(tmp_path, capsys):
    for subset, turns in (("_chat", {"0": 90.0, "1": 80.0}), ("_chat_alone", {"0": 92.0, "1": 84.0})):
        save_scores("shapes", f"TwigVLM-shapes-tiny-K2-T3_R64_twig_autoregressive{subset}", 0.0,
                    {"turn_accuracy": turns}, scores_dir=tmp_path)
    report.main(["--scores-dir", str(tmp_path), "--chats", "--markdown"])
    out = capsys.readouterr().out
    assert "| TTP (twig) R=64 | 90.0 / 92.0 | 80.0 / 84.0 | 85.0 / 88.0 |" in out
    assert "| run | turn 1 | turn 2 | all turns |" in out
