"""A DynamoDB endpoint that scales with concurrency: several moto servers behind HAProxy,
each table on one of them, chosen by the table's name in the request.

One moto_server process answers every request under one GIL: about 450 small writes a
second on this machine, however many are in flight, so against it any consumer's
concurrency is capped by moto, not by the consumer. Real DynamoDB spreads tables and
partitions over many servers. Here each group of tables gets its own moto process
(bench/moto_server.py, with its modelled network round trip), and HAProxy (C, a few tens of
microseconds a request) sends each request to the process that holds its table: every
DynamoDB and DynamoDB Streams request names its table in the body (``TableName``,
``RequestItems`` keys, a stream ARN, or a moto shard iterator, which starts with the
table's ARN). Requests that name none of the groups go to the last process.

Limits (none silent: a request routed to the wrong moto fails, its table is not there): a
``BatchWriteItem``/``BatchGetItem``/``Transact*Items`` naming tables of several groups goes
to the first group that matches; PartiQL statements and ``ListStreams`` without a table go
to the last process; HAProxy looks at the first 16 KB of a body. The seed chain makes
single-table calls with small items, so none of this applies to the e2e benchmark.

HAProxy comes from Debian's ``haproxy`` package, installed on first use when missing
(worker/local/debian_packages.py, as the deploy tests install prometheus).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO

from bench.support import BenchMoto
from worker.local.debian_packages import ensure_tool
from worker.local.processes import free_port, terminate


def _literal(table: str) -> str:
    """A table name inside an HAProxy regex: of DynamoDB's name characters ([a-zA-Z0-9_.-])
    only the dot means something there."""
    return table.replace(".", "\\.")


def haproxy_config(port: int, groups: list[tuple[list[str], int]], default_port: int) -> str:
    """Route on where the (buffered) request body names a table: ``"TableName": "t"``, a
    ``BatchWriteItem``'s ``"RequestItems": {"t"``, or, for DynamoDB Streams calls only, a
    stream ARN or moto shard iterator ``table/t/stream`` (a lease-table item also holds stream
    ARNs, so that one is not looked for in DynamoDB calls)."""
    lines = [
        "global", "    maxconn 4096", "    nbthread 1",
        "defaults", "    mode http", "    timeout connect 5s", "    timeout client 120s", "    timeout server 120s",
        "    option http-buffer-request",
        "frontend dynamodb", f"    bind 127.0.0.1:{port}",
        "    acl streams_api req.hdr(X-Amz-Target) -m beg DynamoDBStreams",
    ]
    for index, (tables, _) in enumerate(groups):
        names = []
        for number, table in enumerate(tables):
            name = f"g{index}t{number}"
            lines += [
                f"    acl {name}_table req.body -m reg '\"TableName\": ?\"{_literal(table)}\"'",
                f"    acl {name}_batch req.body -m reg '\"RequestItems\": ?\\{{\"{_literal(table)}\"'",
                f"    acl {name}_stream req.body -m sub table/{table}/stream",
            ]
            names.append(f"{name}_table or {name}_batch or streams_api {name}_stream")
        lines.append(f"    use_backend group{index} if {' or '.join(names)}")
    lines.append("    default_backend rest")
    for index, (_, moto_port) in enumerate(groups):
        lines += [f"backend group{index}", f"    server moto{index} 127.0.0.1:{moto_port}"]
    lines += ["backend rest", f"    server moto-rest 127.0.0.1:{default_port}"]
    return "\n".join(lines) + "\n"


class ShardedMoto:
    """``ShardedMoto([["p-orders"], ["p-events"]], latency_ms=10).start()``: one moto per
    group of table names plus one for every other table; ``url`` is HAProxy's."""

    def __init__(self, groups: list[list[str]], latency_ms: float = 0.0) -> None:
        self._groups = groups
        self._latency_ms = latency_ms
        self.motos: list[BenchMoto] = []
        self._proxy: subprocess.Popen[bytes] | None = None
        self._proxy_log: IO[bytes] | None = None
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="sharded-moto-"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pids(self) -> list[int]:
        """Every process that serves requests (the motos and HAProxy)."""
        pids = [moto.pid for moto in self.motos]
        return pids + ([self._proxy.pid] if self._proxy is not None else [])

    def start(self, timeout: float = 30.0) -> "ShardedMoto":
        haproxy = ensure_tool("haproxy", "haproxy")
        try:
            for _ in range(len(self._groups) + 1):
                moto = BenchMoto(self._latency_ms)
                self.motos.append(moto)
                moto.start()
            config = self._dir / "haproxy.cfg"
            routed = [(tables, moto.port) for tables, moto in zip(self._groups, self.motos)]
            config.write_text(haproxy_config(self.port, routed, self.motos[-1].port))
            self._proxy_log = open(self._dir / "haproxy.log", "wb")  # noqa: SIM115 - closed in stop()
            self._proxy = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                                           stderr=self._proxy_log)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    urllib.request.urlopen(self.url + "/moto-api/", timeout=2).read()
                    return self
                except OSError:
                    if self._proxy.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"HAProxy did not start: {(self._dir / 'haproxy.log').read_text()[:500]}")
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._proxy is not None:
            terminate(self._proxy, timeout=10)
        if self._proxy_log is not None:
            self._proxy_log.close()
        for moto in self.motos:
            moto.stop()
