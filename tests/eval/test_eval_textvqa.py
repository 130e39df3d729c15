"""TextVQA: answers matched to annotations through the prompt, scored by the VQA soft accuracy."""

import json

import pytest

from twigvlm.eval import eval_textvqa
from twigvlm.eval.eval_textvqa import question_of_prompt, vqa_accuracy

INSTRUCTION = "Answer the question using a single word or phrase."


@pytest.mark.parametrize("matches, accuracy", [
    (0, 0.0),
    # 1 of 10 match. The subset without it: 0 matches -> 0; the 9 with it: min(1, 1/3). (0 + 9 * 1/3) / 10 = 0.3
    (1, 0.3),
    # 2 match. 2 subsets leave one out: 1/3 each; 8 keep both: 2/3 each. (2 * 1/3 + 8 * 2/3) / 10 = 18/30 = 0.6
    (2, 0.6),
    # 3 match. 3 subsets hold 2: 2/3 each; 7 hold 3: 1 each. (3 * 2/3 + 7 * 1) / 10 = 9/10 = 0.9
    (3, 0.9),
    # 4 match: every subset holds at least 3. 1.0
    (4, 1.0),
])
def test_soft_accuracy_over_leave_one_out_subsets(matches, accuracy):
    annotators = ["coca cola"] * matches + ["pepsi"] * (10 - matches)
    assert vqa_accuracy("coca cola", annotators) == pytest.approx(accuracy)


def test_prediction_and_annotations_are_normalised_before_matching():
    # "Two." and "2" are both "2": 2 matches -> 0.6, as above
    assert vqa_accuracy("Two.", ["2", "two", "3", "3", "3", "3", "3", "3", "3", "3"]) == pytest.approx(0.6)


@pytest.mark.parametrize("prompt, question", [
    (f"What brand is it?\nReference OCR token: Coca, Cola\n{INSTRUCTION}", "what brand is it?"),
    (f"Reference OCR token: Coca\nWhat brand is it?\n{INSTRUCTION}", "what brand is it?"),
    (f"What brand is it?\n{INSTRUCTION}", "what brand is it?"),
    ("OCR tokens: coca cola Question: What brand is it? Short answer:", "what brand is it?"),
])
def test_question_read_back_from_each_llava_prompt_layout(prompt, question):
    assert question_of_prompt(prompt) == question


def test_unknown_prompt_layout_is_an_error():
    with pytest.raises(ValueError):
        question_of_prompt("What brand is it?")


@pytest.fixture
def annotation_file(tmp_path, write_json):
    data = [
        {"image_id": "img1", "question": "What brand is it?", "answers": ["coca cola"] * 2 + ["pepsi"] * 8},
        {"image_id": "img1", "question": "Is it open?", "answers": ["yes"] * 10},
        {"image_id": "img2", "question": "What number is it?", "answers": ["7"] * 10},
    ]
    return write_json(tmp_path / "TextVQA_0.5.1_val.json", {"dataset_name": "textvqa", "data": data})


def textvqa_answers(make_answer):
    return [
        make_answer("img1", "Coca Cola", f"What brand is it?\nReference OCR token: coca\n{INSTRUCTION}"),  # 0.6
        make_answer("img1", "Yes.", f"Is it open?\n{INSTRUCTION}"),  # 10 of 10 -> 1.0
        make_answer("img2", "six", f"What number is it?\n{INSTRUCTION}"),  # "6" matches nobody -> 0.0
    ]


def test_result_file_scored_printed_and_saved(tmp_path, annotation_file, write_jsonl, make_answer, capsys):
    result = write_jsonl(tmp_path / "answers" / "llava-v1.5-7b.jsonl", textvqa_answers(make_answer))
    eval_textvqa.main(["--annotation-file", str(annotation_file), "--result-file", str(result),
                       "--scores-dir", str(tmp_path / "scores")])
    # (0.6 + 1.0 + 0.0) / 3 = 0.5333 -> 53.33 %
    assert "53.33" in capsys.readouterr().out
    saved = json.loads((tmp_path / "scores" / "textvqa" / "llava-v1.5-7b.json").read_text())
    assert saved["score"] == pytest.approx(160 / 3)
    assert saved["metrics"]["samples"] == 3


def test_result_dir_scores_every_jsonl_as_its_own_experiment(tmp_path, annotation_file, write_jsonl, make_answer,
                                                            capsys):
    for name in ("r64", "r192"):
        write_jsonl(tmp_path / "answers" / f"{name}.jsonl", textvqa_answers(make_answer))
    (tmp_path / "answers" / "notes.txt").write_text("not an answer file")
    eval_textvqa.main(["--annotation-file", str(annotation_file), "--result-dir", str(tmp_path / "answers"),
                       "--scores-dir", str(tmp_path / "scores")])
    assert "Skipping notes.txt" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "scores" / "textvqa").iterdir()) == ["r192.json", "r64.json"]


def test_answer_without_annotation_is_an_error(tmp_path, annotation_file, write_jsonl, make_answer):
    result = write_jsonl(tmp_path / "a.jsonl", [make_answer("img9", "x", f"Where?\n{INSTRUCTION}")])
    with pytest.raises(KeyError, match="img9"):
        eval_textvqa.main(["--annotation-file", str(annotation_file), "--result-file", str(result),
                           "--scores-dir", str(tmp_path / "scores")])
