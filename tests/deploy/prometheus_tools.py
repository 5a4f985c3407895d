"""Find ``promtool`` and ``prometheus``, installing Debian's ``prometheus`` package when absent
(through worker/local/debian_packages.py: ``apt-get update`` and ``apt-get install -y
--no-install-recommends prometheus`` with service starts denied, so the package's own
``prometheus`` service is not left running). Tests never rely on that service: they start
their own server on a free loopback port with their own storage directory.

If the binaries cannot be found or installed, :func:`ensure_prometheus_tools` raises
:class:`PrometheusToolsUnavailable`; the fixtures turn that into a test *failure*, never a skip.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.local.debian_packages import SEARCH_DIRS, PackageUnavailable, ensure_installed, find_tool, install_package

PACKAGE = "prometheus"


class PrometheusToolsUnavailable(PackageUnavailable):
    """promtool/prometheus are missing and could not be installed."""


@dataclass(frozen=True)
class PrometheusTools:
    promtool: str
    prometheus: str


def _found() -> PrometheusTools | None:
    promtool, prometheus = find_tool("promtool"), find_tool("prometheus")
    if promtool and prometheus:
        return PrometheusTools(promtool=promtool, prometheus=prometheus)
    return None


def install_prometheus_package() -> None:
    install_package(PACKAGE, PrometheusToolsUnavailable)


def ensure_prometheus_tools() -> PrometheusTools:
    """The paths of ``promtool`` and ``prometheus``, installing the package if needed."""
    def promtool_path() -> str | None:
        tools = _found()
        return tools.promtool if tools else None

    promtool = ensure_installed(promtool_path, install_prometheus_package)
    tools = _found()
    if promtool is None or tools is None:
        raise PrometheusToolsUnavailable(
            f"package {PACKAGE!r} installed, but promtool/prometheus are still not on PATH or in {SEARCH_DIRS}"
        )
    return tools
