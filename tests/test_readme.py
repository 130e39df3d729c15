"""The README's Python examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_block(after_heading: str) -> str:
    """The first ```python block after a heading of the README."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(after_heading):]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.mark.needs_world
def test_the_quick_start_runs_as_written_on_the_bundled_world():
    code = python_block("## Quick start")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    description, statistics = result.stdout.strip().splitlines()[-2:]
    assert description.startswith("There are")
    assert "'average': 64" in statistics  # pruned to R=64 by the twig
