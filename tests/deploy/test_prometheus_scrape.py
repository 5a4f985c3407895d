"""A real Prometheus scrapes a real worker (the seed chain on the moto server, in-process),
and sees what the dashboard and the alerts query.

The worker's metrics live in prometheus_client's process-global registry, so other tests in
this process may have counted before: counts are checked as deltas over this test's chain.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from prometheus_client import REGISTRY

from tests.deploy.deploy_files import PROMETHEUS_DIR, concrete_expr, dashboard_exprs, exported_metric_names
from tests.deploy.prometheus_server import PrometheusServer
from tests.deploy.prometheus_tools import PrometheusTools
from tests.integration.helpers import chain_done, seed_config, setup_tables, wait_until, write_orders
from worker.local.otlp_receiver import OtlpReceiver
from worker.local.processes import free_port
from worker.observability import tracing
from worker.app import App

pytestmark = pytest.mark.integration

ROUTES = {"order-processing": "orders", "shipment-dispatch": "events"}  # route -> stream (logical table)


def _handled(route: str, outcome: str = "ok") -> float:
    value = REGISTRY.get_sample_value(
        "stream_worker_records_handled_total", {"stream": ROUTES[route], "route": route, "outcome": outcome}
    )
    return value or 0.0


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


class Fleet:
    """One worker App serving metrics on a free port, and a Prometheus scraping it every second."""

    def __init__(self, app: App, prometheus: PrometheusServer, metrics_url: str, order_ids: list[str]) -> None:
        self.app = app
        self.prometheus = prometheus
        self.metrics_url = metrics_url
        self.order_ids = order_ids

    async def query(self, expr: str) -> list[dict[str, Any]]:
        # In a thread: the worker's HTTP server shares this event loop and must keep answering.
        return await asyncio.to_thread(self.prometheus.query, expr)

    async def eventually(self, expr: str, check: Callable[[list[dict[str, Any]]], bool], timeout: float = 30) -> list[dict[str, Any]]:
        seen: list[list[dict[str, Any]]] = [[]]

        async def ok() -> bool:
            seen[0] = await self.query(expr)
            return check(seen[0])

        try:
            await wait_until(ok, timeout=timeout, interval=0.5)
        except AssertionError:
            raise AssertionError(f"{expr}: last result {seen[0]}\nprometheus log:\n{self.prometheus.log()}") from None
        return seen[0]


async def _with_fleet(
    moto_url: str, prefix: str, aws: dict[str, Any], tools: PrometheusTools, workdir: Path, orders: int,
    body: Callable[[Fleet, dict[str, float]], Awaitable[None]], rule_files: list[Path] | None = None,
    mutate: Callable[[dict[str, Any]], None] | None = None, prometheus_flags: tuple[str, ...] = (),
) -> None:
    config = seed_config(moto_url, prefix, mutate)
    await setup_tables(config)
    port = free_port()
    app = App(config, metrics_port=port)
    before = {route: _handled(route) for route in ROUTES}
    before.update({f"{route}:error": _handled(route, "error") for route in ROUTES})
    prometheus = PrometheusServer(tools.prometheus, workdir, [f"127.0.0.1:{port}"], rule_files=rule_files,
                                  flags=prometheus_flags)
    order_ids = [f"prom-{i:02d}" for i in range(orders)]
    await app.start()
    try:
        await asyncio.to_thread(prometheus.start)
        await write_orders(aws["dynamodb"], config, order_ids)
        await wait_until(lambda: chain_done(aws["dynamodb"], config, order_ids), timeout=60)
        await body(Fleet(app, prometheus, f"http://127.0.0.1:{port}/metrics", order_ids), before)
    finally:
        await asyncio.to_thread(prometheus.stop)
        await app.stop()
    assert not prometheus.running


async def test_prometheus_scrapes_handled_records_and_lag(
    moto_url: str, prefix: str, aws: dict[str, Any], prom_tools: PrometheusTools, tmp_path: Path
) -> None:
    async def body(fleet: Fleet, before: dict[str, float]) -> None:
        orders = len(fleet.order_ids)
        # The registry counted exactly one successful call per order in each route, no failure.
        # The shipment row appears a moment before its handler returns and is counted: wait
        # for the count to arrive, then require it exact.
        async def counted() -> bool:
            return all(_handled(route) - before[route] >= orders for route in ROUTES)

        await wait_until(counted, timeout=10)
        for route in ROUTES:
            assert _handled(route) - before[route] == orders, route
            assert _handled(route, "error") == before[f"{route}:error"], route

        # Prometheus scraped those values: one series per route, labelled with its stream.
        expected = {route: _handled(route) for route in ROUTES}
        series = await fleet.eventually(
            'stream_worker_records_handled_total{job="stream-worker", outcome="ok"}',
            lambda result: {r["metric"].get("route"): r["value"] for r in result
                            if r["metric"].get("route") in ROUTES} == expected,
        )
        # (other tests in this process may have added series of their own routes)
        for result in [r for r in series if r["metric"]["route"] in ROUTES]:
            labels = result["metric"]
            assert labels["stream"] == ROUTES[labels["route"]]
            assert labels["instance"] == fleet.metrics_url.split("/")[2]
        assert all(value >= orders for value in expected.values())

        # The lag gauge: one series per consumed stream, recent records (seconds, not hours).
        lag = await fleet.eventually(
            'stream_worker_last_handled_record_age_seconds{job="stream-worker"}',
            lambda result: {r["metric"].get("stream") for r in result} >= set(ROUTES.values()),
        )
        assert all(0 <= r["value"] < 300 for r in lag if r["metric"]["stream"] in ROUTES.values()), lag

        # The load gauges (read from the schedulers at scrape time): a series per route and
        # stream; with the chain done nothing runs, waits in back-off or waits for a checkpoint.
        for metric, label, wanted in (("handler_calls_in_flight", "route", set(ROUTES)),
                                      ("handler_calls_in_backoff", "route", set(ROUTES)),
                                      ("records_in_flight", "stream", set(ROUTES.values()))):
            load = await fleet.eventually(
                f'stream_worker_{metric}{{job="stream-worker"}}',
                lambda result, label=label, wanted=wanted: wanted <= {r["metric"].get(label) for r in result},
            )
            assert all(r["value"] == 0.0 for r in load if r["metric"][label] in wanted), (metric, load)

        # Scrape health and the process gauge.
        assert [r["value"] for r in await fleet.query('up{job="stream-worker"}')] == [1.0]
        assert [r["value"] for r in await fleet.query('stream_worker_up{job="stream-worker"}')] == [1.0]

        # Every dashboard query is accepted by this Prometheus, and the throughput panel has data.
        for title, expr in dashboard_exprs():
            await fleet.query(concrete_expr(expr, rate_interval="1m"))
        throughput = next(expr for title, expr in dashboard_exprs() if title.startswith("Records handled/s"))
        await fleet.eventually(  # a rate needs two scrapes of the series
            concrete_expr(throughput, rate_interval="1m"),
            lambda rates: {(r["metric"]["route"], r["metric"]["outcome"]) for r in rates} >= {(r, "ok") for r in ROUTES},
        )

        # The exposition passes promtool's linter, and names only metrics metrics.py defines.
        text = await asyncio.to_thread(_get, fleet.metrics_url)
        check = subprocess.run([prom_tools.promtool, "check", "metrics"], input=text, capture_output=True,
                               text=True, timeout=60, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        exposed = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
                   if line.startswith("stream_worker_")}
        assert exposed and exposed <= exported_metric_names(), sorted(exposed - exported_metric_names())

    await _with_fleet(moto_url, prefix, aws, prom_tools, tmp_path, 5, body)


async def test_a_healthy_worker_raises_no_alert(
    moto_url: str, prefix: str, aws: dict[str, Any], prom_tools: PrometheusTools, tmp_path: Path
) -> None:
    """alerts.yml loaded into the real Prometheus: after the chain, with the worker idle and
    healthy, no alert is pending or firing. Nothing requests /readyz here, as on ECS, where
    the health check asks /healthz: the ready gauge must be right without a probe."""

    async def body(fleet: Fleet, before: dict[str, float]) -> None:
        rules = await asyncio.to_thread(fleet.prometheus.api, "rules")
        names = {rule["name"] for group in rules["groups"] for rule in group["rules"]}
        assert {"WorkerDown", "NotReady", "ShardStalled", "LagHigh"} <= names
        # Let every rule evaluate on a few scrapes.
        await fleet.eventually('count_over_time(up{job="stream-worker"}[1m]) >= 5',
                               lambda result: bool(result))
        ready = await fleet.query('stream_worker_ready{job="stream-worker"}')
        assert [r["value"] for r in ready] == [1.0], (
            "stream_worker_ready must read 1 for a ready worker although nobody requested /readyz "
            f"(got {ready}); NotReady would page for every healthy worker on ECS"
        )
        alerts = (await asyncio.to_thread(fleet.prometheus.api, "alerts"))["alerts"]
        assert alerts == [], [(a["labels"]["alertname"], a["state"]) for a in alerts]

    await _with_fleet(moto_url, prefix, aws, prom_tools, tmp_path, 3, body,
                      rule_files=[PROMETHEUS_DIR / "alerts.yml"])


async def test_prometheus_stores_exemplars_that_link_handler_latency_to_traces(
    moto_url: str, prefix: str, aws: dict[str, Any], prom_tools: PrometheusTools, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With tracing on and Prometheus' exemplar storage enabled (docs/operations.md), the
    handler-duration buckets Prometheus stores carry the trace ids of the calls measured:
    ids of traces the worker exported, for both routes of the chain."""
    for name in [name for name in os.environ if name.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    receiver = OtlpReceiver().start()
    stored: dict[str, set[str]] = {}  # route -> trace ids of its stored exemplars

    def tracing_on(doc: dict[str, Any]) -> None:
        doc["observability"]["tracing"] = {"enabled": True, "endpoint": receiver.traces_url, "sampling_ratio": 1.0}

    async def body(fleet: Fleet, before: dict[str, float]) -> None:
        async def all_routes_stored() -> bool:
            found = await asyncio.to_thread(
                fleet.prometheus.api, "query_exemplars",
                query='stream_worker_handler_duration_seconds_bucket{job="stream-worker"}',
                start=str(time.time() - 600), end=str(time.time() + 60),
            )
            stored.clear()
            for series in found:
                ids = {exemplar["labels"]["trace_id"] for exemplar in series["exemplars"]}
                stored.setdefault(series["seriesLabels"].get("route", ""), set()).update(ids)
            return set(ROUTES) <= {route for route, ids in stored.items() if ids}

        try:
            await wait_until(all_routes_stored, timeout=30, interval=0.5)
        except AssertionError:
            raise AssertionError(f"no exemplars stored for {set(ROUTES)}: {stored}\n{fleet.prometheus.log()}") from None

    try:
        await _with_fleet(moto_url, prefix, aws, prom_tools, tmp_path, 4, body, mutate=tracing_on,
                          prometheus_flags=("--enable-feature=exemplar-storage",))
        exported = {span.trace_id for span in receiver.spans}  # the app's stop flushed its exporter
    finally:
        receiver.stop()
    assert not tracing.enabled()
    for route in ROUTES:
        assert stored[route], route
        assert stored[route] <= exported, (route, stored[route] - exported)
