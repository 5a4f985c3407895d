"""The testing kit: build stream records and run a route of a real config in-process.

Needs the ``testing`` extra (``pip install 'stream-worker[testing]'``, which brings moto)::

    from worker.testing import make_record, route_harness

``make_record`` needs nothing but the worker itself; ``route_harness`` runs against moto's
in-process mock of DynamoDB, so no AWS account, endpoint or server is involved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.testing.memory import MemoryDeadLetters, MemoryPublisher
from worker.testing.records import make_record

if TYPE_CHECKING:
    from worker.testing.harness import HarnessStuck, Outcome, RouteHarness, route_harness

__all__ = ["HarnessStuck", "MemoryDeadLetters", "MemoryPublisher", "Outcome", "RouteHarness", "make_record",
           "route_harness"]


def __getattr__(name: str) -> Any:
    # The harness imports moto; a test that only builds records does not pay for it.
    if name in ("HarnessStuck", "Outcome", "RouteHarness", "route_harness"):
        from worker.testing import harness

        return getattr(harness, name)
    raise AttributeError(f"module 'worker.testing' has no attribute {name!r}")
