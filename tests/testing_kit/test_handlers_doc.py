"""docs/handlers.md cannot rot: every code block is either a file under docs/examples/
(the block must equal it; pytest runs the example tests, mypy checks the examples) or is
executed here as it stands. The README's Python blocks are executed too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "handlers.md"
EXAMPLES = REPO / "docs" / "examples"
BLOCK = re.compile(r"(?:<!-- file: (?P<file>[^ ]+) -->\n)?```(?P<lang>\w+)\n(?P<code>.*?)```", re.S)


def blocks(path: Path) -> list[tuple[str | None, str, str]]:
    return [(m["file"], m["lang"], m["code"]) for m in BLOCK.finditer(path.read_text(encoding="utf-8"))]


def untagged_python(path: Path) -> list[str]:
    return [code for file, lang, code in blocks(path) if file is None and lang == "python"]


def test_every_example_file_is_in_the_guide_verbatim() -> None:
    tagged = {file: code for file, _, code in blocks(GUIDE) if file is not None}
    on_disk = {str(p.relative_to(REPO)) for p in EXAMPLES.iterdir() if p.suffix in (".py", ".yaml")}
    assert set(tagged) == on_disk
    for file, code in tagged.items():
        assert (REPO / file).read_text(encoding="utf-8") == code, f"{file} and its block in {GUIDE.name} differ"


def test_the_example_tests_are_collected_by_the_suite() -> None:
    settings = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "docs/examples" in settings["testpaths"]


@pytest.mark.parametrize("code", untagged_python(GUIDE) + untagged_python(REPO / "README.md"))
def test_inline_python_blocks_run(code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    exec(compile(code, "<docs block>", "exec"), {"__name__": "docs_block"})


def mypy(*paths: Path) -> subprocess.CompletedProcess[str]:
    # From the repository root, so that mypy reads the package's source (and its settings);
    # the examples import each other as they do at run time, through MYPYPATH.
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", *map(str, paths)],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "MYPYPATH": str(EXAMPLES)})


def test_the_examples_type_check_strictly() -> None:
    result = mypy(*(p for p in EXAMPLES.iterdir() if p.suffix == ".py"))
    assert result.returncode == 0, result.stdout


def test_a_handler_with_the_wrong_signature_is_a_type_error(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "from worker import Handler, StreamRecord\n\n"
        "async def one_argument(record: StreamRecord) -> None:\n    return None\n\n"
        "handler: Handler = one_argument\n"
    )
    result = mypy(wrong)
    assert result.returncode == 1 and "Incompatible types in assignment" in result.stdout, result.stdout
