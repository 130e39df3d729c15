"""ScienceQA: letters read as LLaVA reads them, accuracy on the image questions (SQA-IMG) and overall."""

import json

import pytest

from twigvlm.eval import eval_science_qa
from twigvlm.eval.eval_science_qa import choice_index


@pytest.mark.parametrize("text, choices, index", [
    ("B", 2, 1), ("C", 2, -1),  # a letter past the last choice is no choice
    ("A. the moon", 3, 0), ("The answer is C.", 3, 2), ("A.", 3, -1),
])
def test_choice_index(text, choices, index):
    assert choice_index(text, choices) == index


@pytest.fixture
def scienceqa(tmp_path, write_json, write_jsonl, make_answer):
    problems = {
        "1": {"question": "q1", "choices": ["x", "y"], "answer": 0, "image": "image.png"},
        "2": {"question": "q2", "choices": ["x", "y", "z"], "answer": 1, "image": "image.png"},
        "3": {"question": "q3", "choices": ["x", "y", "z"], "answer": 0, "image": None},
        "4": {"question": "q4", "choices": ["x", "y"], "answer": 1, "image": "image.png"},
        "5": {"question": "q5", "choices": ["x", "y"], "answer": 0, "image": None},  # train: not scored
    }
    write_json(tmp_path / "problems.json", problems)
    write_json(tmp_path / "pid_splits.json", {"train": ["5"], "test": ["1", "2", "3", "4"]})
    answers = [
        make_answer("1", "A", "<image>\nq1"),  # right
        make_answer("2", "The answer is B.", "<image>\nq2"),  # right
        make_answer("3", "C. z", "q3"),  # wrong (answer A)
        # "4" has no answer: wrong
        make_answer("5", "A", "q5"),
    ]
    return tmp_path, write_jsonl(tmp_path / "answers" / "llava-v1.5-7b.jsonl", answers)


def test_image_and_overall_accuracy_and_llava_output_files(scienceqa, capsys):
    base, result = scienceqa
    record = eval_science_qa.main([
        "--base-dir", str(base), "--result-file", str(result), "--output-file", str(base / "out.json"),
        "--output-result", str(base / "result.json"), "--scores-dir", str(base / "scores")])
    # official (LLaVA's IMG-Accuracy): answers whose prompt holds <image>, 1 and 2, both right -> 100 %;
    # strict: the test problems with an image, 1, 2 and the unanswered 4 -> 2 of 3, 66.67 %
    assert record["score"] == pytest.approx(100.0)
    metrics = record["metrics"]
    assert (metrics["img_accuracy"], metrics["img_correct"], metrics["img_count"]) == (pytest.approx(100.0), 2, 2)
    assert (metrics["img_accuracy_strict"], metrics["img_strict_correct"], metrics["img_strict_count"]) == (
        pytest.approx(200 / 3), 2, 3)
    # all test questions: 2 of 4 -> 50 %; one of them (4) unanswered
    assert (metrics["accuracy"], metrics["unanswered"]) == (pytest.approx(50.0), 1)
    output = json.loads((base / "out.json").read_text())
    assert [entry["question_id"] for entry in output["correct"]] == ["1", "2"]
    assert [entry["parsed_ans"] for entry in output["incorrect"]] == ["C", "FAILED"]
    assert set(output["correct"][0]) == {"question_id", "parsed_ans", "ground_truth", "question", "pred",
                                         "is_multimodal"}
    is_multimodal = {entry["question_id"]: entry["is_multimodal"] for entry in output["correct"] + output["incorrect"]}
    assert is_multimodal == {"1": True, "2": True, "3": False, "4": False}  # 4: no answer, LLaVA's prompt "Unknown"
    result_json = json.loads((base / "result.json").read_text())
    assert result_json["acc"] == pytest.approx(50.0) and result_json["count"] == 4
    assert result_json["results"] == {"1": 0, "2": 1, "3": 2, "4": -1}
    assert result_json["img_acc"] == pytest.approx(100.0)
    assert json.loads((base / "scores" / "sqa" / "llava-v1.5-7b.json").read_text())["score"] == pytest.approx(100.0)
