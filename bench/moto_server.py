"""``python -m bench.moto_server -H 127.0.0.1 -p PORT``: moto_server with one fix for
benchmarks that write one table from many connections at once.

moto's threaded server numbers stream records with ``len(items) + start`` and appends them
without a lock (moto/dynamodb/models/table.py ``StreamShard.add``), so two concurrent
writes to one table can get the same sequence number; real DynamoDB Streams never does
that. Here ``StreamShard.add`` runs under a lock; everything else is moto_server as is.
"""

from __future__ import annotations

import threading
from typing import Any

from moto.dynamodb.models.table import StreamShard

_lock = threading.Lock()
_add = StreamShard.add


def _atomic_add(self: StreamShard, old: Any, new: Any) -> None:
    with _lock:
        _add(self, old, new)


StreamShard.add = _atomic_add  # type: ignore[method-assign]


def main() -> None:
    from moto.server import main as moto_main

    moto_main()


if __name__ == "__main__":
    main()
