"""scripts/convert_mmvet_for_eval.py: answers to MM-Vet's grader input, speed kept in the score file."""

import json
import runpy
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "convert_mmvet_for_eval.py"


def test_results_file_and_speed(tmp_path, monkeypatch, write_jsonl, make_answer):
    timing = {"prefill_time": 0.1, "decoding_time": 2.0, "num_tokens_generated": 100,
              "decoding_tokens_per_second": 50.0, "acceptance_rate": 0.8, "mean_accepted_length": 3.0,
              "visual_tokens_kept": {"layers_0_2": 576, "layers_2_24": 41, "layers_24_32": 0, "average": 64.0}}
    src = write_jsonl(tmp_path / "answers" / "twig-R64.jsonl",
                      [make_answer(0, "A cat.", metadata=timing), make_answer(1, "Two\ndogs", metadata=timing)])
    dst = tmp_path / "results" / "twig-R64.json"
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--src", str(src), "--dst", str(dst),
                                      "--scores-dir", str(tmp_path / "scores")])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    assert json.loads(dst.read_text()) == {"v1_0": "A cat.", "v1_1": "Two\ndogs"}  # answers untouched
    assert dst.read_text().startswith('{\n  "v1_0"')  # indented as LLaVA writes it
    saved = json.loads((tmp_path / "scores" / "mmvet" / "twig-R64.json").read_text())
    assert saved["score"] is None  # graded by GPT-4 elsewhere
    assert saved["speed"]["tokens_per_second"] == pytest.approx(50.0)  # 200 tokens / 4 s
