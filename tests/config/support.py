"""Small builders shared by the config tests: a config file on disk, a payment record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from worker.records import StreamRecord
from worker.testing import make_record

HANDLERS = "tests.config.handlers"
STREAM_ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/payments/stream/2026-01-01T00:00:00.000"


def document(*routes: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """A minimal config for a ``payments`` table: no outbox, no dead letters, unless given."""
    doc: dict[str, Any] = {
        "aws": {"region": "eu-west-1"},
        "tables": {"payments": {"name": "payments", "key": "paymentId"}},
        "routes": list(routes) or [{"name": "audit", "table": "payments", "handler": f"{HANDLERS}:per_record"}],
    }
    doc.update(sections)
    return doc


def write_config(folder: Path, doc: dict[str, Any], name: str = "worker.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def payment_record(sequence: int = 1, **image: Any) -> StreamRecord:
    """An INSERT of payment ``p-<sequence>`` (``amount`` 12 unless given), built with the kit."""
    return make_record("INSERT", {"paymentId": f"p-{sequence}"}, new_image={"amount": 12, **image},
                       table="payments", sequence_number=f"{sequence:021d}", event_id=f"ev-{sequence}",
                       stream_arn=STREAM_ARN, shard_id="shardId-000001", region="eu-west-1")
