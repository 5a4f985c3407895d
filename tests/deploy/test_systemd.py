"""deploy/systemd/stream-worker.service: the key settings, and `systemd-analyze verify` where
the machine has it (Debian's systemd package does; the INI checks run everywhere)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

from tests.deploy.deploy_files import DEPLOY
from worker.config import WorkerSettings

UNIT = DEPLOY / "systemd" / "stream-worker.service"
INSTALLED_BIN = "/opt/stream-worker/venv/bin/stream-worker"


def _unit() -> configparser.ConfigParser:
    # systemd units allow repeated keys (SystemCallFilter=, Environment=): keep them all.
    class MultiDict(dict[str, list[str]]):
        def __setitem__(self, key: str, value: list[str] | str) -> None:  # type: ignore[override]
            if isinstance(value, list) and key in self:
                super().__getitem__(key).extend(value)
            else:
                super().__setitem__(key, value)  # type: ignore[arg-type]

    parser = configparser.RawConfigParser(dict_type=MultiDict, strict=False, empty_lines_in_values=False)  # type: ignore[arg-type]
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def _values(unit: configparser.ConfigParser, section: str, key: str) -> list[str]:
    raw = unit[section][key]
    return [line.strip() for line in raw.splitlines() if line.strip()]


def test_unit_key_settings() -> None:
    unit = _unit()
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert service["Type"] in {"exec", "simple"}
    assert service["ExecStart"] == f"{INSTALLED_BIN} run --config /etc/stream-worker/worker.yaml"
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"] == "-/etc/stream-worker/env"
    assert service["User"] == "stream-worker" and service["User"] != "root"
    # The stop timeout leaves the worker its whole graceful budget (default 25 s).
    timeout = int(service["TimeoutStopSec"])
    assert timeout == 60 and timeout > WorkerSettings.model_fields["shutdown_timeout_seconds"].default
    # Config errors exit 2: no restart loop on them.
    assert "2" in service["RestartPreventExitStatus"].split()
    for hardening, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "PrivateDevices": "yes", "CapabilityBoundingSet": "", "RestrictSUIDSGID": "yes",
    }.items():
        assert service[hardening] == value, hardening
    assert "@system-service" in _values(unit, "Service", "SystemCallFilter")
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit["Unit"]["After"]


def test_sysusers_file_creates_the_unit_user() -> None:
    lines = [line.split() for line in (DEPLOY / "systemd" / "stream-worker.sysusers.conf").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert [(fields[0], fields[1]) for fields in lines] == [("u", _unit()["Service"]["User"])]


def test_env_example_sets_only_variables_the_config_reads() -> None:
    config_text = (DEPLOY.parent / "config" / "worker.yaml").read_text()
    names = [line.split("=", 1)[0].lstrip("#") for line in (DEPLOY / "systemd" / "env.example").read_text().splitlines()
             if "=" in line and not line.startswith("# ")]
    assert "AWS_REGION" in names
    for name in names:
        assert name == "AWS_REGION" or f"${{{name}" in config_text, f"{name} is not used by config/worker.yaml"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """Where systemd-analyze exists it must accept the unit with no warning at all. The
    installed path /opt/stream-worker/venv is mapped to this checkout's venv, because verify
    checks that ExecStart= is executable. Elsewhere the INI checks above are the check."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        test_unit_key_settings()
        return
    local_bin = Path(sys.executable).with_name("stream-worker")
    assert local_bin.exists(), "the package must be installed in the venv (make install)"
    unit = tmp_path / "stream-worker.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_BIN, str(local_bin)))
    result = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True,
                            timeout=60, check=False)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and "stream-worker.service" not in output, output

    # The check has teeth: an unknown key is reported.
    broken = tmp_path / "broken" / "stream-worker.service"
    broken.parent.mkdir()
    broken.write_text(unit.read_text().replace("KillSignal=SIGTERM", "KillSignal=SIGTERM\nKillSignall=SIGTERM"))
    result = subprocess.run([analyze, "verify", "--man=no", str(broken)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert "KillSignall" in result.stdout + result.stderr
