"""Per-key scheduling end to end on each real endpoint (moto, DynamoDB Local): a poison key
with retries and back-off does not delay the other keys of its shard, whatever
``max_concurrency``.

The worker (``App``) reads one shard of 62 records: 30 good keys with two records each and
a poison key (its first record at #3, its second near the end) whose handler fails each of
its records until it is parked after 4 attempts, backing off 0.3 s between them. Every good
record is handled before the poison's first record is parked (they do not wait behind it,
even with ``max_concurrency: 1``: a record waiting out its back-off holds no slot), the
poison's second record is tried only after it, and the checkpoint ends at the last record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.delivery import handlers
from tests.delivery.test_delivery_controls import (
    batch_route,
    build,
    document,
    put,
    record_route,
    running,
)
from tests.integration.helpers import Recorder, jsonl_letters, seq, setup_tables, stream_records, wait_checkpoint

pytestmark = pytest.mark.integration

POISON = "poison"
GOOD = [f"good-{i:02d}" for i in range(30)]
RETRY = {"max_attempts": 4, "initial_backoff_seconds": 0.3, "max_backoff_seconds": 0.3}


@pytest.fixture(autouse=True)
def _fresh_handler_state() -> None:
    handlers.reset()


@pytest.mark.parametrize("kind", ["record", "batch"])
@pytest.mark.parametrize("concurrency", [1, 3, 10])
async def test_poison_key_does_not_delay_other_keys(
    endpoint_url: str, prefix: str, aws: dict[str, Any], tmp_path: Path, concurrency: int, kind: str
) -> None:
    ddb = aws["dynamodb"]
    letters = tmp_path / "letters.jsonl"
    settings: dict[str, Any] = {"max_concurrency": concurrency, "retry": RETRY,
                                "dead_letter": {"type": "jsonl", "path": str(letters)}}
    if kind == "record":
        route = record_route("keys", **settings)
        handlers.fail_keys.add(POISON)
    else:
        route = batch_route("keys", batch_size=8, **settings)  # bisect_batch_on_error: the default
        handlers.poison_keys.add(POISON)
    config = build(document(endpoint_url, prefix, [route]))
    await setup_tables(config)
    for counter in range(2):
        for position, key in enumerate(GOOD):
            if counter == 0 and position == 3:
                await put(ddb, config, POISON, 0)
            if counter == 1 and position == 27:
                await put(ddb, config, POISON, 1)
            await put(ddb, config, key, counter)
    records = await stream_records(aws, config, "orders")
    assert len(records) == 62
    position = {seq(r): i for i, r in enumerate(records)}
    poison_first, poison_second = [i for i, r in enumerate(records)
                                   if r["dynamodb"]["Keys"]["orderId"]["S"] == POISON]

    recorder = Recorder()
    async with running(config, recorder):
        await wait_checkpoint(ddb, config, "orders", seq(records[-1]), timeout=30)

    events = [(c.outcome, position[c.sequence_number]) for c in recorder.calls]
    parked = events.index(("dead_lettered", poison_first))
    good = [i for i, r in enumerate(records) if r["dynamodb"]["Keys"]["orderId"]["S"] != POISON]
    assert sorted(i for outcome, i in events if outcome == "ok") == good
    assert all(events.index(("ok", i)) < parked for i in good), "a good key waited for the poison"
    # The poison key stays in order: its second record (failing too) is parked after the
    # first; a per-record route tries it only then (a batch may carry it with the first).
    assert events.index(("dead_lettered", poison_second)) > parked
    if kind == "record":
        assert events.index(("error", poison_second)) > parked
    # Good keys stay in order too.
    for key in GOOD:
        mine = [i for outcome, i in events if outcome == "ok" and records[i]["dynamodb"]["Keys"]["orderId"]["S"] == key]
        assert mine == sorted(mine) and len(mine) == 2, key
    assert [(letter.sequence_number, letter.error_class, letter.attempts) for letter in jsonl_letters(letters)] == [
        (seq(records[poison_first]), "exhausted", 4), (seq(records[poison_second]), "exhausted", 4)]
    if kind == "record":
        assert [c.counter for c in handlers.calls_for(POISON)] == [0, 0, 0, 0, 1, 1, 1, 1]
