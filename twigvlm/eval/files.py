"""Reading and writing the evaluation's files: JSONL answer files, JSON results, experiment names."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# LLaVA's multi-GPU scripts write answers/<split>/<ckpt>/merge.jsonl; single-GPU ones answers/<ckpt>.jsonl.
MERGED_ANSWERS_STEM = "merge"


def read_jsonl(path: str | Path, skip_broken: bool = False) -> list[dict]:
    """One object per non-blank line. With skip_broken, lines that are not JSON (a run killed mid-write) are
    dropped with a warning instead of raising, as LLaVA's VQAv2 converter does."""
    rows, broken = [], 0
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if not skip_broken:
                raise ValueError(f"{path}, line {number}: not JSON ({err})") from None
            broken += 1
    if broken:
        print(f"warning: skipped {broken} broken line(s) in {path}", file=sys.stderr)
    return rows


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not JSON ({err})") from None


def write_json(path: str | Path, data: Any, indent: int | None = None) -> Path:
    """Write `data` as JSON, creating the parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=False), encoding="utf-8")
    return path


def experiment_name(answers_file: str | Path) -> str:
    """The experiment an answer file belongs to: its stem (answers/<ckpt>.jsonl), or its folder's name for a
    merged multi-GPU file (answers/<split>/<ckpt>/merge.jsonl)."""
    path = Path(answers_file)
    return path.parent.name if path.stem == MERGED_ANSWERS_STEM else path.stem
