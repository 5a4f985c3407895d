"""Property tests of the processing engine: ShardPipeline + RouteDelivery + ShardProgress.

No AWS: handlers, the dead-letter destination and the observer are fakes from
``pipeline_fakes``; back-off sleeps are one loop turn. Each hypothesis example runs its own
event loop (``asyncio.run`` inside a sync test).

1. Any shard, routes, max_concurrency, process-wide bound and failure plans: every routed
   (record, route) ends handled once or parked once; per-key order holds; no key is in two
   calls of a route at once; calls in flight stay within max_concurrency per route and the
   process-wide bound in all; the progress ends at the last record; the checkpoint candidate
   never moves back nor passes an unfinished record.
2. Batch partial failures: only what failed is passed again.
3. Infinite retries without a dead-letter destination: a poison key blocks only its own
   later records, whatever max_concurrency (1 included).
4. A failing dead-letter destination holds the record (and the checkpoint) until a send
   succeeds; the record is then parked exactly once.
"""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.unit.pipeline_fakes import (
    EVENTS,
    MAX_AGE,
    OK,
    SHARD_ID,
    STREAM_ARN,
    Harness,
    Plan,
    RouteSpec,
    Scenario,
    build_route,
)
from worker.deadletter import dead_letter_id

KEYS = "abcdefgh"

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- strategies ----------------------------------------------------------------------------

plans = st.one_of(
    st.just(OK),
    st.just(OK),
    st.builds(Plan, st.just("flaky"), st.integers(0, 3)),
    st.just(Plan("permanent")),
    st.just(Plan("always")),
)

event_sets = st.sampled_from([
    frozenset(EVENTS), frozenset(EVENTS), frozenset({"INSERT", "MODIFY"}), frozenset({"REMOVE"}),
])


@st.composite
def route_specs(draw: st.DrawFn, name: str, n: int) -> RouteSpec:
    batch = draw(st.booleans())
    return RouteSpec(
        name=name,
        batch=batch,
        batch_size=draw(st.integers(1, 8)) if batch else 1,
        mode=draw(st.sampled_from(["raise", "partial"])) if batch else "raise",
        bisect=draw(st.booleans()),
        concurrency=draw(st.integers(1, 6)),
        max_attempts=draw(st.integers(1, 4)),
        events=draw(event_sets),
        window=draw(st.sampled_from([0.0, 0.0, 0.0, 0.002])),
        max_age=draw(st.sampled_from([-1, -1, MAX_AGE])),
        plans=tuple(draw(st.lists(plans, min_size=n, max_size=n))),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(1, 60))
    alphabet = KEYS[: draw(st.integers(1, 6))]
    route_count = draw(st.integers(1, 2))
    return Scenario(
        keys=draw(st.lists(st.sampled_from(alphabet), min_size=n, max_size=n)),
        events=draw(st.lists(st.sampled_from(EVENTS), min_size=n, max_size=n)),
        skipped=frozenset(draw(st.sets(st.integers(0, n - 1), max_size=3))),
        routes=[draw(route_specs(f"route{k}", n)) for k in range(1, route_count + 1)],
        yields=draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)),
        dead_letters=True,
        dead_letter_failures=draw(st.integers(0, 3)),
        max_in_flight=draw(st.one_of(st.just(100_000), st.integers(1, 12))),
        call_slots=draw(st.one_of(st.none(), st.integers(1, 4))),
        sort_key=draw(st.booleans()),
        old=draw(st.sampled_from([0, 0, 0, draw(st.integers(1, n))])),
    )


# -- 1. every record finishes once, in key order -------------------------------------------


def _check_letters(harness: Harness) -> None:
    """Letters carry the record as read, the route, the position and a deterministic id."""
    for letter in harness.ledger.letters:
        record = harness.records[harness.ledger.position[letter.sequence_number]]
        assert letter.record == dict(record.raw)
        assert (letter.stream_arn, letter.shard_id, letter.worker_id) == (STREAM_ARN, SHARD_ID, "w")
        assert letter.id == dead_letter_id(STREAM_ARN, SHARD_ID, letter.sequence_number, letter.route)


def _check_predicted_outcomes(harness: Harness) -> None:
    """Where the policy fixes the outcome of a plan, the engine must produce exactly it."""
    ledger = harness.ledger
    letters = {(letter.route, ledger.position[letter.sequence_number]): letter for letter in ledger.letters}
    for spec in harness.scenario.routes:
        m = spec.max_attempts
        for i in range(len(harness.records)):
            if spec.name not in ledger.routes_of[i]:
                continue
            plan = spec.plan(i)
            handled = ledger.handled[(spec.name, i)] == 1
            where = f"{spec.name} #{i} {plan}"
            if spec.max_age != -1 and i < harness.scenario.old:
                # Past max_record_age_seconds: parked before any call, whatever its plan.
                letter = letters[(spec.name, i)]
                assert (letter.error_class, letter.attempts) == ("record_too_old", 0), where
                assert ledger.calls[(spec.name, i)] == 0, where
                continue
            if not plan.can_succeed:
                assert not handled, f"{where}: a record that always fails was handled"
            if not spec.batch:
                # Per-record: the plan alone decides outcome, calls and the letter.
                if plan.kind == "ok" or (plan.kind == "flaky" and plan.failures < m):
                    assert handled, f"{where}: should be handled"
                    assert ledger.calls[(spec.name, i)] == plan.failures + 1, where
                else:
                    letter = letters[(spec.name, i)]
                    permanent = plan.kind == "permanent"
                    assert letter.error_class == ("permanent" if permanent else "exhausted"), where
                    assert letter.attempts == (1 if permanent else m), where
                    assert ledger.calls[(spec.name, i)] == letter.attempts, where
            elif spec.mode == "raise" and spec.bisect:
                # Bisection isolates failures and counts attempts only for a record alone,
                # so a record that succeeds within max_attempts of its own calls is handled.
                if plan.kind == "ok" or (plan.kind == "flaky" and plan.failures < m):
                    assert handled, f"{where}: a good record was taken down by a neighbour"


@SETTINGS
@given(scenarios())
def test_every_routed_record_is_handled_or_parked_once_in_key_order(scenario: Scenario) -> None:
    harness = Harness(scenario)
    ledger = asyncio.run(harness.run())
    ledger.assert_complete([spec.name for spec in scenario.routes])
    for spec in scenario.routes:
        assert ledger.peak[spec.name] <= spec.concurrency, f"{spec.name}: {ledger.peak[spec.name]} calls at once"
    if scenario.call_slots is not None:
        assert ledger.peak_total <= scenario.call_slots, f"{ledger.peak_total} calls at once in all"
    _check_predicted_outcomes(harness)
    _check_letters(harness)
    # Every failed dead-letter write is retried until it succeeds (and none is made up).
    parks = sum(ledger.parked.values())
    assert len(ledger.send_failures) == (scenario.dead_letter_failures if parks else 0)


# -- 2. partial batch failures: retry only what failed -------------------------------------


@st.composite
def partial_failure_scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(1, 50))
    alphabet = KEYS[: draw(st.integers(1, 5))]
    flaky = st.one_of(st.just(OK), st.builds(Plan, st.just("flaky"), st.integers(1, 3)))
    spec = RouteSpec(
        name="batch",
        batch=True,
        batch_size=draw(st.integers(2, 10)),
        mode=draw(st.sampled_from(["partial", "partial-unordered"])),
        bisect=draw(st.booleans()),
        concurrency=draw(st.integers(1, 4)),
        max_attempts=-1,
        window=draw(st.sampled_from([0.0, 0.0, 0.002])),
        plans=tuple(draw(st.lists(flaky, min_size=n, max_size=n))),
    )
    return Scenario(
        keys=draw(st.lists(st.sampled_from(alphabet), min_size=n, max_size=n)),
        routes=[spec],
        yields=draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)),
        dead_letters=False,
    )


@SETTINGS
@given(partial_failure_scenarios())
def test_partial_batch_failures_retry_only_the_failed_records(scenario: Scenario) -> None:
    harness = Harness(scenario)
    ledger = asyncio.run(harness.run())
    # on_call flags any record passed again after a successful call or after finishing.
    ledger.assert_complete(["batch"])
    (spec,) = scenario.routes
    for i in range(len(harness.records)):
        calls = ledger.calls[("batch", i)]
        failures = spec.plan(i).failures
        assert ledger.handled[("batch", i)] == 1 and ledger.parked[("batch", i)] == 0
        if spec.mode == "partial-unordered":
            # Each call either fails the record (its plan) or is its last one.
            assert calls == failures + 1, f"#{i}: {calls} calls for {failures} failures"
        else:
            assert calls >= failures + 1, f"#{i}: {calls} calls for {failures} failures"


# -- 3. a poison key without a dead-letter destination blocks only its own key ------------


@st.composite
def poison_scenarios(draw: st.DrawFn) -> tuple[Scenario, int]:
    n = draw(st.integers(2, 40))
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=n, max_size=n))
    poison_key = draw(st.sampled_from(sorted(set(keys))))
    assume(any(k != poison_key for k in keys))
    poison = keys.index(poison_key)
    healthy = st.one_of(st.just(OK), st.builds(Plan, st.just("flaky"), st.integers(0, 2)))
    route_plans = []
    for i, key in enumerate(keys):
        if i == poison:
            route_plans.append(draw(st.sampled_from([Plan("always"), Plan("permanent")])))
        elif key == poison_key:
            route_plans.append(OK)  # behind the poison: blocked, not failing
        else:
            route_plans.append(draw(healthy))
    kind = draw(st.sampled_from(["record", "raise", "partial"]))
    spec = RouteSpec(
        name="route",
        batch=kind != "record",
        batch_size=draw(st.integers(1, 8)) if kind != "record" else 1,
        mode="raise" if kind == "record" else kind,
        bisect=True,  # without bisection a raising batch holds its innocent records forever
        concurrency=draw(st.integers(1, 6)),
        max_attempts=-1,
        plans=tuple(route_plans),
    )
    scenario = Scenario(
        keys=keys, routes=[spec], dead_letters=False,
        yields=draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)),
        call_slots=draw(st.one_of(st.none(), st.integers(1, 3))),
        sort_key=draw(st.booleans()),
    )
    return scenario, poison


async def _run_with_poison(harness: Harness, poison: int) -> None:
    ledger = harness.ledger
    keys = harness.scenario.keys
    # Every other key, and everything before the poison in stream order, must get through.
    must_finish = {i for i, k in enumerate(keys) if k != keys[poison]} | set(range(poison))

    def others_done() -> bool:
        return all(ledger.done("route", i) for i in must_finish) and ledger.calls[("route", poison)] >= 2

    try:
        await harness.feed(throttle=False)
        await harness.wait_for(others_done, timeout=10)
        assert not ledger.done("route", poison), "the poison record finished without a destination"
        assert ledger.checkpoint_index() == poison - 1, "finished_up_to is not right before the poison"
        calls = ledger.calls[("route", poison)]
        await harness.wait_for(lambda: ledger.calls[("route", poison)] >= calls + 3, timeout=10)
        assert not ledger.done("route", poison)
        assert ledger.checkpoint_index() == poison - 1
        # Records of the poison's key behind it were not handled (a batch may carry them
        # with the poison, and the handler reports them failed: it keeps its key in order).
        assert not any(ledger.handled[("route", i)] for i, k in enumerate(keys) if k == keys[poison] and i > poison)
        assert not harness.progress.idle
    finally:
        await harness.pipeline.close()


@settings(SETTINGS, max_examples=100)
@given(poison_scenarios())
def test_infinite_retries_block_only_the_poison_key(case: tuple[Scenario, int]) -> None:
    scenario, poison = case
    harness = Harness(scenario)
    asyncio.run(_run_with_poison(harness, poison))
    harness.ledger.assert_no_violations()
    assert sum(harness.ledger.parked.values()) == 0
    assert max(harness.ledger.checkpoints) < poison


# -- 4. a failing dead-letter destination holds the record ---------------------------------


@st.composite
def outage_scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(1, 20))
    poisoned = draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=3))
    bad = st.sampled_from([Plan("permanent"), Plan("always")])
    route_plans = tuple(draw(bad) if i in poisoned else OK for i in range(n))
    kind = draw(st.sampled_from(["record", "raise", "partial"]))
    spec = RouteSpec(
        name="route",
        batch=kind != "record",
        batch_size=draw(st.integers(1, 6)) if kind != "record" else 1,
        mode="raise" if kind == "record" else kind,
        bisect=draw(st.booleans()),
        concurrency=draw(st.integers(1, 4)),
        max_attempts=draw(st.integers(1, 3)),
        plans=route_plans,
    )
    return Scenario(
        keys=draw(st.lists(st.sampled_from(KEYS[:4]), min_size=n, max_size=n)),
        routes=[spec],
        yields=draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)),
        dead_letters=True,
        dead_letter_failures=draw(st.integers(1, 6)),
    )


@settings(SETTINGS, max_examples=100)
@given(outage_scenarios())
def test_failing_dead_letter_writes_hold_the_record_until_stored(scenario: Scenario) -> None:
    harness = Harness(scenario)
    ledger = asyncio.run(harness.run())
    # on_send flags a letter sent for a finished record or behind finished_up_to.
    ledger.assert_complete(["route"])
    assert len(ledger.send_failures) == scenario.dead_letter_failures
    for route, i in ledger.send_failures:
        assert ledger.parked[(route, i)] == 1 and ledger.handled[(route, i)] == 0
    assert len(ledger.letters) == len({letter.id for letter in ledger.letters}), "a record was parked twice"


async def test_dead_letter_outage_holds_the_checkpoint_until_a_send_succeeds() -> None:
    """Deterministic walk-through: the destination is down until told otherwise."""
    spec = RouteSpec(name="route", concurrency=1, max_attempts=1, plans=(OK, Plan("permanent"), OK))
    harness = Harness(Scenario(keys=["a", "b", "a"], routes=[spec], dead_letter_failures=10**9))
    ledger = harness.ledger
    assert harness.dead_letters is not None
    try:
        await harness.feed()
        await harness.wait_for(lambda: len(ledger.send_failures) >= 20)
        await harness.wait_for(lambda: ledger.done("route", 2))
        # #0 handled, #1 held; #2 is of another key: not held up by #1, even with
        # max_concurrency 1 (the dead-letter retry waits without the slot).
        assert ledger.checkpoint_index() == 0
        assert not ledger.done("route", 1) and ledger.handled[("route", 2)] == 1
        assert ledger.parked[("route", 1)] == 0
        harness.dead_letters.fail_first = 0  # the destination recovers
        await asyncio.wait_for(harness.pipeline.drain(), 10)
    finally:
        await harness.pipeline.close()
    ledger.assert_complete(["route"])
    assert ledger.parked[("route", 1)] == 1
    assert harness.progress.finished_up_to == harness.records[-1].sequence_number


# -- regression: a worker that dies from a stray CancelledError ------------------------------


async def test_cancelled_error_escaping_a_handler_fails_the_pipeline_instead_of_hanging() -> None:
    """A handler awaiting something cancelled elsewhere (a gathered task, a shared client's
    future) lets CancelledError escape. It must not be mistaken for close(): the worker is gone,
    so drain() has to raise (the consumer restarts from its checkpoint) rather than hang."""
    spec = RouteSpec(name="route", concurrency=1, max_attempts=2)
    harness = Harness(Scenario(keys=["a", "b"], routes=[spec]))

    async def handler(record: object, ctx: object) -> None:
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        await future

    harness.routes[0] = build_route(spec, handler, dead_letters=True)
    try:
        await harness.feed()
        try:
            await asyncio.wait_for(harness.pipeline.drain(), 5)
        except TimeoutError:
            raise AssertionError("drain() hangs after a worker died") from None
        except RuntimeError as exc:
            assert "cancelled" in str(exc)
        else:
            raise AssertionError("drain() returned although no record finished")
        assert not harness.progress.idle and harness.progress.finished_up_to is None
    finally:
        await harness.pipeline.close()
