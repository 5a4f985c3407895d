"""The wire layer: an aiohttp server (own thread, own event loop) in front of ``StreamModel``."""

from __future__ import annotations

import asyncio
import json
import uuid
import zlib
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

from worker.local.simulator.model import DISCONNECT, SimError, StreamModel
from worker.local.threaded_server import ThreadedServer

_CONTENT_TYPE = "application/x-amz-json-1.0"
_HOP_BY_HOP = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    }
)

# Control API methods reachable over HTTP (POST /_sim/<method>, JSON kwargs) for other processes.
CONTROL_METHODS = frozenset(
    {
        "now",
        "advance",
        "configure",
        "knobs",
        "set_throttle",
        "set_faults",
        "fail_next",
        "clear_faults",
        "stats",
        "calls",
        "errors",
        "reset_stats",
        "create_stream",
        "disable_stream",
        "stream_arn",
        "split_shard",
        "rotate_shard",
        "rotate_all",
        "shard_for_key",
        "put_record",
        "put_records",
        "shards",
        "records",
        "tables",
    }
)


class Simulator(ThreadedServer, StreamModel):
    """A DynamoDB Streams endpoint on 127.0.0.1 for the real (aio)botocore client.

    ``Simulator(**knobs).start()`` binds a free port (or ``port``) and serves from a
    background thread; ``url`` is the endpoint_url; ``stop()`` shuts it down. Also a
    context manager. ``upstream_url`` (e.g. a moto server) receives every request
    that is not about a simulated table/stream, verbatim, so the simulator can be the
    single endpoint of a process that also uses DynamoDB, SQS, SNS, ... on moto.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, upstream_url: str | None = None, **knobs: Any):
        super().__init__(**knobs)
        self.host = host
        self.port = port
        self.upstream_url = upstream_url.rstrip("/") if upstream_url else None
        self._init_thread_state()
        self._label = "stream simulator"
        self._upstream: ClientSession | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("simulator not started")
        return f"http://{self.host}:{self.port}"

    async def _astart(self) -> None:
        await self._serve()
        if self.upstream_url:
            self._upstream = ClientSession(timeout=ClientTimeout(total=60), auto_decompress=False)

    async def _astop(self) -> None:
        if self._upstream is not None:
            await self._upstream.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # ----------------------------------------------------------------- requests

    @staticmethod
    def _json_response(status: int, payload: dict[str, Any] | str) -> web.Response:
        text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
        data = text.encode()
        return web.Response(
            status=status,
            body=data,
            headers={
                "Content-Type": _CONTENT_TYPE,
                "x-amzn-RequestId": uuid.uuid4().hex.upper(),
                "x-amz-crc32": str(zlib.crc32(data)),
            },
        )

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return await self._control(request)
        raw = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        service, _, operation = target.partition(".")
        body: Any = None
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        parsed = isinstance(body, dict)
        owned = parsed and (self._upstream is None or self.owns(service, operation, body))
        latency = self.pick_latency()
        if latency > 0:
            await asyncio.sleep(latency)
        if not owned and self._upstream is not None:
            return await self._forward(request, raw)
        op = operation or "<none>"
        self.count_call(op)
        try:
            if not parsed:
                if not target:
                    raise SimError("UnknownOperationException", "missing X-Amz-Target header")
                raise SimError("SerializationException", "request body is not a JSON object")
            fault = self.pick_fault(op)
            if fault is not None:
                code, message = fault
                if code == DISCONNECT:
                    self.count_error(op, DISCONNECT)
                    if request.transport is not None:
                        request.transport.abort()
                    raise asyncio.CancelledError
                raise SimError(code, message)
            result = self.handle(service, operation, body)
        except SimError as err:
            self.count_error(op, err.code)
            return self._json_response(err.status, err.body())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a simulator bug must still answer like AWS would
            self.count_error(op, "InternalServerError")
            bug = SimError("InternalServerError", f"simulator bug: {type(exc).__name__}: {exc}")
            return self._json_response(bug.status, bug.body())
        return self._json_response(200, result)

    async def _forward(self, request: web.BaseRequest, raw: bytes) -> web.StreamResponse:
        assert self._upstream is not None and self.upstream_url is not None
        self.count_forwarded()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._upstream.request(
            request.method, self.upstream_url + request.path_qs, data=raw, headers=headers, allow_redirects=False
        ) as upstream:
            data = await upstream.read()
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=upstream.status, body=data, headers=out_headers)

    async def _control(self, request: web.BaseRequest) -> web.Response:
        name = request.path[len("/_sim/") :]
        if name not in CONTROL_METHODS:
            return web.json_response({"error": f"unknown control method {name!r}"}, status=404)
        try:
            raw = await request.read()
            kwargs = json.loads(raw) if raw else {}
            if not isinstance(kwargs, dict):
                raise TypeError("control body must be a JSON object of keyword arguments")
            result = getattr(self, name)(**kwargs)
        except Exception as exc:  # noqa: BLE001 - reported to the remote caller
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
        return web.json_response({"result": result})
