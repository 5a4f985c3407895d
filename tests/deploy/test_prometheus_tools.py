"""The package installer's own rules (worker/local/debian_packages.py, used for promtool/prometheus
and the benchmarks' haproxy), without touching the machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.local import debian_packages
from tests.deploy import prometheus_tools
from tests.deploy.prometheus_tools import PrometheusToolsUnavailable, ensure_prometheus_tools, find_tool


def test_service_starts_are_denied_only_while_installing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tmp_path / "policy-rc.d"
    monkeypatch.setattr(debian_packages, "POLICY_RC_D", policy)
    with debian_packages.services_denied():
        assert policy.read_text().rstrip().endswith("exit 101") and os.access(policy, os.X_OK)
    assert not policy.exists()


def test_an_existing_policy_rc_d_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tmp_path / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 0\n")
    monkeypatch.setattr(debian_packages, "POLICY_RC_D", policy)
    with debian_packages.services_denied():
        assert policy.read_text() == "#!/bin/sh\nexit 0\n"
    assert policy.read_text() == "#!/bin/sh\nexit 0\n"


def test_missing_tools_without_root_raise(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Not installable is an error (the fixture turns it into a failure), never a silent skip."""
    monkeypatch.setattr(prometheus_tools, "find_tool", lambda name: None)
    monkeypatch.setattr(debian_packages.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(debian_packages, "LOCK_FILE", tmp_path / "lock")
    with pytest.raises(PrometheusToolsUnavailable, match="not root"):
        ensure_prometheus_tools()


def test_tools_are_found_on_this_machine(prom_tools: prometheus_tools.PrometheusTools) -> None:
    assert find_tool("promtool") == prom_tools.promtool and os.access(prom_tools.promtool, os.X_OK)
    assert find_tool("prometheus") == prom_tools.prometheus and os.access(prom_tools.prometheus, os.X_OK)
