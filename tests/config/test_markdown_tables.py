"""Every Markdown table in the README and docs/ renders: its header, delimiter row and body
rows have the same number of cells (GitHub drops a table whose delimiter row does not match)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_DELIMITER_CELL = re.compile(r"^\s*:?-{3,}:?\s*$")


def cells(line: str) -> list[str]:
    """The cells of a table row: split on pipes that are not escaped (``\\|``)."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return re.split(r"(?<!\\)\|", body)


def tables(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of each table outside code fences."""
    found: list[tuple[int, list[str]]] = []
    fenced = False
    current: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines() + [""], start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and line.lstrip().startswith("|"):
            if not current:
                start = number
            current.append(line)
            continue
        if current:
            found.append((start, current))
            current = []
    return found


def test_the_cell_splitter_counts_like_github() -> None:
    assert len(cells("| a | b |")) == 2
    assert len(cells("| `x \\| y` | b |")) == 2
    assert len(cells("| --- | --- | --- |")) == 3


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_table_has_matching_cell_counts(document: Path) -> None:
    problems = []
    for start, lines in tables(document.read_text(encoding="utf-8")):
        header = len(cells(lines[0]))
        if len(lines) < 2 or not all(_DELIMITER_CELL.match(cell) for cell in cells(lines[1])):
            problems.append(f"line {start}: no delimiter row under the header")
            continue
        for offset, line in enumerate(lines[1:], start=1):
            if len(cells(line)) != header:
                problems.append(f"line {start + offset}: {len(cells(line))} cells, the header has {header}")
    assert not problems, f"{document.name}: " + "; ".join(problems)
