"""Metrics updated once per record, without a lock per update.

prometheus-client guards every value with a ``threading.Lock`` and checks, on every call,
that the child is observable: a counter, a histogram and a gauge per handled record cost
about 2.6 us of CPU on the pipeline benchmark, more than a tenth of what the worker spends
on a record (bench/README.md). Handler outcomes are counted on the event loop thread only,
so these metrics keep plain numbers per label set and hand them to prometheus-client at
scrape time through its custom-collector interface (``collect()`` on the registry); the
exposition (names, ``_total``, ``_created``, buckets, exemplars) is the library's.

The worker serves /metrics on its event loop (aiohttp), so a scrape never runs beside an
update. Served from a thread instead (``prometheus_client.start_http_server``), a counter or
gauge value is one float, read whole under the GIL; a histogram is read bucket by bucket,
so a scrape may miss an observation landing during it, as with prometheus-client's own
histogram (its sum and buckets have separate locks); the cumulative buckets and the count
come from one copy, so they always agree.

``ScrapedGauge`` is the other kind: nothing is kept, values are read from live objects
(the key schedulers) when the registry is collected.
"""

from __future__ import annotations

import operator
import time
from abc import ABC, abstractmethod
from bisect import bisect_left
from typing import Callable, Generic, Iterable, Iterator, Sequence, TypeVar

from prometheus_client import REGISTRY
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry
from prometheus_client.samples import Exemplar
from prometheus_client.utils import INF, floatToGoString


_Child = TypeVar("_Child")

# What a scraped gauge's source yields: (label values, value) pairs.
GaugeSource = Callable[[], Iterable[tuple[tuple[str, ...], float]]]


class LoopCollector(ABC):
    """A metric family registered with ``registry``, which reads it on scrape."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry | None) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        if registry is not None:
            registry.register(self)  # type: ignore[arg-type]  # a collector: anything with collect()

    @abstractmethod
    def _family(self) -> Metric: ...

    def describe(self) -> list[Metric]:
        """The family without samples: the registry refuses a name taken twice."""
        return [self._family()]


class LoopFamily(LoopCollector, Generic[_Child]):
    """Children by label values, updated on the event loop."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry | None) -> None:
        self._children: dict[tuple[str, ...], _Child] = {}
        super().__init__(name, documentation, labelnames, registry)

    def labels(self, *values: str) -> _Child:
        """The child for these label values (resolve it once, then update it per record)."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        key = tuple(str(value) for value in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    @abstractmethod
    def _new_child(self) -> _Child: ...

    def _items(self) -> list[tuple[tuple[str, ...], _Child]]:
        return list(self._children.items())  # a copy: the loop may add a child meanwhile


class ScrapedGauge(LoopCollector):
    """A gauge read from live objects at scrape time: nothing is updated per record.

    Sources (``add_source``) yield (label values, value) pairs; values of the same labels
    from all sources are combined by ``aggregate`` (``sum``: counts add up over shards and
    engines; ``max``: the largest, for ages). A source runs wherever the registry is
    collected (the worker's /metrics is served on the event loop): it must only read, never
    await or block, and copy a collection before walking it, so that a registry served from
    a thread (``prometheus_client.start_http_server``) stays safe."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], *,
                 aggregate: Callable[[float, float], float] = operator.add,
                 registry: CollectorRegistry | None = REGISTRY) -> None:
        self._sources: list[GaugeSource] = []
        self._aggregate = aggregate
        super().__init__(name, documentation, labelnames, registry)

    def add_source(self, source: GaugeSource) -> None:
        self._sources.append(source)

    def remove_source(self, source: GaugeSource) -> None:
        if source in self._sources:
            self._sources.remove(source)

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        totals: dict[tuple[str, ...], float] = {}
        aggregate = self._aggregate
        for source in list(self._sources):
            for labels, value in source():
                totals[labels] = value if labels not in totals else aggregate(totals[labels], value)
        family = self._family()
        for labels, value in sorted(totals.items()):
            family.add_metric(labels, value)
        yield family


class CounterChild:
    __slots__ = ("value", "created")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount


class LoopCounter(LoopFamily[CounterChild]):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry | None = REGISTRY) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames, registry)

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for key, child in self._items():
            family.add_metric(key, child.value, created=child.created if _created_series() else None)
        yield family


class GaugeChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = value


class LoopGauge(LoopFamily[GaugeChild]):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry | None = REGISTRY) -> None:
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> GaugeChild:
        return GaugeChild()

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for key, child in self._items():
            family.add_metric(key, child.value)
        yield family


class HistogramChild:
    __slots__ = ("_bounds", "counts", "sum", "exemplars", "created")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds  # upper bounds, +Inf last
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.exemplars: list[Exemplar | None] = [None] * len(bounds)
        self.created = time.time()

    def observe(self, value: float, exemplar: dict[str, str] | None = None) -> None:
        if value != value:  # NaN: into the sum, into no bucket (as prometheus-client does)
            self.sum += value
            return
        index = bisect_left(self._bounds, value)
        self.counts[index] += 1
        self.sum += value
        if exemplar is not None:
            self.exemplars[index] = Exemplar(exemplar, value, time.time())


class LoopHistogram(LoopFamily[HistogramChild]):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], *,
                 buckets: Sequence[float], registry: CollectorRegistry | None = REGISTRY) -> None:
        bounds = sorted(float(bound) for bound in buckets)
        if not bounds or bounds[-1] != INF:
            bounds.append(INF)
        self._bounds = tuple(bounds)
        # The `le` labels as prometheus-client writes them (its helper has no type hints).
        self._le = tuple(floatToGoString(bound) for bound in bounds)  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self._bounds)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for key, child in self._items():
            counts, exemplars, total = list(child.counts), list(child.exemplars), child.sum
            buckets: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
            cumulative = 0
            for le, count, exemplar in zip(self._le, counts, exemplars):
                cumulative += count
                buckets.append((le, cumulative) if exemplar is None else (le, cumulative, exemplar))
            family.add_metric(key, buckets, total)
            if _created_series():
                family.add_sample(f"{self.name}_created", dict(zip(self.labelnames, key)), child.created)
        yield family


def _created_series() -> bool:
    """Whether ``_created`` samples are exposed: prometheus-client's own switch
    (``disable_created_metrics()`` or PROMETHEUS_DISABLE_CREATED_SERIES), which it keeps in
    a module attribute and offers no getter for."""
    return bool(getattr(prometheus_metrics, "_use_created", True))
