"""Plain-text tables for the scorers' console output."""

from __future__ import annotations

from typing import Any, Sequence


def format_cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 2) -> str:
    """Columns padded to their widest cell: the first (the row names) aligned left, the numbers right."""
    cells = [list(header)] + [[format_cell(value, digits) for value in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                         for column, (cell, width) in enumerate(zip(row, widths)))

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(cells[0]), rule] + [line(row) for row in cells[1:]])
