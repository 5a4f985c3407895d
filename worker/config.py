"""Typed configuration, loaded from YAML, interpolated from the environment, validated.

Every section mirrors a package (``leases``, ``reader``, ``processing`` ...). Unknown
keys are errors (with the closest known key as a "did you mean"), and every error names
the key path and the reason, e.g.
``routes[1].table: unknown table 'ordrs' (known: events, orders, shipments); did you mean 'orders'?``.

String values may use ``${VAR}`` or ``${VAR:-default}``; an unset variable without a
default is a config error naming the key that used it.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import types
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from worker.errors import ConfigError
from worker.processing.filters import FilterPatternError, RecordPredicate, compile_filters


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


StartingPosition = Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"]
EventNameLiteral = Literal["INSERT", "MODIFY", "REMOVE"]


class AwsConfig(_Section):
    """Region and endpoint; credentials always come from the SDK's default chain."""

    region: str | None = None
    endpoint_url: str | None = None
    endpoints: dict[Literal["dynamodb", "dynamodbstreams", "events", "sqs", "sns"], str] = Field(
        default_factory=dict, description="per-service endpoint overrides"
    )
    connect_timeout_seconds: float = Field(5.0, gt=0)
    read_timeout_seconds: float = Field(10.0, gt=0)
    max_pool_connections: int = Field(64, ge=1, le=1024)

    def resolved_region(self) -> str:
        # botocore itself only reads AWS_DEFAULT_REGION; ECS sets both, other tools one.
        region = self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not region:
            raise ConfigError([("aws.region", "not set, and neither AWS_REGION nor AWS_DEFAULT_REGION is")])
        return region

    def resolved_endpoint(self, service: str | None = None) -> str | None:
        if service is not None and service in self.endpoints:
            return self.endpoints[service]
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None


class StreamSettings(_Section):
    starting_position: StartingPosition = "TRIM_HORIZON"
    starting_timestamp: datetime | None = Field(
        None, description="with AT_TIMESTAMP: read from the horizon, skip records created before it"
    )
    arn: str | None = Field(
        None,
        pattern=r"^arn:aws[\w-]*:dynamodb:",
        description="read this stream ARN instead of the table's latest stream (DescribeTable is skipped)",
    )

    @model_validator(mode="after")
    def _timestamp_given(self) -> "StreamSettings":
        if (self.starting_position == "AT_TIMESTAMP") != (self.starting_timestamp is not None):
            raise ValueError("starting_timestamp goes with starting_position AT_TIMESTAMP, and only with it")
        if self.starting_timestamp is not None and self.starting_timestamp.tzinfo is None:
            # A timestamp without a zone is read as UTC, never as the host's local time.
            object.__setattr__(self, "starting_timestamp", self.starting_timestamp.replace(tzinfo=timezone.utc))
        return self


class TableConfig(_Section):
    """A logical table: handlers and routes use the logical name, AWS sees ``name``."""

    name: str = Field(min_length=3, max_length=255)
    key: str = Field("id", description="hash key attribute, used by create-tables")
    stream: StreamSettings = StreamSettings()


class WorkerSettings(_Section):
    id: str | None = Field(None, description="stable worker id; default host-pid-random")
    shutdown_timeout_seconds: float = Field(25.0, gt=0, le=3600)
    startup_timeout_seconds: float = Field(60.0, gt=0, le=3600)

    def resolved_id(self) -> str:
        if self.id:
            return self.id
        return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class LeaseConfig(_Section):
    table: str = Field("stream-worker-leases", min_length=3, max_length=255)
    create_table: bool = True
    duration_seconds: float = Field(10.0, ge=1, le=600)
    heartbeat_interval_seconds: float | None = Field(None, gt=0)
    poll_interval_seconds: float = Field(0.5, gt=0, le=60)
    scan_interval_seconds: float = Field(30.0, gt=0, le=3600)
    max_leases_per_worker: int | None = Field(None, ge=1)
    max_steals_per_pass: int = Field(2, ge=0, le=100)

    @property
    def heartbeat_interval(self) -> float:
        # Three heartbeats per lease duration, as KCL renews: two may be lost before expiry.
        return self.heartbeat_interval_seconds or self.duration_seconds / 3

    @model_validator(mode="after")
    def _heartbeat_below_duration(self) -> "LeaseConfig":
        if self.heartbeat_interval >= self.duration_seconds / 2:
            raise ValueError("heartbeat_interval_seconds must be below half of duration_seconds")
        return self


class ReaderConfig(_Section):
    max_records: int = Field(1000, ge=1, le=1000)
    idle_poll_seconds: float = Field(0.25, ge=0, le=60)
    max_idle_poll_seconds: float = Field(1.0, ge=0, le=300)
    discovery_interval_seconds: float = Field(30.0, gt=0)
    on_trimmed_data: Literal["restart_at_trim_horizon", "stop_shard"] = "restart_at_trim_horizon"
    parent_poll_seconds: float = Field(1.0, gt=0)
    fast_decode: bool = Field(True, description="decode GetRecords with json.loads, not the SDK's parser")
    idle_polls_per_second: float = Field(
        20.0, ge=0, description="budget of GetRecords calls per second for all idle shards of a process; 0: none"
    )


class RetryConfig(_Section):
    """How a failing record is retried (per route; ``processing.retry`` holds the defaults).

    ``max_attempts`` counts calls of the handler with the record (-1: no limit);
    ``max_record_age_seconds`` parks records older than that (-1: no limit). Either limit
    needs a dead-letter destination: a record is never dropped, only parked.
    """

    max_attempts: int = Field(-1, ge=-1, le=10_000)
    max_record_age_seconds: int = Field(-1, ge=-1, le=604_800)
    initial_backoff_seconds: float = Field(0.1, gt=0)
    max_backoff_seconds: float = Field(10.0, gt=0)
    bisect_batch_on_error: bool = True

    @property
    def bounded(self) -> bool:
        return self.max_attempts != -1 or self.max_record_age_seconds != -1


DeadLetterType = Literal["sqs", "sns", "dynamodb", "jsonl"]

# The one field each dead-letter destination type cannot work without.
DEAD_LETTER_REQUIRED_FIELD: dict[str, str] = {
    "sqs": "queue_url",
    "sns": "topic_arn",
    "dynamodb": "table",
    "jsonl": "path",
}


class DeadLetterConfig(_Section):
    """Where parked records go (per route, or ``processing.dead_letter`` as the default).

    ``type`` picks the destination; the field it needs must be set (checked here, so a
    typo fails at start-up rather than on the first record that has to be parked)."""

    type: DeadLetterType
    queue_url: str | None = Field(None, description="sqs: the queue URL (a .fifo URL keeps per-shard order)")
    topic_arn: str | None = Field(None, description="sns: the topic ARN (send-only)")
    table: str | None = Field(None, description="dynamodb: LOGICAL table name, hash key 'id' (S)")
    path: str | None = Field(None, description="jsonl: file path; '<path>.replayed' holds acknowledged ids")

    @model_validator(mode="after")
    def _target_present(self) -> "DeadLetterConfig":
        needed = DEAD_LETTER_REQUIRED_FIELD[self.type]
        if not getattr(self, needed):
            raise ValueError(f"dead-letter type {self.type!r} needs {needed!r}")
        return self


class ProcessingConfig(_Section):
    retry: RetryConfig = RetryConfig()
    dead_letter: DeadLetterConfig | None = None
    checkpoint_interval_seconds: float = Field(1.0, gt=0, le=300)
    max_in_flight_records: int = Field(5_000, ge=1, le=1_000_000)
    # Ranges of records finished past the checkpoint kept in the lease row (the lowest ones
    # when there are more); 0 turns them off. See worker/checkpoint/ranges.py.
    max_finished_ranges: int = Field(100, ge=0, le=1_000)
    max_concurrent_handler_calls: int = Field(
        1_000, ge=1, le=100_000,
        description="handler calls in flight in the whole process, over all shards and routes",
    )


class PublisherConfig(_Section):
    """Where handlers' follow-up events go. Optional: without a ``publisher`` section (or
    with ``type: none``) handlers that publish nothing need no outbox table, and a handler
    that calls ``ctx.publisher.publish`` gets a permanent error naming its route."""

    type: Literal["none", "outbox", "eventbridge", "sqs", "sns"] = "outbox"
    source: str = "stream-worker"
    table: str | None = Field(None, description="outbox: logical table name")
    event_bus: str = "default"
    queue_url: str | None = None
    topic_arn: str | None = None

    @model_validator(mode="after")
    def _target_present(self) -> "PublisherConfig":
        needed = {"outbox": "table", "sqs": "queue_url", "sns": "topic_arn"}.get(self.type)
        if needed and not getattr(self, needed):
            raise ValueError(f"publisher type {self.type!r} needs '{needed}'")
        if self.type == "none":
            stray = sorted({"table", "queue_url", "topic_arn"} & self.model_fields_set)
            if stray:
                raise ValueError(f"publisher type 'none' takes no target, got {', '.join(stray)}")
        return self

    @property
    def enabled(self) -> bool:
        return self.type != "none"


class Conditions(_Section):
    """Equality conditions on decoded images; dotted names reach into maps (``payload.action``).

    A list value matches any of its members.
    """

    new_image: dict[str, Any] = {}
    old_image: dict[str, Any] = {}


# Per route and shard. The seed config's concurrency, and Lambda's maximum
# ParallelizationFactor: what users coming from either expect.
DEFAULT_MAX_CONCURRENCY = 10

_IMPORT_STRING = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"
_DOTTED_ONLY = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$"


def _check_import_string(value: str | None) -> str | None:
    """``package.module:function``; a dotted path without the colon gets the fix spelled out."""
    if value is None or re.match(_IMPORT_STRING, value):
        return value
    if re.match(_DOTTED_ONLY, value):
        module, _, function = value.rpartition(".")
        raise ValueError(f"{value!r} needs a colon between module and function: did you mean '{module}:{function}'?")
    raise ValueError(f"expected 'package.module:function', got {value!r}")


class RouteConfig(_Section):
    """One route: which records (table, events, conditions, filter patterns) go to which
    handler, and how they are delivered (batching, concurrency, retries, dead letters)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    table: str
    events: list[EventNameLiteral] = ["INSERT", "MODIFY", "REMOVE"]
    when: Conditions = Conditions()
    filters: list[dict[str, Any]] = []
    handler: str | None = Field(None, pattern=_IMPORT_STRING)
    batch_handler: str | None = Field(None, pattern=_IMPORT_STRING)
    model: str | None = Field(
        None, pattern=_IMPORT_STRING,
        description="pydantic model (module:Class) the image must validate against, else the record is parked",
    )
    batch_size: int = Field(100, ge=1, le=10_000)
    batching_window_seconds: float = Field(0.0, ge=0, le=300)
    max_concurrency: int | None = Field(
        None, ge=1, le=1_000,
        description=f"calls in flight per shard (default {DEFAULT_MAX_CONCURRENCY}); one key stays in order",
    )
    parallelization_factor: int | None = Field(
        None, ge=1, le=100, description="Lambda's name for max_concurrency (an alias, same meaning)",
    )
    timeout_seconds: float | None = Field(60.0, gt=0, le=3600)
    retry: RetryConfig | None = None
    dead_letter: DeadLetterConfig | None = None
    options: dict[str, Any] = {}
    # ``filters`` compiled once: by the config's own check, which names a bad pattern's key,
    # and then reused by the router (compiling is the slow part of a pattern).
    _filter_predicate: RecordPredicate | None = PrivateAttr(None)
    _filters_compiled: bool = PrivateAttr(False)

    @field_validator("handler", "batch_handler", mode="before")
    @classmethod
    def _import_string(cls, value: Any) -> Any:
        # Before the pattern check, so that a dotted path gets the fix instead of the regex.
        return _check_import_string(value) if isinstance(value, str) else value

    @field_validator("events")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must name at least one of INSERT, MODIFY, REMOVE")
        return value

    @model_validator(mode="after")
    def _one_handler(self) -> "RouteConfig":
        if (self.handler is None) == (self.batch_handler is None):
            raise ValueError("set exactly one of 'handler' (per record) or 'batch_handler' (per batch)")
        return self

    @model_validator(mode="after")
    def _one_concurrency(self) -> "RouteConfig":
        if self.max_concurrency is not None and self.parallelization_factor is not None:
            raise ValueError("set max_concurrency only: parallelization_factor is its Lambda-compatible alias")
        return self

    @property
    def import_string(self) -> str:
        return self.handler or self.batch_handler or ""

    @property
    def concurrency(self) -> int:
        """Calls (batches, for a batch route) in flight per shard: ``max_concurrency``, or
        ``parallelization_factor`` (Lambda's knob: concurrent batches per shard, order kept
        per key, which is what max_concurrency promises, without Lambda's lanes)."""
        return self.max_concurrency or self.parallelization_factor or DEFAULT_MAX_CONCURRENCY

    @property
    def handler_key(self) -> str:
        """The config key that names the handler, for error messages."""
        return "handler" if self.handler is not None else "batch_handler"

    def filter_predicate(self, path: str = "filters") -> RecordPredicate | None:
        """The ``filters`` as one predicate (``None``: no filters), compiled on the first call;
        a bad pattern raises :class:`FilterPatternError` whose path starts with ``path``."""
        if not self._filters_compiled:
            self._filter_predicate = compile_filters(self.filters, path)
            self._filters_compiled = True
        return self._filter_predicate


class HooksConfig(_Section):
    """Lifecycle hooks (import strings, ``package.module:function``, like handlers): each is
    an ``async def hook(info)`` taking one info object (worker/lifecycle/hooks.py).
    ``on_start`` builds shared clients once (what it returns, or sets on
    ``info.resources``, is ``ctx.resources`` in every handler); ``on_stop`` closes them.
    The shard hooks are told a shard started, ended (SHARD_END, checkpointed) or was lost."""

    on_start: str | None = Field(None, pattern=_IMPORT_STRING)
    on_stop: str | None = Field(None, pattern=_IMPORT_STRING)
    on_shard_start: str | None = Field(None, pattern=_IMPORT_STRING)
    on_shard_end: str | None = Field(None, pattern=_IMPORT_STRING)
    on_lease_lost: str | None = Field(None, pattern=_IMPORT_STRING)
    timeout_seconds: float = Field(
        30.0, gt=0, le=3600, description="a hook still running then is cancelled (and counted as failed)"
    )

    @field_validator("on_start", "on_stop", "on_shard_start", "on_shard_end", "on_lease_lost", mode="before")
    @classmethod
    def _import_string(cls, value: Any) -> Any:
        return _check_import_string(value) if isinstance(value, str) else value

    def named(self) -> dict[str, str]:
        """Hook name -> import string, for the hooks the config names."""
        return {name: value for name in HOOK_NAMES if (value := getattr(self, name)) is not None}


HOOK_NAMES = ("on_start", "on_stop", "on_shard_start", "on_shard_end", "on_lease_lost")


class MetricsConfig(_Section):
    host: str = "0.0.0.0"
    port: int = Field(9400, ge=0, le=65535, description="0 disables the HTTP server")


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "console"] = "json"


class TracingConfig(_Section):
    """OpenTelemetry traces over OTLP/HTTP (needs the ``otel`` extra; see docs/operations.md).

    ``enabled`` unset means "on when the standard environment names a collector"
    (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), so an
    operator can turn tracing on without touching the config. Unset values fall back to the
    SDK's own environment variables (``OTEL_SERVICE_NAME``, ``OTEL_EXPORTER_OTLP_HEADERS`` ...).
    """

    enabled: bool | None = None
    endpoint: str | None = Field(
        None, pattern=r"^https?://", description="full OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces"
    )
    service_name: str | None = Field(None, min_length=1)
    sampling_ratio: float | None = Field(
        None, ge=0, le=1, description="parent-based: a root trace is kept with this probability; children follow"
    )
    headers: dict[str, str] = Field(default_factory=dict, description="sent with every export (auth)")
    export_timeout_seconds: float = Field(10.0, gt=0, le=300)


class ObservabilityConfig(_Section):
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    tracing: TracingConfig = TracingConfig()


class Config(_Section):
    worker: WorkerSettings = WorkerSettings()
    aws: AwsConfig = AwsConfig()
    tables: dict[str, TableConfig]
    leases: LeaseConfig = LeaseConfig()
    reader: ReaderConfig = ReaderConfig()
    processing: ProcessingConfig = ProcessingConfig()
    publisher: PublisherConfig = PublisherConfig(type="none")
    routes: list[RouteConfig] = Field(min_length=1)
    hooks: HooksConfig = HooksConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    # The folder of the file it was loaded from: handler modules may sit next to it.
    _directory: Path | None = PrivateAttr(None)

    @property
    def directory(self) -> Path | None:
        """The config file's folder (``None`` when parsed from a dict)."""
        return self._directory

    @property
    def consumed_tables(self) -> list[str]:
        """Logical tables whose streams this worker reads: those that routes name."""
        return sorted({route.table for route in self.routes})


def _unknown_table(name: str | None, tables: dict[str, TableConfig]) -> str:
    """``unknown table 'x' (known: ...)``, with the closest known name when one is close."""
    reason = f"unknown table {name!r} (known: {', '.join(sorted(tables))})"
    close = difflib.get_close_matches(str(name), list(tables), n=1, cutoff=0.6)
    return f"{reason}; did you mean {close[0]!r}?" if close else reason


def _cross_check(config: Config) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    names: set[str] = set()
    for index, route in enumerate(config.routes):
        if route.table not in config.tables:
            problems.append((f"routes[{index}].table", _unknown_table(route.table, config.tables)))
        if route.name in names:
            problems.append((f"routes[{index}].name", f"duplicate route name {route.name!r}"))
        names.add(route.name)
    if config.publisher.type == "outbox" and config.publisher.table not in config.tables:
        problems.append(("publisher.table", _unknown_table(config.publisher.table, config.tables)))
    for index, route in enumerate(config.routes):
        problems.extend(_check_route_delivery(config, index, route))
    dead_letter = config.processing.dead_letter
    if dead_letter is not None and dead_letter.table is not None and dead_letter.table not in config.tables:
        problems.append(("processing.dead_letter.table", _unknown_table(dead_letter.table, config.tables)))
    return problems


def _check_route_delivery(config: Config, index: int, route: RouteConfig) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    where = f"routes[{index}]"
    try:
        route.filter_predicate(f"{where}.filters")
    except FilterPatternError as exc:
        problems.append((exc.path, exc.reason))
    retry = route.retry or config.processing.retry
    dead_letter = route.dead_letter or config.processing.dead_letter
    if retry.bounded and dead_letter is None:
        key = f"{where}.retry" if route.retry else "processing.retry"
        problems.append((key, "max_attempts / max_record_age_seconds need a dead-letter destination "
                              f"({where}.dead_letter or processing.dead_letter): records are parked, never dropped"))
    if route.dead_letter is not None and route.dead_letter.table is not None and route.dead_letter.table not in config.tables:
        problems.append((f"{where}.dead_letter.table", _unknown_table(route.dead_letter.table, config.tables)))
    if route.handler is not None and {"batch_size", "batching_window_seconds"} & route.model_fields_set:
        problems.append((f"{where}.batch_size", "batch_size and batching_window_seconds apply to batch_handler routes"))
    return problems


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, path: str, env: dict[str, str], problems: list[tuple[str, str]]) -> Any:
    if isinstance(node, dict):
        return {key: _interpolate(value, _join(path, str(key)), env, problems) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate(value, f"{path}[{i}]", env, problems) for i, value in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        problems.append((path, f"environment variable {name} is not set and has no default"))
        return ""

    value = _VAR.sub(substitute, node)
    if value == "" and node != "":
        return _UNSET  # "${VAR:-}" means "unset": let the field's default apply
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _format_loc(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = _join(path, str(part))
    return path or "(root)"


def _describe(loc: tuple[Any, ...], kind: str, message: str) -> tuple[str, str]:
    """One pydantic error as ``(key path, reason)``; an unknown key gets a "did you mean"."""
    path = _format_loc(loc)
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if kind != "extra_forbidden" or not loc:
        return path, message
    known = _known_keys(loc[:-1])
    if not known:
        return path, "unknown key"
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return path, f"unknown key; {hint}(known here: {', '.join(sorted(known))})"


def _known_keys(parent: tuple[Any, ...]) -> list[str]:
    """The keys the section at ``parent`` accepts, found by walking the model's annotations."""
    node: Any = Config
    for part in parent:
        node = _step(node, part)
        if node is None:
            return []
    model = _model_in(node)
    return list(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        for member in get_args(annotation):
            model = _model_in(member)
            if model is not None:
                return model
    return None


def _step(annotation: Any, part: Any) -> Any:
    """The annotation one key (or list index, or dict key) below ``annotation``."""
    model = _model_in(annotation)
    if model is not None:
        field = model.model_fields.get(str(part))
        return field.annotation if field is not None else None
    for member in (annotation, *get_args(annotation)):
        origin = get_origin(member)
        if origin is list:
            return get_args(member)[0]
        if origin is dict:
            return get_args(member)[1]
    return None


def parse_config(data: Any, env: dict[str, str] | None = None) -> Config:
    """Validate an already-parsed YAML document. Raises :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError([("(root)", "the config must be a mapping of sections")])
    problems: list[tuple[str, str]] = []
    data = _interpolate(data, "", dict(os.environ if env is None else env), problems)
    if problems:
        raise ConfigError(problems)
    try:
        config = Config.model_validate(_drop_unset(data))
    except ValidationError as exc:
        raise ConfigError([_describe(err["loc"], err["type"], err["msg"]) for err in exc.errors()]) from None
    problems = _cross_check(config)
    if problems:
        raise ConfigError(problems)
    return _resolve_tracing(config, dict(os.environ if env is None else env))


_OTLP_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _resolve_tracing(config: Config, env: dict[str, str]) -> Config:
    """Settle ``observability.tracing.enabled`` (unset: on when the OTLP endpoint variables
    are set) and check that the ``otel`` extra is installed when tracing is on."""
    tracing = config.observability.tracing
    key = "observability.tracing.enabled"
    enabled = tracing.enabled
    if enabled is None:
        named = [name for name in _OTLP_ENDPOINT_VARS if env.get(name)]
        enabled = bool(named) and env.get("OTEL_SDK_DISABLED", "").lower() != "true"
        if named:
            key = f"{key} (unset; turned on by {named[0]})"
    if enabled:
        missing = [name for name in ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http")
                   if not _importable(name)]
        if missing:
            raise ConfigError([(key, "tracing needs the 'otel' extra, which is not installed: "
                                     "pip install 'stream-worker[otel]' (or turn tracing off)")])
    observability = config.observability.model_copy(
        update={"tracing": tracing.model_copy(update={"enabled": enabled})})
    return config.model_copy(update={"observability": observability})


class _Unset:
    """A value that interpolated to nothing: the key is dropped so its default applies."""


_UNSET: Any = _Unset()


def _drop_unset(node: Any, depth: int = 0) -> Any:
    # An empty top-level section (``leases:`` with nothing under it) also means "defaults";
    # deeper explicit nulls are kept (a route may match an attribute that is NULL).
    if isinstance(node, dict):
        return {
            key: _drop_unset(value, depth + 1)
            for key, value in node.items()
            if value is not _UNSET and not (depth == 0 and value is None)
        }
    if isinstance(node, list):
        return [_drop_unset(value, depth + 1) for value in node if value is not _UNSET]
    return node


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    """Read, interpolate and validate a YAML config file. Raises :class:`ConfigError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("(file)", f"cannot read {path}: {exc.strerror or exc}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError([("(yaml)", f"malformed YAML at {where}: {getattr(exc, 'problem', exc)}")]) from None
    config = parse_config(data, env)
    config._directory = Path(path).resolve().parent
    return config
