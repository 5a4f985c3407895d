"""The benchmarks do not import the test suite: what both need lives in worker/local/ (the
local endpoints) or in bench/ (measuring tools the tests may use)."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_benchmark_module_imports_tests() -> None:
    files = sorted(BENCH.glob("*.py"))
    assert len(files) > 5
    offenders = {path.name: sorted(name for name in imported_modules(path) if name.split(".")[0] == "tests")
                 for path in files}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_no_benchmark_config_names_a_test_handler() -> None:
    # Handler import strings run in the worker processes a benchmark starts.
    texts = {path.name: path.read_text() for path in BENCH.glob("*.py")}
    assert [name for name, text in texts.items() if '"tests.' in text or "'tests." in text] == []
