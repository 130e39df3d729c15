"""Helpers of the benchmark-scorer tests: small LLaVA-format files written into tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest


def answer(question_id: Any, text: str, prompt: str = "", metadata: dict | None = None, **extra: Any) -> dict:
    """One line of an answer file, as LLaVA's generators write it."""
    return {"question_id": question_id, "prompt": prompt, "text": text, "answer_id": f"a{question_id}",
            "model_id": "tiny", "metadata": metadata or {}, **extra}


@pytest.fixture
def write_jsonl() -> Callable[[Path, list[dict]], Path]:
    def write(path: Path, rows: list[dict]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return path

    return write


@pytest.fixture
def write_json() -> Callable[[Path, Any], Path]:
    def write(path: Path, data: Any) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
        return path

    return write


@pytest.fixture
def make_answer() -> Callable[..., dict]:
    return answer
