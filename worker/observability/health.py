"""One small HTTP server: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``.

``/metrics`` answers in the format the scraper asks for (``Accept``): the OpenMetrics text
format carries the histograms' exemplars (trace ids, worker/observability/tracing.py), the
classic Prometheus text format, the default, cannot."""

from __future__ import annotations

from typing import Callable

import structlog
from aiohttp import web
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

log = structlog.get_logger(__name__)


class HealthServer:
    """``/healthz``: the event loop answers and no loop died for good.
    ``/readyz``: set up, connected and renewing leases."""

    def __init__(self, host: str, port: int, *, alive: Callable[[], bool], ready: Callable[[], bool]) -> None:
        self._host = host
        self._port = port
        self._alive = alive
        self._ready = ready
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(REGISTRY), headers={"Content-Type": content_type})

    async def _healthz(self, request: web.Request) -> web.Response:
        ok = self._alive()
        return web.json_response({"status": "ok" if ok else "failing"}, status=200 if ok else 503)

    async def _readyz(self, request: web.Request) -> web.Response:
        ok = self._ready()
        return web.json_response({"status": "ready" if ok else "not ready"}, status=200 if ok else 503)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port
        log.info("serve metrics and health", host=self._host, port=self.port)

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
