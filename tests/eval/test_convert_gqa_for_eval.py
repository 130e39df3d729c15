"""scripts/convert_gqa_for_eval.py: answers to GQA's predictions file."""

import json
import runpy
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "convert_gqa_for_eval.py"


def run_script(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *map(str, args)])
    runpy.run_path(str(SCRIPT), run_name="__main__")


def test_predictions_file(tmp_path, monkeypatch, write_jsonl, make_answer):
    src = write_jsonl(tmp_path / "merge.jsonl", [make_answer("201", "Yes."), make_answer("202", "The Red one..")])
    dst = tmp_path / "data" / "testdev_balanced_predictions.json"
    run_script(monkeypatch, "--src", src, "--dst", dst)
    # lower-cased, trailing periods dropped; keys in this order
    assert json.loads(dst.read_text()) == [{"questionId": "201", "prediction": "yes"},
                                           {"questionId": "202", "prediction": "the red one"}]
    assert list(json.loads(dst.read_text())[0]) == ["questionId", "prediction"]
