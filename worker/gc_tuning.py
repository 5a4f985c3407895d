"""Garbage-collector settings for the long-running ``stream-worker run`` process.

With CPython's defaults the cyclic collector took about a quarter of the worker's CPU per
record on the pipeline benchmark (bench/README.md): every page of records allocates tens of
thousands of dicts, and those allocations keep triggering collections that walk the SDK's
service models and everything else alive since start-up, again and again. Stream records
are plain dicts, lists and strings, freed by reference counting as soon as they are
handled; the collector is only needed for the rare cycles.

So once started, the worker collects once and *freezes* what is alive then (SDK models,
config, handlers, clients: they live as long as the process), so that later collections
never walk it again, and raises the youngest generation's threshold so that collections
run less often. Tests that run the App in-process leave the collector alone.

What is frozen is never collected, even if it later becomes garbage: the supervisor's
start-up tasks and anything else alive at that moment. That is a one-time, bounded amount
(what start-up created), traded for every later collection skipping it.
"""

from __future__ import annotations

import gc

# Allocations (minus deallocations) between two young-generation collections; default 700.
GEN0_THRESHOLD = 20_000


def tune_garbage_collector() -> None:
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
