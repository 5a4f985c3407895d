"""Metrics updated once per record, without a lock per update.

prometheus-client guards every value with a ``threading.Lock`` and checks, on every call,
that the child is observable: a counter, a histogram and a gauge per handled record cost
about 2.6 us of CPU on the pipeline benchmark, more than a tenth of what the worker spends
on a record (bench/README.md). Handler outcomes are counted on the event loop thread only,
so these metrics keep plain numbers per label set and hand them to prometheus-client at
scrape time through its custom-collector interface (``collect()`` on the registry); the
exposition (names, ``_total``, ``_created``, buckets, exemplars) is the library's.

A scrape runs on the metrics server's thread and reads while the loop writes. A counter
or gauge value is one float (read whole, under the GIL). A histogram is read bucket by
bucket, so a scrape may miss an observation that lands during it, as with
prometheus-client's own histogram, whose sum and buckets have separate locks; the
cumulative buckets and the count come from one copy, so they always agree.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from bisect import bisect_left
from typing import Callable, Generic, Iterable, Iterator, Sequence, TypeVar

from prometheus_client import REGISTRY
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
    from all sources are summed, so several engines in one process (tests) add up. A source
    reads state the event loop owns from the scrape thread: it must only read (copy a
    collection before walking it) and never block."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry | None = REGISTRY) -> None:
        self._sources: list[GaugeSource] = []
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
        for source in list(self._sources):
            for labels, value in source():
                totals[labels] = totals.get(labels, 0.0) + value
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
            family.add_metric(key, child.value, created=child.created)
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
            family.add_sample(f"{self.name}_created", dict(zip(self.labelnames, key)), child.created)
        yield family
