"""route_harness: a route of a real config through the real router and delivery, in-process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

from tests.testing_kit import kit_handlers
from tests.testing_kit.conftest import HANDLERS
from worker.testing import HarnessStuck, Outcome, make_record, route_harness

PARKING = {"dead_letter": {"type": "jsonl", "path": "unused.jsonl"}}


def route(name: str, handler: str, **settings: object) -> dict[str, object]:
    key = "batch_handler" if settings.pop("batch", False) else "handler"
    return {"name": name, "table": "items", key: f"{HANDLERS}:{handler}", **settings}


async def test_records_are_handled_filtered_or_parked_and_tables_are_real(
    write_config: Callable[..., Path],
) -> None:
    config = write_config(route("mirror", "copy_to_mirror", events=["INSERT", "MODIFY"],
                                filters=[{"dynamodb": {"NewImage": {"kind": {"S": ["keep"]}}}}],
                                retry={"max_attempts": 3}, **PARKING))
    async with route_harness(config, "mirror") as h:
        kept = h.record("INSERT", {"id": "a"}, new_image={"kind": "keep", "n": 1})
        other_kind = h.record("INSERT", {"id": "b"}, new_image={"kind": "skip"})
        removed = h.record("REMOVE", {"id": "c"}, old_image={"kind": "keep"})
        other_table = make_record("INSERT", {"id": "d"}, new_image={"kind": "keep"}, table="mirror")
        bad = h.record("MODIFY", {"id": "e"}, new_image={"kind": "keep", "bad": True})

        outcomes = await h.deliver([kept, other_kind, removed, other_table, bad])

        assert outcomes == [Outcome.HANDLED, Outcome.FILTERED, Outcome.FILTERED, Outcome.FILTERED, Outcome.PARKED]
        mirror = await h.table("mirror")
        assert (await mirror.get_item(Key={"id": "a"}))["Item"] == {"id": "a", "kind": "keep", "n": 1,
                                                                     "seenBy": "mirror"}
        assert "Item" not in await mirror.get_item(Key={"id": "e"})
        [letter] = h.dead_letters
        assert (letter.sequence_number, letter.error_class, letter.attempts) == (bad.sequence_number, "permanent", 1)
        assert letter.record == bad.raw and "marked bad" in letter.error_message


async def test_retries_do_not_wait_and_exhausted_records_are_parked(write_config: Callable[..., Path]) -> None:
    config = write_config(route("never", "always_fails",
                                retry={"max_attempts": 4, "initial_backoff_seconds": 30, "max_backoff_seconds": 60},
                                **PARKING))
    async with route_harness(config, "never") as h:
        record = h.record("INSERT", {"id": "x"}, new_image={})
        assert await h.deliver([record]) == [Outcome.PARKED]
        # Three back-offs of 30 s and more were asked for; none was waited for.
        assert len(h.backoffs) == 3 and min(h.backoffs) >= 30
        assert [(letter.error_class, letter.attempts) for letter in h.dead_letters] == [("exhausted", 4)]


async def test_a_failing_batch_is_bisected_down_to_the_poison_record(write_config: Callable[..., Path]) -> None:
    config = write_config(route("batches", "batch_with_poison", batch=True, batch_size=4,
                                retry={"max_attempts": 1}, **PARKING))
    kit_handlers.poison.add("k2")
    async with route_harness(config, "batches") as h:
        records = [h.record("INSERT", {"id": f"k{i}"}, new_image={}) for i in range(6)]
        outcomes = await h.deliver(records)
    assert outcomes == [Outcome.HANDLED, Outcome.HANDLED, Outcome.PARKED, Outcome.HANDLED,
                        Outcome.HANDLED, Outcome.HANDLED]
    assert kit_handlers.batches[0] == ["k0", "k1", "k2", "k3"]  # batches of batch_size
    assert ["k2"] in kit_handlers.batches and ["k4", "k5"] in kit_handlers.batches
    assert [letter.sequence_number for letter in h.dead_letters] == [records[2].sequence_number]


async def test_a_route_without_dead_letters_is_reported_stuck_not_retried_forever(
    write_config: Callable[..., Path],
) -> None:
    config = write_config(route("never", "always_fails"))
    async with route_harness(config, "never", retry_limit=5) as h:
        with pytest.raises(HarnessStuck, match="retry them forever"):
            await h.deliver([h.record("INSERT", {"id": "x"}, new_image={})])
        assert len(h.backoffs) == 6 and h.dead_letters == []


async def test_the_context_tells_route_shard_attempt_and_remaining_time(write_config: Callable[..., Path]) -> None:
    config = write_config(route("noted", "note_context", timeout_seconds=7, options={"mode": "strict"}))
    kit_handlers.fail_first.add("a")
    async with route_harness(config, "noted") as h:
        record = h.record("INSERT", {"id": "a"}, new_image={}, shard_id="shardId-42")
        assert await h.deliver([record]) == [Outcome.HANDLED]
    first, second = kit_handlers.contexts
    assert (first["route"], first["shard_id"], first["options"]) == ("noted", "shardId-42", {"mode": "strict"})
    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert 6 < first["remaining"] < 7  # the handler slept 10 ms of its 7 s


async def test_an_unknown_route_name_lists_the_routes(write_config: Callable[..., Path]) -> None:
    config = write_config(route("noted", "note_context"))
    with pytest.raises(ValueError, match=r"no route 'nope' .*\(routes: noted\)"):
        async with route_harness(config, "nope"):
            pass


async def test_the_harness_never_leaves_the_process_and_restores_the_environment(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An endpoint that answers nothing and a profile that does not exist: neither is used.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    config = write_config(route("mirror", "copy_to_mirror"))
    async with route_harness(config, "mirror") as h:
        assert await h.deliver([h.record("INSERT", {"id": "a"}, new_image={"n": 1})]) == [Outcome.HANDLED]
        assert "Item" in await (await h.table("mirror")).get_item(Key={"id": "a"})
    assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9" and os.environ["AWS_PROFILE"] == "no-such-profile"


async def test_a_handler_s_own_clients_reach_the_same_mock(write_config: Callable[..., Path]) -> None:
    import aioboto3

    config = write_config(route("queue", "send_to_queue",
                                options={"queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/kit"}))
    async with route_harness(config, "queue") as h:
        async with aioboto3.Session().client("sqs") as sqs:
            url = (await sqs.create_queue(QueueName="kit"))["QueueUrl"]
            assert await h.deliver([h.record("INSERT", {"id": "q-1"}, new_image={})]) == [Outcome.HANDLED]
            messages = (await sqs.receive_message(QueueUrl=url))["Messages"]
    assert [message["Body"] for message in messages] == ["q-1"]
