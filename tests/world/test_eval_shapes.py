"""Scoring the shapes test split: normalised exact match for short answers, facts for descriptions."""

import json

import pytest

from twigvlm.world.eval_shapes import main as eval_shapes, score
from twigvlm.world.build_data import main as build_data

THREE = ("There are three shapes in the image. In the top left there is a red circle. In the center there is a "
         "blue square. In the bottom right there is a yellow triangle.")
TWO = "There are two shapes in the image. At the top there is a green triangle. On the left there is an orange circle."

# (category, reference, the model's answer or None when it gave none)
HAND_MADE = [
    ("color", "Red", "red."),  # right
    ("color", "Blue", "Green"),  # wrong
    ("shape", "Circle", " The circle "),  # right
    ("count", "3", "three"),  # right
    ("exist", "No", "Yes"),  # wrong
    ("exist", "Yes", "yes"),  # right
    ("where", "Top left", "top left."),  # right
    ("where", "Center", None),  # wrong
    ("describe", THREE, THREE),  # exact: 3 facts of 3, none invented
    # not exact: 1 fact of 2 (a green square instead of a triangle) in 3 stated
    ("describe", TWO, "There are two shapes in the image. At the top there is a green square. On the left there is "
                      "an orange circle. On the right there is a purple square."),
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def files(tmp_path):
    questions = [{"question_id": i, "image": f"{i:06d}.png", "text": "...", "category": c}
                 for i, (c, _, _) in enumerate(HAND_MADE)]
    key = [{"question_id": i, "answer": ref, "category": c} for i, (c, ref, _) in enumerate(HAND_MADE)]
    answers = [{"question_id": i, "prompt": "...", "text": text, "answer_id": str(i), "model_id": "tiny",
                "metadata": {}} for i, (_, _, text) in enumerate(HAND_MADE) if text is not None]
    return (write_jsonl(tmp_path / "llava_shapes_test.jsonl", questions),
            write_jsonl(tmp_path / "answer.jsonl", answers), write_jsonl(tmp_path / "answers_gt.jsonl", key))


def short_answer_score(answer: str, reference: str) -> float:
    question = {"question_id": 7, "image": "000000.png", "text": "...", "category": "color"}
    return score([question], [{"question_id": 7, "text": answer}],
                 [{"question_id": 7, "answer": reference, "category": "color"}])["color"]


@pytest.mark.parametrize("answer, reference", [
    ("Red.", "red"), ("  Yes ", "Yes"), ("the circle", "Circle"), ("a square.", "Square"), ("three", "3"),
    ("Top Left", "Top left"),
])
def test_a_short_answer_is_right_whatever_its_case_space_trailing_period_articles_or_number_spelling(answer,
                                                                                                   reference):
    assert short_answer_score(answer, reference) == 100.0


@pytest.mark.parametrize("answer, reference", [("Top", "Top left"), ("2", "3"), ("Red circle", "Red")])
def test_a_short_answer_with_other_words_is_wrong(answer, reference):
    assert short_answer_score(answer, reference) == 0.0


def test_scores_of_a_hand_made_answer_file(files, tmp_path):
    record = eval_shapes(["--question-file", str(files[0]), "--result-file", str(files[1]),  # key found beside
                          "--scores-dir", str(tmp_path / "scores")])
    scores = record["metrics"]
    assert scores.pop("num_questions") == {"color": 2, "shape": 1, "count": 1, "exist": 2, "where": 2, "describe": 2}
    assert scores == pytest.approx({
        "color": 50.0, "shape": 100.0, "count": 100.0, "exist": 50.0, "where": 50.0,
        "short_accuracy": 100 * 5 / 8,
        "describe_fact_recall": 100 * (3 + 1) / (3 + 2),
        "describe_fact_precision": 100 * (3 + 1) / (3 + 3),
        "describe_exact_match": 50.0,
        "missing_answers": 1,
    })
    assert record["score"] == 62.5


def test_the_scores_are_written_as_json_named_after_the_experiment(files, tmp_path):
    record = eval_shapes(["--question-file", str(files[0]), "--result-file", str(files[1]),
                          "--answers-gt", str(files[2]), "--scores-dir", str(tmp_path / "scores")])
    written = json.loads((tmp_path / "scores" / "shapes" / "answer.json").read_text())
    assert written == record and written["experiment"] == "answer" and written["benchmark"] == "shapes"


def test_the_table_names_every_category_and_the_missing_answer(files, tmp_path, capsys):
    eval_shapes(["--question-file", str(files[0]), "--result-file", str(files[1]), "--experiment", "hand-made",
                 "--scores-dir", str(tmp_path / "scores")])
    printed = capsys.readouterr().out
    for word in ("color", "shape", "count", "exist", "where", "short", "describe fact recall", "62.5", "80.0",
                 "without an answer", "hand-made"):
        assert word in printed


def test_only_the_questions_of_the_question_file_are_scored(files):
    questions = [json.loads(line) for line in files[0].read_text().splitlines()][:2]
    key = [json.loads(line) for line in files[2].read_text().splitlines()]
    answers = [json.loads(line) for line in files[1].read_text().splitlines()]
    assert score(questions, answers, key) == {"color": 50.0, "short_accuracy": 50.0,
                                              "num_questions": {"color": 2}, "missing_answers": 0}


def test_the_answer_key_scores_full_marks_on_a_generated_test_split(tmp_path):
    eval_out = tmp_path / "eval"
    build_data(["--out", str(tmp_path / "train"), "--eval-out", str(eval_out), "--train-images", "1",
                "--test-images", "5", "--workers", "1"])
    key = [json.loads(line) for line in (eval_out / "answers_gt.jsonl").read_text().splitlines()]
    perfect = write_jsonl(tmp_path / "perfect.jsonl", [{"question_id": a["question_id"], "text": a["answer"]}
                                                      for a in key])
    scores = eval_shapes(["--question-file", str(eval_out / "llava_shapes_test.jsonl"), "--result-file", str(perfect),
                          "--scores-dir", str(tmp_path / "scores")])["metrics"]
    assert all(value == 100.0 for name, value in scores.items() if name not in ("num_questions", "missing_answers"))
    assert sum(scores["num_questions"].values()) == 35 and scores["missing_answers"] == 0


def test_a_chat_is_scored_per_turn_over_every_category_a_description_right_only_when_exact():
    # (turn, category, reference, answer): turn 0 right and wrong, turn 1 an exact and a near description
    lines = [(0, "count", "3", "three"), (0, "color", "Red", "Blue"), (1, "describe", THREE, THREE),
             (1, "describe", TWO, TWO.replace("green", "red")), (2, "where", "Top left", "top left")]
    questions = [{"question_id": i, "image": "000000.png", "text": "...", "category": c, "turn": t}
                 for i, (t, c, _, _) in enumerate(lines)]
    key = [{"question_id": i, "answer": ref, "category": c} for i, (_, c, ref, _) in enumerate(lines)]
    answers = [{"question_id": i, "text": text} for i, (_, _, _, text) in enumerate(lines)]
    assert score(questions, answers, key)["turn_accuracy"] == {"0": 50.0, "1": 50.0, "2": 100.0}
    assert "turn_accuracy" not in score([{k: v for k, v in q.items() if k != "turn"} for q in questions], answers, key)
