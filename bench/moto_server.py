"""``python -m bench.moto_server -H 127.0.0.1 -p PORT``: moto_server with one fix for
benchmarks that write one table from many connections at once, and two cuts of its
per-request overhead, so that the benchmarks measure the consumers more than moto.

* Fix: moto's threaded server numbers stream records with ``len(items) + start`` and
  appends them without a lock (moto/dynamodb/models/table.py ``StreamShard.add``), so two
  concurrent writes to one table can get the same sequence number; real DynamoDB Streams
  never does that. Here ``StreamShard.add`` runs under a lock.
* Overhead: moto finds the backend of every request by listing its service modules on
  disk (``get_backend_for_host`` -> ``list_of_moto_modules``), under a process-wide lock;
  the answer depends only on the host name, so it is remembered per host. And werkzeug's
  access log line per request (to stderr, under the logging lock) is off.

``--latency-ms N`` (ours, not moto's) makes every request wait N ms in its server thread
before moto handles it, as a network round trip to DynamoDB would; the wait holds no lock
and no GIL, so requests in flight wait side by side, as they would on the real service.

On this machine the two cuts took conditional PutItems with 10 in flight from about 310 to
420 a second. Every benchmark runs its variants on the same kind of server, so ratios
compare like with like.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

from moto.dynamodb.models.table import StreamShard
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

_lock = threading.Lock()
_add = StreamShard.add


def _atomic_add(self: StreamShard, old: Any, new: Any) -> None:
    with _lock:
        _add(self, old, new)


StreamShard.add = _atomic_add  # type: ignore[method-assign]

_backend_for_host = DomainDispatcherApplication.get_backend_for_host
_backends: dict[str | None, Any] = {}


def _remembered_backend_for_host(self: DomainDispatcherApplication, host: str | None) -> Any:
    if host not in _backends:
        _backends[host] = _backend_for_host(self, host)
    return _backends[host]


DomainDispatcherApplication.get_backend_for_host = _remembered_backend_for_host  # type: ignore[method-assign]


def _add_latency(seconds: float) -> None:
    serve = DomainDispatcherApplication.__call__

    def delayed(self: DomainDispatcherApplication, environ: dict[str, Any], start_response: Any) -> Any:
        time.sleep(seconds)
        return serve(self, environ, start_response)

    DomainDispatcherApplication.__call__ = delayed  # type: ignore[method-assign]


def main() -> None:
    from moto.server import main as moto_main

    argv = sys.argv[1:]
    if "--latency-ms" in argv:
        at = argv.index("--latency-ms")
        latency_ms = float(argv[at + 1])
        del argv[at:at + 2]
        if latency_ms > 0:
            _add_latency(latency_ms / 1000)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    moto_main(argv)


if __name__ == "__main__":
    main()
