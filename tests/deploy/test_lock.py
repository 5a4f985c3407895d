"""requirements.lock matches pyproject.toml, installs with hashes, and the image uses it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of every entry of the lock file."""
    entries: dict[str, tuple[str, list[str]]] = {}
    name = None
    for line in LOCK.read_text().splitlines():
        match = PIN.match(line)
        if match:
            name = canonicalize_name(match.group(1))
            entries[name] = (match.group(2), [])
        elif name is not None and "--hash=sha256:" in line:
            entries[name][1].append(line.split("--hash=sha256:")[1].split()[0])
    return entries


def runtime_requirements() -> list[Requirement]:
    """What the image installs: the dependencies, plus the otel extra when there is one."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"]) + list(project.get("optional-dependencies", {}).get("otel", []))
    return [Requirement(r) for r in requirements]


def test_every_runtime_requirement_is_pinned_within_its_specifier_and_hashed() -> None:
    entries = locked()
    assert entries, "requirements.lock holds no pins"
    for requirement in runtime_requirements():
        if requirement.marker is not None and not requirement.marker.evaluate({"python_version": "3.11"}):
            continue
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{requirement} is not in requirements.lock: run `make lock`"
        version = entries[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, outside pyproject's {requirement}: run `make lock`"
        )
    unhashed = [name for name, (_, hashes) in entries.items() if not hashes]
    assert unhashed == []


def test_the_lock_installs_with_required_hashes_and_nothing_else() -> None:
    """pip in --require-hashes mode refuses any dependency the lock does not pin with a hash,
    so a dry run that succeeds shows the lock is closed; its plan must be the lock, exactly."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--require-hashes", "--requirement", str(LOCK), "--report", "-"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    plan = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
            for item in json.loads(result.stdout)["install"]}
    assert plan == {name: version for name, (version, _) in locked().items()}


def test_make_lock_reproduces_the_committed_lock(tmp_path: Path) -> None:
    """`make lock` keeps every pin that still fits pyproject.toml, so on an up-to-date lock
    it writes the same file again; any change to the dependencies shows here."""
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is needed to run `make lock`")
    copy = tmp_path / "requirements.lock"
    shutil.copy(LOCK, copy)
    stamp = Path(sys.executable).parent.parent / ".installed"
    result = subprocess.run(
        [make, "--no-print-directory", "-o", str(stamp), "lock", f"LOCK_FILE={copy}",
         f"BIN={Path(sys.executable).parent}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert copy.read_text() == LOCK.read_text(), "requirements.lock is out of date: run `make lock`"


def test_the_image_installs_the_lock_with_hashes_then_the_project_without_dependencies() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^COPY requirements\.lock ", dockerfile, re.MULTILINE)
    locked_install = dockerfile.index("--require-hashes --requirement requirements.lock")
    project_install = dockerfile.index("pip install --no-compile --no-deps .")
    assert locked_install < project_install
    assert dockerfile.count("pip install") == 2  # nothing else resolves dependencies
