"""A handler for multi-process runs (bench/cluster.py): appends one JSON line per handled record to
``<options.dir>/<worker id>.jsonl`` (wall-clock time, shard, sequence number, key)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import IO

from worker.processing.context import HandlerContext
from worker.records import StreamRecord

_files: dict[str, IO[str]] = {}


async def record(record: StreamRecord, ctx: HandlerContext) -> None:
    worker = ctx.config.worker.id or str(os.getpid())
    path = str(Path(ctx.options["dir"]) / f"{worker}.jsonl")
    handle = _files.get(path)
    if handle is None:
        handle = _files[path] = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    line = {
        "t": time.time(),
        "worker": worker,
        "shard": record.shard_id,
        "seq": record.sequence_number,
        "key": str(record.keys.get("pk")),
    }
    handle.write(json.dumps(line) + "\n")
