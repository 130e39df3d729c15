"""scripts/convert_mmbench_for_submission.py: the server's sheet (xlsx and tsv) and the local dev accuracy."""

import json
import runpy
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "convert_mmbench_for_submission.py"
SPLIT = "mmbench_dev_20230712"
TSV_COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
               "l2-category", "comment", "split"]


@pytest.fixture
def mmbench(tmp_path, write_jsonl, make_answer):
    rows = [  # question 0 and its circular copy 1000000 (options rotated), questions 1 and 2
        [0, "Which?", "hint", "cat", "dog", "cow", None, "A", "c", "b64", "s", "l2", "", "dev"],
        [1000000, "Which?", "hint", "dog", "cow", "cat", None, "C", "c", "b64", "s", "l2", "", "dev"],
        [1, "What?", None, "red", "blue", "green", "pink", "C", "c", "b64", "s", "l2", "", "dev"],
        [2, "Who?", None, "me", "you", None, None, "B", "c", "b64", "s", "l2", "", "dev"],
    ]
    tsv = tmp_path / f"{SPLIT}.tsv"
    pd.DataFrame(rows, columns=TSV_COLUMNS).to_csv(tsv, sep="\t", index=False)
    answers = [make_answer(0, "A"), make_answer(1000000, "A"), make_answer(1, "B", round_id=0),
               make_answer(1, "C", round_id=1)]  # --all-rounds: LLaVA's converter keeps the last line, round 1
    write_jsonl(tmp_path / "answers" / SPLIT / "ckpt.jsonl", answers)  # 2 has no answer
    argv = [str(SCRIPT), "--annotation-file", str(tsv), "--result-dir", str(tmp_path / "answers" / SPLIT),
                        "--upload-dir", str(tmp_path / "answers_upload" / SPLIT), "--experiment", "ckpt",
            "--scores-dir", str(tmp_path / "scores")]
    return tmp_path, argv


def test_sheet_columns_as_llava_writes_them(mmbench, monkeypatch):
    tmp_path, argv = mmbench
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    sheet = pd.read_excel(tmp_path / "answers_upload" / SPLIT / "ckpt.xlsx", engine="openpyxl")
    # hint, category, image, source, l2-category, comment dropped; prediction right after D
    assert list(sheet.columns) == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    assert sheet["prediction"].tolist()[:3] == ["A", "A", "C"] and pd.isna(sheet["prediction"][3])
    tsv = pd.read_table(tmp_path / "answers_upload" / SPLIT / "ckpt.tsv")
    assert list(tsv.columns) == list(sheet.columns)


def test_local_circular_accuracy(mmbench, monkeypatch, capsys):
    tmp_path, argv = mmbench
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    assert "each question's last round is submitted" in capsys.readouterr().out
    saved = json.loads((tmp_path / "scores" / "mmbench" / "ckpt.json").read_text())
    # question 0: right in its first copy, wrong in the rotated one -> wrong; question 1 right (its last round's
    # "C"; round 0's "B" would be wrong); question 2 unanswered -> wrong. 1 of 3 questions: 33.33 %
    assert saved["score"] == pytest.approx(100 / 3)
    assert (saved["metrics"]["questions"], saved["metrics"]["rows"], saved["metrics"]["answered"]) == (3, 4, 3)
