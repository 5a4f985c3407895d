"""requirements.lock and requirements-build.lock match pyproject.toml, install with hashes,
and the image uses them (its install step runs here, outside a container, too)."""

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
BUILD_LOCK = REPO / "requirements-build.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def locked(lock: Path = LOCK) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of every entry of a lock file."""
    entries: dict[str, tuple[str, list[str]]] = {}
    name = None
    for line in lock.read_text().splitlines():
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


def test_every_build_requirement_is_pinned_within_its_specifier_and_hashed() -> None:
    entries = locked(BUILD_LOCK)
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    for requirement in map(Requirement, build):
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{requirement} is not in requirements-build.lock: run `make lock`"
        assert requirement.specifier.contains(entries[name][0], prereleases=True), (
            f"requirements-build.lock pins {name}=={entries[name][0]}, outside {requirement}: run `make lock`"
        )
    assert [name for name, (_, hashes) in entries.items() if not hashes] == []


def test_make_lock_reproduces_the_committed_locks(tmp_path: Path) -> None:
    """`make lock` keeps every pin that still fits pyproject.toml, so on up-to-date locks
    it writes the same files again; any change to the dependencies shows here."""
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is needed to run `make lock`")
    copy, build_copy = tmp_path / "requirements.lock", tmp_path / "requirements-build.lock"
    shutil.copy(LOCK, copy)
    shutil.copy(BUILD_LOCK, build_copy)
    stamp = Path(sys.executable).parent.parent / ".installed"
    result = subprocess.run(
        [make, "--no-print-directory", "-o", str(stamp), "lock", f"LOCK_FILE={copy}",
         f"BUILD_LOCK_FILE={build_copy}", f"BIN={Path(sys.executable).parent}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert copy.read_text() == LOCK.read_text(), "requirements.lock is out of date: run `make lock`"
    assert build_copy.read_text() == BUILD_LOCK.read_text(), "requirements-build.lock is out of date: run `make lock`"


def _image_install_step() -> str:
    """The build stage's RUN command of the Dockerfile, as one shell command."""
    dockerfile = (REPO / "Dockerfile").read_text()
    build_stage = re.split(r"^FROM ", dockerfile, flags=re.MULTILINE)[1]
    run = build_stage[build_stage.index("\nRUN ") + len("\nRUN "):]
    lines = []
    for line in run.splitlines():
        lines.append(line.rstrip("\\").strip())
        if not line.endswith("\\"):
            break
    return " ".join(lines)


def test_the_image_installs_from_the_locks_only() -> None:
    step = _image_install_step()
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^COPY requirements\.lock requirements-build\.lock ", dockerfile, re.MULTILINE)
    installs = [part.strip() for part in step.split("&&") if " install " in part]
    assert installs == [
        "/opt/build/bin/pip install --no-compile --require-hashes --requirement requirements-build.lock",
        "/opt/venv/bin/pip install --no-compile --require-hashes --requirement requirements.lock",
        "/opt/venv/bin/pip install --no-compile --no-deps /opt/wheels/*.whl",
    ]  # nothing else resolves or fetches a package
    assert "pip wheel --no-deps --no-build-isolation" in step  # the wheel is built by the locked tools only


def test_the_image_install_step_runs_here_and_holds_exactly_the_lock(tmp_path: Path) -> None:
    """The build stage's RUN command, run on this machine with /opt moved to a temporary
    directory (from a copy of what the Dockerfile COPYs): the venv it leaves holds the lock's
    packages and the project, nothing else, and its entry point runs."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("requirements.lock", "requirements-build.lock", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "worker", source / "worker", ignore=shutil.ignore_patterns("__pycache__"))
    opt = tmp_path / "opt"
    opt.mkdir()
    python = shutil.which("python3.11") or sys.executable
    step = _image_install_step().replace("/opt/", f"{opt}/").replace("python -m venv", f"{python} -m venv")
    result = subprocess.run(["sh", "-c", step], cwd=source, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    venv_python = opt / "venv" / "bin" / "python"
    listed = subprocess.run(
        [str(venv_python), "-c", "import importlib.metadata as m; "
         "print('\\n'.join(f'{d.metadata[\"Name\"]}=={d.version}' for d in m.distributions()))"],
        capture_output=True, text=True, timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    installed = {canonicalize_name(line.split("==")[0]): line.split("==")[1] for line in listed.stdout.split()}
    project_version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    expected = {name: version for name, (version, _) in locked().items()}
    expected["stream-worker"] = project_version
    assert installed == expected  # pip and setuptools removed, no build tool left behind

    version = subprocess.run([str(opt / "venv" / "bin" / "stream-worker"), "--version"],
                             capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and project_version in version.stdout + version.stderr, version
