"""GQA: exact-match accuracy over the balanced questions, split into binary and open."""

import json

import pytest

from twigvlm.eval import eval_gqa
from twigvlm.eval.eval_gqa import gqa_scores


def question(answer, structural, balanced=True):
    return {"answer": answer, "isBalanced": balanced, "types": {"structural": structural, "semantic": "attr"},
            "question": "?", "imageId": "n1"}


QUESTIONS = {
    "01": question("red", "query"),  # open
    "02": question("table", "query"),  # open
    "03": question("yes", "verify"),  # binary
    "04": question("no", "logical"),  # binary
    "05": question("left", "choose", balanced=False),  # not balanced: not scored
}
PREDICTIONS = [{"questionId": "01", "prediction": "red"}, {"questionId": "02", "prediction": "desk"},
               {"questionId": "03", "prediction": "yes"}, {"questionId": "04", "prediction": "no"}]


def test_accuracy_binary_and_open():
    scores = gqa_scores(QUESTIONS, PREDICTIONS)
    assert scores["accuracy"] == pytest.approx(75.0)  # 3 of the 4 balanced questions
    assert scores["binary"] == pytest.approx(100.0)  # 03 and 04
    assert scores["open"] == pytest.approx(50.0)  # 01 right, 02 wrong
    assert scores["questions"] == 4


def test_exact_match_only():
    assert gqa_scores(QUESTIONS, [dict(p, prediction=p["prediction"].title()) for p in PREDICTIONS])["accuracy"] == 0


def test_every_balanced_question_needs_a_prediction():
    with pytest.raises(ValueError, match="no prediction"):
        gqa_scores(QUESTIONS, PREDICTIONS[1:])


def test_cli_with_tier_file_names_and_the_answers_file(tmp_path, write_json, write_jsonl, make_answer):
    write_json(tmp_path / "testdev_balanced_questions.json", QUESTIONS)
    write_json(tmp_path / "testdev_balanced_predictions.json", PREDICTIONS)
    answers = write_jsonl(tmp_path / "answers" / "llava_gqa_testdev_balanced" / "ckpt-R64" / "merge.jsonl",
                          [make_answer("01", "red")])
    eval_gqa.main(["--tier", "testdev_balanced", "--questions", str(tmp_path / "{tier}_questions.json"),
                   "--predictions", str(tmp_path / "{tier}_predictions.json"), "--answers-file", str(answers),
                   "--scores-dir", str(tmp_path / "scores")])
    saved = json.loads((tmp_path / "scores" / "gqa" / "ckpt-R64.json").read_text())  # named after merge.jsonl's folder
    assert saved["score"] == pytest.approx(75.0)


def test_cli_without_experiment_prints_only(tmp_path, write_json, capsys):
    write_json(tmp_path / "testdev_balanced_questions.json", QUESTIONS)
    write_json(tmp_path / "testdev_balanced_predictions.json", PREDICTIONS)
    eval_gqa.main(["--questions", str(tmp_path / "{tier}_questions.json"),
                   "--predictions", str(tmp_path / "{tier}_predictions.json"), "--scores-dir", str(tmp_path / "s")])
    assert "75.00" in capsys.readouterr().out
    assert not (tmp_path / "s").exists()
