from __future__ import annotations

import pytest

from tests.deploy.prometheus_tools import PrometheusTools, PrometheusToolsUnavailable, ensure_prometheus_tools


@pytest.fixture(scope="session")
def prom_tools() -> PrometheusTools:
    """promtool and prometheus, installed from Debian's package when missing (as root).

    Missing tools are a test failure, never a skip: CI must prove the files are valid."""
    try:
        return ensure_prometheus_tools()
    except PrometheusToolsUnavailable as exc:
        pytest.fail(f"promtool/prometheus unavailable: {exc}", pytrace=False)
