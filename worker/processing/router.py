"""Routes a record to the handlers whose rules it matches (table, event name, conditions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.config import Config, DeadLetterConfig, ProcessingConfig, RetryConfig, RouteConfig
from worker.errors import ConfigError
from worker.processing.context import Handler
from worker.processing.filters import RecordPredicate
from worker.processing.models import ModelImportError, load_model, validating
from worker.processing.registry import HandlerImportError, load_handler
from worker.records import StreamRecord

_MISSING = object()


def _lookup(image: dict[str, Any] | None, dotted: str) -> Any:
    node: Any = image
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _equal(actual: Any, expected: Any) -> bool:
    # Images decode numbers to Decimal; YAML gives int/float/str. Compare by value.
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual is expected
    if isinstance(expected, (int, float)) and not isinstance(actual, str):
        try:
            return bool(actual == type(actual)(str(expected)))
        except Exception:  # noqa: BLE001 - any mismatch of types is "not equal"
            return False
    return bool(actual == expected)


def _matches(image: dict[str, Any] | None, conditions: dict[str, Any]) -> bool:
    for path, expected in conditions.items():
        actual = _lookup(image, path)
        if actual is _MISSING:
            return False
        options = expected if isinstance(expected, list) else [expected]
        if not any(_equal(actual, option) for option in options):
            return False
    return True


@dataclass(frozen=True)
class Route:
    """A resolved route: matching rules, the handler, and its delivery settings."""

    name: str
    table: str
    events: frozenset[str]
    new_image: dict[str, Any]
    old_image: dict[str, Any]
    handler: Any  # Handler or BatchHandler, see ``is_batch``
    options: dict[str, Any]
    is_batch: bool = False
    filters: RecordPredicate | None = None
    batch_size: int = 1
    batching_window_seconds: float = 0.0
    max_concurrency: int = 1  # calls in flight per shard; one key stays in order
    timeout_seconds: float | None = None
    retry: RetryConfig = field(default_factory=RetryConfig)
    dead_letter: DeadLetterConfig | None = None

    @property
    def needs_new_image(self) -> bool:
        return bool(self.new_image)

    @property
    def needs_old_image(self) -> bool:
        return bool(self.old_image)

    def matches(self, record: StreamRecord) -> bool:
        if record.table != self.table or record.raw.get("eventName") not in self.events:
            return False
        if self.new_image and not _matches(record.new_image, self.new_image):
            return False
        if self.old_image and not _matches(record.old_image, self.old_image):
            return False
        if self.filters is not None and not self.filters(record.raw):
            return False
        return True


def build_route(config: RouteConfig, handler: Any, defaults: ProcessingConfig | None = None) -> Route:
    defaults = defaults or ProcessingConfig()
    return Route(
        name=config.name,
        table=config.table,
        events=frozenset(config.events),
        new_image=dict(config.when.new_image),
        old_image=dict(config.when.old_image),
        handler=handler,
        options=dict(config.options),
        is_batch=config.batch_handler is not None,
        filters=config.filter_predicate(f"routes[{config.name}].filters"),  # compiled by validation
        batch_size=config.batch_size if config.batch_handler is not None else 1,
        batching_window_seconds=config.batching_window_seconds,
        max_concurrency=config.concurrency,
        timeout_seconds=config.timeout_seconds,
        retry=config.retry or defaults.retry,
        dead_letter=config.dead_letter or defaults.dead_letter,
    )


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes
        self._by_table: dict[str, list[Route]] = {}
        for route in routes:
            self._by_table.setdefault(route.table, []).append(route)

    @classmethod
    def from_config(cls, config: Config) -> "Router":
        """Resolve every handler; all import problems are reported together (exit 2)."""
        problems: list[tuple[str, str]] = []
        routes: list[Route] = []
        for index, route_config in enumerate(config.routes):
            key = f"routes[{index}].{route_config.handler_key}"
            try:
                handler = load_handler(route_config.import_string, batch=route_config.batch_handler is not None,
                                       config_dir=config.directory)
            except HandlerImportError as exc:
                problems.append((key, str(exc)))
                continue
            if getattr(handler, "publishes_events", False) and not config.publisher.enabled:
                problems.append((key, f"{route_config.import_string} publishes follow-up events: "
                                      "configure a 'publisher' section (e.g. type: outbox, table: events)"))
                continue
            if route_config.model is not None:
                try:
                    model = load_model(route_config.model)
                except ModelImportError as exc:
                    problems.append((f"routes[{index}].model", str(exc)))
                    continue
                handler = validating(handler, model, route_config.batch_handler is not None)
            routes.append(build_route(route_config, handler, config.processing))
        if problems:
            raise ConfigError(problems)
        return cls(routes)

    def routes_for(self, record: StreamRecord) -> list[Route]:
        return [route for route in self._by_table.get(record.table, ()) if route.matches(record)]

    def tables_needing_images(self) -> dict[str, set[str]]:
        """Logical table -> the images ('new', 'old') its routes read."""
        needs: dict[str, set[str]] = {}
        for route in self.routes:
            wanted = needs.setdefault(route.table, set())
            # Built-in and user handlers read the new image; declare it needed always
            # unless the route only handles REMOVE events.
            if route.needs_new_image or route.events - {"REMOVE"}:
                wanted.add("new")
            if route.needs_old_image:
                wanted.add("old")
        return needs
