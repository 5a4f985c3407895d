"""The publisher is optional: configs without one load, and publishing without one is a
permanent error that names the route (parked, not retried)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.support import document, payment_record, write_config
from worker.cli import main
from worker.config import RetryConfig, parse_config
from worker.errors import ConfigError, PermanentError
from worker.processing.delivery import DeliveryServices, RouteDelivery
from worker.processing.progress import ShardProgress
from worker.processing.router import Route, Router
from worker.publishing import NoPublisher, PublisherNotConfigured
from worker.testing import MemoryDeadLetters


def test_a_config_without_publisher_passes_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check-config", "--config", str(write_config(tmp_path, document()))])
    assert code == 0, capsys.readouterr().err
    assert parse_config(document(), env={}).publisher.type == "none"


def test_type_none_passes_and_takes_no_target() -> None:
    assert not parse_config(document(publisher={"type": "none"}), env={}).publisher.enabled
    with pytest.raises(ConfigError) as info:
        parse_config(document(publisher={"type": "none", "table": "payments"}), env={})
    assert info.value.problems[0][0] == "publisher"
    assert "takes no target" in info.value.problems[0][1]


def test_the_builtin_order_handler_needs_a_publisher() -> None:
    route = {"name": "orders", "table": "payments", "handler": "worker.handlers.orders:process_order"}
    with pytest.raises(ConfigError) as info:
        Router.from_config(parse_config(document(route), env={}))
    [(path, reason)] = info.value.problems
    assert path == "routes[0].handler"
    assert "configure a 'publisher' section" in reason


async def test_publishing_without_a_publisher_is_parked_naming_the_route() -> None:
    import tests.config.handlers as handlers

    route = Route(name="audit", table="payments", events=frozenset({"INSERT"}), new_image={}, old_image={},
                  handler=handlers.publishing, options={}, retry=RetryConfig(max_attempts=5))
    services = DeliveryServices(publisher=NoPublisher(), tables=None, config=None,  # type: ignore[arg-type]
                                worker_id="w", observers=[])
    letters = MemoryDeadLetters()
    record = payment_record(1)
    progress = ShardProgress()
    progress.add(record, 1)

    async def no_sleep(seconds: float) -> None:
        raise AssertionError("a permanent error is parked at once, never retried")

    delivery = RouteDelivery(route, services, letters, progress=progress, sleep=no_sleep)
    await delivery.deliver([record])

    [letter] = letters.letters
    assert (letter.error_type, letter.error_class, letter.attempts) == ("PublisherNotConfigured", "permanent", 1)
    assert "route 'audit'" in letter.error_message
    assert "add a 'publisher' section" in letter.error_message
    assert progress.idle and progress.finished_up_to == record.sequence_number  # finished (parked) once
    assert issubclass(PublisherNotConfigured, PermanentError)
