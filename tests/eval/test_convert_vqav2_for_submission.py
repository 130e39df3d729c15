"""scripts/convert_vqav2_for_submission.py: a test-dev run turned into a whole-test2015 submission."""

import json
import runpy
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "convert_vqav2_for_submission.py"
SPLIT = "llava_vqav2_mscoco_test-dev2015"


def test_submission_covers_test2015_in_its_order(tmp_path, monkeypatch, write_jsonl, make_answer):
    vqav2 = tmp_path / "vqav2"
    # test2015 holds 4 questions; test-dev (what LLaVA answers) holds 3 and 1 of them
    write_jsonl(vqav2 / "llava_vqav2_mscoco_test2015.jsonl",
                [{"question_id": qid, "image": f"{qid}.jpg", "text": "?"} for qid in (4, 3, 2, 1)])
    merge = write_jsonl(vqav2 / "answers" / SPLIT / "ckpt" / "merge.jsonl",
                        [make_answer(1, "Two."), make_answer(3, "The Dog"), make_answer(99, "yes")])
    with merge.open("a") as f:
        f.write('{"question_id": 5, "te')  # a chunk killed mid-line: skipped, not fatal
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--dir", str(vqav2), "--split", SPLIT, "--ckpt", "ckpt",
                                      "--scores-dir", str(tmp_path / "scores")])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    submission = json.loads((vqav2 / "answers_upload" / SPLIT / "ckpt.json").read_text())
    # every test2015 id, in the split's order; answers normalised; "" where unanswered; id 99 dropped
    assert submission == [{"question_id": 4, "answer": ""}, {"question_id": 3, "answer": "dog"},
                          {"question_id": 2, "answer": ""}, {"question_id": 1, "answer": "2"}]
    assert list(submission[0]) == ["question_id", "answer"]
    saved = json.loads((tmp_path / "scores" / "vqav2" / "ckpt.json").read_text())
    assert saved["score"] is None and saved["metrics"] == {"answers": 3, "questions": 4, "answered": 2}
