"""POPE: LLaVA's yes/no reading, the confusion matrix and its metrics per category, F1 averaged."""

import json
import random

import pytest

from twigvlm.eval import eval_pope
from twigvlm.eval.eval_pope import says_yes

INSTRUCTION = "Answer the question using a single word or phrase."


@pytest.mark.parametrize("answer, yes", [
    ("Yes", True), ("No", False), ("no", False),
    ("Yes, there is a dog.", True),
    ("No, there is not.", False),
    ("There is no dog in the image.", False),
    ("Yes. But it is not a dog.", True),  # only the first sentence counts
    ("not sure", False),
    ("NO", True), ("Nope", True),  # only the words "no", "No", "not" say no
])
def test_yes_no_reading(answer, yes):
    assert says_yes(answer) is yes


# random: 10 questions. Labels and answers give TP=4 (yes/yes), FP=1 (no/yes), TN=3 (no/no), FN=2 (yes/no).
RANDOM = [("yes", "Yes")] * 4 + [("no", "Yes")] + [("no", "No")] * 3 + [("yes", "No")] * 2
# adversarial: 4 questions, all right: TP=2, TN=2.
ADVERSARIAL = [("yes", "Yes"), ("no", "No"), ("yes", "Yes"), ("no", "No")]


@pytest.fixture
def pope_files(tmp_path, write_jsonl, make_answer):
    questions, labels, answers = [], {}, []
    for category, cases in (("adversarial", ADVERSARIAL), ("random", RANDOM)):
        labels[category] = []
        for position, (label, said) in enumerate(cases):
            qid, image, text = len(questions) + 1, f"COCO_{position // 2}.jpg", f"Is there a thing {position}?"
            questions.append({"question_id": qid, "image": image, "text": f"{text}\n{INSTRUCTION}",
                              "category": category})
            labels[category].append({"question_id": position + 1, "image": image, "text": text, "label": label})
            answers.append(make_answer(qid, said, f"{text}\n{INSTRUCTION}"))
    random.Random(0).shuffle(answers)  # answers are found by id, whatever their order
    for category, rows in labels.items():
        write_jsonl(tmp_path / "coco" / f"coco_pope_{category}.json", rows)
    return {"questions": write_jsonl(tmp_path / "llava_pope_test.jsonl", questions),
            "answers": write_jsonl(tmp_path / "answers" / "llava-v1.5-7b.jsonl", answers),
            "coco": tmp_path / "coco", "labels": labels}


def run(pope_files, tmp_path):
    return eval_pope.main(["--annotation-dir", str(pope_files["coco"]), "--question-file",
                           str(pope_files["questions"]), "--result-file", str(pope_files["answers"]),
                           "--scores-dir", str(tmp_path / "scores")])


def test_hand_made_confusion_matrix(pope_files, tmp_path):
    scores = run(pope_files, tmp_path)["metrics"]
    assert {k: scores["random"][k] for k in ("TP", "FP", "TN", "FN")} == {"TP": 4, "FP": 1, "TN": 3, "FN": 2}
    assert scores["random"]["samples"] == 10
    assert scores["random"]["accuracy"] == pytest.approx(70.0)  # (4 + 3) / 10
    assert scores["random"]["precision"] == pytest.approx(80.0)  # 4 / (4 + 1)
    assert scores["random"]["recall"] == pytest.approx(200 / 3)  # 4 / (4 + 2) = 66.67
    assert scores["random"]["f1"] == pytest.approx(800 / 11)  # 2 * 0.8 * (2/3) / (0.8 + 2/3) = 8/11 = 72.73
    assert scores["random"]["yes_ratio"] == pytest.approx(50.0)  # (4 + 1) yes answers / 10
    assert scores["adversarial"]["f1"] == pytest.approx(100.0)


def test_headline_is_f1_averaged_over_categories_and_saved(pope_files, tmp_path):
    record = run(pope_files, tmp_path)
    # (100 + 72.73) / 2 = 86.36
    assert record["score"] == pytest.approx((100 + 800 / 11) / 2)
    saved = json.loads((tmp_path / "scores" / "pope" / "llava-v1.5-7b.json").read_text())
    assert saved["score"] == pytest.approx(record["score"])
    assert set(saved["metrics"]) == {"adversarial", "random", "average"}


def test_label_file_not_in_question_order_is_an_error(pope_files, tmp_path, write_jsonl):
    write_jsonl(pope_files["coco"] / "coco_pope_random.json", pope_files["labels"]["random"][::-1])
    with pytest.raises(ValueError, match="not the label file's question"):
        run(pope_files, tmp_path)
