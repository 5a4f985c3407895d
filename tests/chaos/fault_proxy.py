"""A fault-injecting HTTP reverse proxy in front of a moto server (or any AWS JSON 1.0 endpoint).

    proxy = FaultProxy("http://127.0.0.1:5000", seed=7).start()   # 127.0.0.1, free port, own thread
    proxy.set_faults(FaultRates(throttle=0.1, server_error=0.05, reset=0.02,
                                latency=0.5, latency_seconds=(0.05, 0.2)))
    ... workers use aws.endpoint_url = proxy.url ...
    proxy.clear_faults(); proxy.counts()   # {"throttle": 12, "server_error": 4, ...}
    proxy.stop()

Per request whose ``X-Amz-Target`` operation is in ``operations`` (default: every
DynamoDB / DynamoDB Streams data-plane call a worker makes), one fault kind is drawn:

* ``throttle``: HTTP 400 ``com.amazonaws.dynamodb.v20120810#ThrottlingException``
* ``provisioned``: HTTP 400 ``...#ProvisionedThroughputExceededException``
* ``server_error``: HTTP 500 ``...#InternalServerError``
* ``reset``: the connection is closed without a response, before the request reaches
  the upstream (the call did not happen)
* ``reset_after``: the request is forwarded, then the connection is closed without a
  response (the call happened, the caller does not know: the nastiest case for writes)

and, independently, ``latency`` (a fraction of requests) adds a delay drawn from
``latency_seconds``. ``fail_next(kind, n, operation=..., body_contains=...)`` queues
targeted faults for deterministic tests (they apply whatever the rates are). Other requests (and every request while faults are off) are
forwarded verbatim. Counts are kept per kind and per (kind, operation); draws come from
one seeded ``random.Random`` (the order of concurrent requests still varies).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

from worker.local.threaded_server import ThreadedServer

_CONTENT_TYPE = "application/x-amz-json-1.0"
_HOP_BY_HOP = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te",
     "trailer", "upgrade"}
)
_PREFIX = "com.amazonaws.dynamodb.v20120810#"

# What workers call on DynamoDB and DynamoDB Streams (not CreateTable & co.: set-up happens
# before faults are switched on, and tests may widen or narrow the set).
DEFAULT_OPERATIONS = frozenset(
    {
        "GetRecords", "GetShardIterator", "DescribeStream", "ListStreams",
        "DescribeTable", "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan",
        "BatchWriteItem", "BatchGetItem",
    }
)

KINDS = ("throttle", "provisioned", "server_error", "reset", "reset_after", "latency")


@dataclass(frozen=True)
class FaultRates:
    """Per-request probabilities (the error kinds are exclusive; their sum must be <= 1)."""

    throttle: float = 0.0
    provisioned: float = 0.0
    server_error: float = 0.0
    reset: float = 0.0
    reset_after: float = 0.0
    latency: float = 0.0  # fraction of requests delayed (independent of the error kinds)
    latency_seconds: tuple[float, float] = (0.05, 0.2)

    def __post_init__(self) -> None:
        total = self.throttle + self.provisioned + self.server_error + self.reset + self.reset_after
        if total > 1.0 or min(self.throttle, self.provisioned, self.server_error, self.reset,
                              self.reset_after, self.latency) < 0:
            raise ValueError(f"bad fault rates: {self}")

    @property
    def active(self) -> bool:
        return any((self.throttle, self.provisioned, self.server_error, self.reset, self.reset_after,
                    self.latency))

    def describe(self) -> str:
        parts = [f"{k}={getattr(self, k):.0%}" for k in KINDS if getattr(self, k)]
        if self.latency:
            lo, hi = self.latency_seconds
            parts[-1] += f"({lo * 1000:.0f}-{hi * 1000:.0f}ms)"
        return ", ".join(parts) or "off"


NO_FAULTS = FaultRates()


@dataclass
class _Targeted:
    kind: str
    left: int
    operation: str | None
    body_contains: tuple[bytes, ...]


@dataclass
class _State:
    rates: FaultRates = NO_FAULTS
    targeted: list[_Targeted] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    by_operation: Counter[tuple[str, str]] = field(default_factory=Counter)
    requests: int = 0
    forwarded: int = 0


class FaultProxy(ThreadedServer):
    """Reverse proxy on 127.0.0.1 (own thread and event loop); see the module docstring."""

    def __init__(self, upstream_url: str, *, seed: int | None = None, host: str = "127.0.0.1", port: int = 0,
                 operations: frozenset[str] | set[str] | None = None) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.host = host
        self.port = port
        self.operations = frozenset(operations if operations is not None else DEFAULT_OPERATIONS)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._state = _State()
        self._init_thread_state()
        self._label = "fault proxy"
        self._session: ClientSession | None = None

    # -- control (thread-safe) -------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("proxy not started")
        return f"http://{self.host}:{self.port}"

    def set_faults(self, rates: FaultRates | None = None, **changes: Any) -> FaultRates:
        """Replace the fault rates (``rates``), or change some of them (keywords)."""
        with self._lock:
            base = rates if rates is not None else self._state.rates
            self._state.rates = replace(base, **changes) if changes else base
            return self._state.rates

    def clear_faults(self) -> None:
        self.set_faults(NO_FAULTS)
        with self._lock:
            self._state.targeted.clear()

    def fail_next(self, kind: str, n: int = 1, *, operation: str | None = None,
                  body_contains: str | tuple[str, ...] = ()) -> None:
        """Fault the next ``n`` requests of ``operation`` (any, if None) whose body contains
        every string of ``body_contains`` with ``kind`` (an error kind of ``KINDS``)."""
        if kind not in KINDS or kind == "latency":
            raise ValueError(f"unknown fault kind {kind!r}")
        needles = (body_contains,) if isinstance(body_contains, str) else tuple(body_contains)
        with self._lock:
            self._state.targeted.append(_Targeted(kind, n, operation, tuple(x.encode() for x in needles)))

    def pending_targeted(self) -> int:
        with self._lock:
            return sum(t.left for t in self._state.targeted)

    @property
    def rates(self) -> FaultRates:
        with self._lock:
            return self._state.rates

    def counts(self) -> dict[str, int]:
        """Injected faults per kind (every kind present, zeros included)."""
        with self._lock:
            return {kind: self._state.counts.get(kind, 0) for kind in KINDS}

    def counts_by_operation(self) -> dict[str, dict[str, int]]:
        with self._lock:
            result: dict[str, dict[str, int]] = {}
            for (kind, operation), n in self._state.by_operation.items():
                result.setdefault(kind, {})[operation] = n
            return result

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"requests": self._state.requests, "forwarded": self._state.forwarded}

    def _draw(self, operation: str, body: bytes = b"") -> tuple[str | None, float]:
        """(error kind or None, added latency) for one request."""
        with self._lock:
            self._state.requests += 1
            for target in self._state.targeted:
                if target.operation in (None, operation) and all(x in body for x in target.body_contains):
                    target.left -= 1
                    if target.left <= 0:
                        self._state.targeted.remove(target)
                    self._count(target.kind, operation)
                    return target.kind, 0.0
            rates = self._state.rates
            if not rates.active or operation not in self.operations:
                return None, 0.0
            delay = 0.0
            if rates.latency and self._rng.random() < rates.latency:
                delay = self._rng.uniform(*rates.latency_seconds)
                self._count("latency", operation)
            draw = self._rng.random()
            for kind in ("throttle", "provisioned", "server_error", "reset", "reset_after"):
                rate = getattr(rates, kind)
                if draw < rate:
                    self._count(kind, operation)
                    return kind, delay
                draw -= rate
            return None, delay

    def _count(self, kind: str, operation: str) -> None:
        self._state.counts[kind] += 1
        self._state.by_operation[(kind, operation)] += 1

    # -- lifecycle ---------------------------------------------------------------------

    async def _astart(self) -> None:
        await self._serve()
        self._session = ClientSession(timeout=ClientTimeout(total=60), auto_decompress=False,
                                      connector=TCPConnector(limit=256))

    async def _astop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- requests ----------------------------------------------------------------------

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        data = json.dumps({"__type": _PREFIX + code, "message": message}, separators=(",", ":")).encode()
        return web.Response(status=status, body=data, headers={
            "Content-Type": _CONTENT_TYPE,
            "x-amzn-RequestId": uuid.uuid4().hex.upper(),
            "x-amz-crc32": str(zlib.crc32(data)),
        })

    @staticmethod
    def _abort(request: web.BaseRequest) -> None:
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # aiohttp drops the request without writing anything

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        raw = await request.read()
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        kind, delay = self._draw(operation, raw)
        if delay:
            await asyncio.sleep(delay)
        if kind == "throttle":
            return self._error(400, "ThrottlingException", "Rate exceeded")
        if kind == "provisioned":
            return self._error(400, "ProvisionedThroughputExceededException",
                               "The level of configured provisioned throughput for the table was exceeded.")
        if kind == "server_error":
            return self._error(500, "InternalServerError", "Internal server error (injected)")
        if kind == "reset":
            self._abort(request)
        response = await self._forward(request, raw)
        if kind == "reset_after":
            self._abort(request)
        return response

    async def _forward(self, request: web.BaseRequest, raw: bytes) -> web.Response:
        assert self._session is not None
        with self._lock:
            self._state.forwarded += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(request.method, self.upstream_url + request.path_qs, data=raw,
                                         headers=headers, allow_redirects=False) as upstream:
            data = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=upstream.status, body=data, headers=out)
