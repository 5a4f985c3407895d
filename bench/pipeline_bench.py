"""Pipeline benchmark: records/s of the worker against a bare GetRecords loop, on the same
preloaded stream of the same simulator process.

* The simulator runs as its own process (throttle off), one stream ``load`` with
  ``--shards`` shards, preloaded with ``--records`` order-like records (6 attributes).
* bare: this process, one aiobotocore ``dynamodbstreams`` client; for each shard in turn
  GetShardIterator TRIM_HORIZON, then GetRecords Limit 1000 until the shard's preloaded
  records are read, decoding every NewImage with boto3's TypeDeserializer (the work any
  consumer must do). Also measured: the same loop over all shards at once (asyncio.gather).
* worker: ``stream-worker run`` as its own process with one route whose handler decodes
  the NewImage and counts (bench/noop_handlers.py), lease table on a moto server (a fresh
  lease table per round), short idle polls. Time from the first consumer's "start shard"
  log line (its GetShardIterator follows) to the handler seeing the last record, so the
  process start-up (imports, lease table, discovery, lease taking) is not counted.

Each round runs bare, then worker, then bare concurrent, back to back.
``pipeline_vs_bare_ratio`` = worker records/s / sequential bare records/s, the median of
the per-round ratios (the machine is shared: its load moves between rounds); records/s
are the medians of the rounds. ``pipeline_vs_bare_cpu_ratio`` = bare CPU per record /
worker CPU per record (utime + stime of each process over its measured span), which the
load of other processes barely moves. Then (``--profile``, on by default when py-spy is
installed) one more round of each under py-spy, not measured, whose summary goes to
bench/profiles/pipeline.txt.

With ``--tracing [RATIO]`` every round also runs the worker with tracing on (sampling ratio
RATIO, default 1.0: every record traced)
(``observability.tracing``), exporting over OTLP/HTTP to a receiver in this process that
decodes and counts the spans (worker/local/otlp_receiver.py); the span queue is made large
enough (``OTEL_BSP_MAX_QUEUE_SIZE``) that no span is dropped, so the export is paid in full.
``tracing_cost_us_per_record`` = traced worker CPU per record - untraced worker CPU per
record (medians).

Run: ``python -m bench.pipeline_bench [--records 40000] [--shards 4] [--rounds 5] [--no-profile] [--tracing]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from aiobotocore.session import get_session
from boto3.dynamodb.types import TypeDeserializer

from bench.results import merge, print_table
from bench.support import (
    provenance_rows,
    worker_source_hash,
    load_average,
    PY_SPY,
    BenchMoto,
    Processes,
    cpu_seconds,
    first_event_time,
    print_profile,
    start_simulator,
    start_worker,
    summarize_collapsed,
    wait_for,
    write_config,
)

from worker.local.simulator import RemoteSimulator

TABLE = "load"


def order_item(i: int, rng: random.Random) -> dict[str, Any]:
    """An order-like item, DynamoDB-typed: 6 attributes (key included)."""
    return {
        "orderId": {"S": f"order-{i:07d}-{rng.getrandbits(32):08x}"},
        "customerId": {"S": f"customer-{rng.randrange(10_000):05d}"},
        "status": {"S": rng.choice(["NEW", "PAID", "PACKED"])},
        "amount": {"N": f"{rng.randrange(100, 100_000) / 100:.2f}"},
        "quantity": {"N": str(rng.randrange(1, 20))},
        "createdAt": {"S": f"2026-11-27T12:{rng.randrange(60):02d}:{rng.randrange(60):02d}.{rng.randrange(1000):03d}Z"},
    }


def preload(sim: RemoteSimulator, records: int) -> dict[str, int]:
    """Put ``records`` items; returns how many landed on each shard."""
    rng = random.Random(7)
    per_shard: dict[str, int] = {}
    chunk = 2000
    for start in range(0, records, chunk):
        entries = []
        for i in range(start, min(records, start + chunk)):
            item = order_item(i, rng)
            entries.append({"keys": {"orderId": item["orderId"]}, "new_image": item, "typed": True})
        for shard, _seq in sim.put_records(table_name=TABLE, entries=entries):
            per_shard[shard] = per_shard.get(shard, 0) + 1
    return per_shard


# -- bare loop ---------------------------------------------------------------------------


async def read_shard(client: Any, arn: str, shard: str, expected: int, deserializer: TypeDeserializer) -> int:
    iterator = (await client.get_shard_iterator(StreamArn=arn, ShardId=shard,
                                                ShardIteratorType="TRIM_HORIZON"))["ShardIterator"]
    seen = 0
    while iterator and seen < expected:
        page = await client.get_records(ShardIterator=iterator, Limit=1000)
        for record in page["Records"]:
            image = record["dynamodb"].get("NewImage") or {}
            {name: deserializer.deserialize(value) for name, value in image.items()}
            seen += 1
        iterator = page.get("NextShardIterator")
        if not page["Records"]:
            break
    return seen


async def bare_round(url: str, arn: str, per_shard: dict[str, int], concurrent: bool) -> tuple[float, float]:
    """Records/s of the bare loop (client created before the clock starts) and the CPU
    microseconds this process spent per record."""
    deserializer = TypeDeserializer()
    session = get_session()
    async with session.create_client("dynamodbstreams", region_name="us-east-1", endpoint_url=url) as client:
        await client.describe_stream(StreamArn=arn, Limit=1)  # connection and model warm, untimed
        started, cpu = time.perf_counter(), time.process_time()
        if concurrent:
            counts = await asyncio.gather(*(read_shard(client, arn, s, n, deserializer) for s, n in per_shard.items()))
        else:
            counts = [await read_shard(client, arn, s, n, deserializer) for s, n in per_shard.items()]
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    total = sum(counts)
    if total != sum(per_shard.values()):
        raise RuntimeError(f"bare loop read {total} of {sum(per_shard.values())} records")
    return total / elapsed, cpu / total * 1e6


# -- the worker --------------------------------------------------------------------------


def worker_round(procs: Processes, workdir: Path, round_no: int, moto_url: str, sim_url: str, arn: str,
                 total: int, profile_to: Path | None = None,
                 traces_url: str | None = None,
                 sampling: float = 1.0,
                 exported: Callable[[], bool] | None = None) -> tuple[float, float, float, dict[str, Any] | None]:
    """(records/s, CPU microseconds per record, seconds from launch to the first consumer
    start, py-spy summary if ``profile_to``). ``traces_url``: tracing on at ``sampling``;
    ``exported`` says when the spans have reached the receiver: the CPU is read after it, so
    the export (in the worker's span processor thread) is counted too."""
    variant = f"{round_no}-traced" if traces_url else str(round_no)
    done_file = workdir / f"done-{variant}.txt"
    log = workdir / f"worker-{variant}.log"
    observability: dict[str, Any] = {"metrics": {"port": 0}, "logging": {"level": "INFO", "format": "json"}}
    env = None
    if traces_url is not None:
        observability["tracing"] = {"enabled": True, "endpoint": traces_url, "sampling_ratio": sampling}
        env = {"OTEL_BSP_MAX_QUEUE_SIZE": str(4 * total + 10_000)}  # never drop: pay the whole export
    config = write_config(workdir / f"worker-{variant}.yaml", {
        "worker": {"id": f"bench-pipeline-{variant}", "shutdown_timeout_seconds": 10},
        "aws": {"region": "us-east-1", "endpoint_url": moto_url, "endpoints": {"dynamodbstreams": sim_url}},
        "tables": {TABLE: {"name": TABLE, "key": "orderId",
                           "stream": {"arn": arn, "starting_position": "TRIM_HORIZON"}}},
        "leases": {"table": f"bench-pipeline-leases-{variant}", "poll_interval_seconds": 0.1},
        "reader": {"idle_poll_seconds": 0.02, "max_idle_poll_seconds": 0.1},
        "publisher": {"type": "outbox", "table": TABLE},
        "routes": [{"name": "noop", "table": TABLE, "handler": "bench.noop_handlers:noop_counting",
                    "options": {"expect": total, "done_file": str(done_file)}}],
        "observability": observability,
    })
    launched = time.time()
    proc = start_worker(procs, config, log, env=env)
    spy: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: first_event_time(log, "start shard") is not None, timeout=60, interval=0.01,
                 what="first consumer start", alive=proc)
        cpu_start = cpu_seconds(proc.pid)
        if profile_to is not None and PY_SPY is not None:
            spy = subprocess.Popen([PY_SPY, "record", "--pid", str(proc.pid), "--duration", "120", "--rate", "250",
                                    "--format", "raw", "--output", str(profile_to), "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(done_file.exists, timeout=120, interval=0.02, what="worker handled every record", alive=proc)
        if exported is not None:
            wait_for(exported, timeout=120, interval=0.02, what="spans exported", alive=proc)
        cpu_used = cpu_seconds(proc.pid) - cpu_start
        time.sleep(0.05)  # the file is written in one call; let it land
        finished = float(done_file.read_text().split()[0])
        first_start = first_event_time(log, "start shard")
        assert first_start is not None
    finally:
        procs.stop(proc)
        if spy is not None:
            spy.wait(timeout=60)
    summary = None
    if spy is not None and profile_to is not None and profile_to.exists():
        summary = summarize_collapsed(profile_to.read_text())
    return total / (finished - first_start), cpu_used / total * 1e6, first_start - launched, summary


def profile_bare(url: str, arn: str, per_shard: dict[str, int], raw: Path, seconds: int = 8) -> dict[str, Any] | None:
    """py-spy on this very process while it runs the sequential bare loop again and again."""
    if PY_SPY is None:
        return None
    spy = subprocess.Popen([PY_SPY, "record", "--pid", str(os.getpid()), "--duration", str(seconds), "--rate", "250",
                            "--format", "raw", "--output", str(raw), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # let it attach
    while spy.poll() is None:
        asyncio.run(bare_round(url, arn, per_shard, concurrent=False))
    spy.wait()
    return summarize_collapsed(raw.read_text()) if raw.exists() else None


def run(records: int, shards: int, rounds: int, profile: bool, sampling: float | None = None) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    load_before = load_average()
    source = worker_source_hash()
    bare: list[float] = []
    bare_cpu: list[float] = []
    bare_concurrent: list[float] = []
    worker: list[float] = []
    worker_cpu: list[float] = []
    startup: list[float] = []
    profiles: list[str] = []
    traced_rate: list[float] = []
    traced_cpu: list[float] = []
    spans_received: list[int] = []
    with contextlib.ExitStack() as stack:
        moto = BenchMoto().start()
        stack.callback(moto.stop)
        receiver = None
        if sampling is not None:
            from worker.local.otlp_receiver import OtlpReceiver

            receiver = OtlpReceiver(keep_spans=False).start()
            stack.callback(receiver.stop)
        procs = stack.enter_context(Processes())  # exits first: workers stop before moto
        sim_url, arns, _ = start_simulator(procs, [f"{TABLE}:{shards}:orderId"], "--no-throttle",
                                           log=workdir / "simulator.log")
        sim = RemoteSimulator(sim_url, timeout=120)
        arn = arns[TABLE]
        per_shard = preload(sim, records)
        total = sum(per_shard.values())
        print(f"preloaded {total} records on {len(per_shard)} shards: {sorted(per_shard.values())}; logs in {workdir}")
        for round_no in range(rounds):
            rate, cpu_us = asyncio.run(bare_round(sim_url, arn, per_shard, concurrent=False))
            bare.append(rate)
            bare_cpu.append(cpu_us)
            rate, cpu_us, boot, _ = worker_round(procs, workdir, round_no, moto.url, sim_url, arn, total)
            worker.append(rate)
            worker_cpu.append(cpu_us)
            startup.append(boot)
            bare_concurrent.append(asyncio.run(bare_round(sim_url, arn, per_shard, concurrent=True))[0])
            print(f"round {round_no}: bare {bare[-1]:,.0f}/s ({bare_cpu[-1]:.0f} us CPU/record), "
                  f"worker {worker[-1]:,.0f}/s ({worker_cpu[-1]:.0f} us CPU/record), "
                  f"bare concurrent {bare_concurrent[-1]:,.0f}/s (worker start-up {boot:.2f} s, not counted)")
            if receiver is not None:
                before = receiver.span_count
                # Two spans a sampled record; the last part-filled export batch (512 spans)
                # waits for the processor's 5 s tick, so it is not waited for.
                expected = before + int(2 * total * sampling) - 600
                rate, cpu_us, _, _ = worker_round(procs, workdir, round_no, moto.url, sim_url, arn, total,
                                                  traces_url=receiver.traces_url, sampling=sampling,
                                                  exported=lambda: receiver.span_count >= expected)
                traced_rate.append(rate)
                traced_cpu.append(cpu_us)
                spans_received.append(receiver.span_count - before)  # the worker flushed on its stop
                print(f"round {round_no}: traced worker {rate:,.0f}/s ({cpu_us:.0f} us CPU/record), "
                      f"{spans_received[-1]:,} spans received")
        if profile:
            # Separate, unmeasured rounds: py-spy slows what it samples a little.
            bare_profile = profile_bare(sim_url, arn, per_shard, workdir / "bare.pyspy")
            _, _, _, worker_profile = worker_round(procs, workdir, rounds, moto.url, sim_url, arn, total,
                                                   profile_to=workdir / "worker.pyspy")
            for title, summary in (("bare loop (py-spy)", bare_profile), ("worker (py-spy)", worker_profile)):
                if summary is not None:
                    profiles.append(print_profile(title, summary))
    # Each round measures bare and worker back to back; on a shared machine the load moves
    # between rounds, so the headline is the median of the per-round ratios.
    ratios = [w / b for w, b in zip(worker, bare)]
    ratio = statistics.median(ratios)
    med_bare, med_worker, med_conc = (statistics.median(v) for v in (bare, worker, bare_concurrent))
    cpu_bare, cpu_worker = statistics.median(bare_cpu), statistics.median(worker_cpu)
    cpu_ratio = cpu_bare / cpu_worker

    def listed(values: list[float], fmt: str = "{:,.0f}") -> str:
        return ", ".join(fmt.format(v) for v in values)

    rows = [
        ("records x shards", f"{total} x {shards}", "6 attributes each, simulator process, throttle off"),
        ("bare_records_per_s", f"{med_bare:,.0f}", f"median of {rounds}: {listed(bare)}"),
        ("bare_concurrent_records_per_s", f"{med_conc:,.0f}", f"shards read at once: {listed(bare_concurrent)}"),
        ("pipeline_records_per_s", f"{med_worker:,.0f}", f"median of {rounds}: {listed(worker)}"),
        ("pipeline_vs_bare_ratio", f"{ratio:.2f}x",
         f"target >= 3x, goal 6x; median of per-round ratios {listed(ratios, '{:.2f}')}"),
        ("pipeline_vs_bare_concurrent_ratio", f"{med_worker / med_conc:.2f}x", "informational"),
        ("bare CPU per record", f"{cpu_bare:.0f} us", f"this process, process_time: {listed(bare_cpu)}"),
        ("worker CPU per record", f"{cpu_worker:.0f} us", f"/proc/<pid>/stat utime+stime: {listed(worker_cpu)}"),
        ("pipeline_vs_bare_cpu_ratio", f"{cpu_ratio:.2f}x", "bare CPU/record / worker CPU/record (load-independent)"),
        ("worker start-up (not counted)", f"{min(startup):.2f} s", "launch to first 'start shard'"),
    ]
    traced_rows: dict[str, Any] = {}
    if sampling is not None:
        med_traced, cpu_traced = statistics.median(traced_rate), statistics.median(traced_cpu)
        traced_ratios = [t / w for t, w in zip(traced_rate, worker)]
        rows += [
            ("traced_records_per_s", f"{med_traced:,.0f}",
             f"tracing on, sampling ratio {sampling:g}, OTLP/HTTP to a local receiver; "
             f"median of {rounds}: {listed(traced_rate)}"),
            ("traced_vs_untraced_ratio", f"{statistics.median(traced_ratios):.2f}x",
             f"median of per-round ratios {listed(traced_ratios, '{:.2f}')}"),
            ("traced worker CPU per record", f"{cpu_traced:.0f} us", listed(traced_cpu)),
            ("tracing_cost_us_per_record", f"{cpu_traced - cpu_worker:.0f} us", "traced - untraced CPU per record"),
            ("spans received per round", listed(spans_received),
             f"{total} records: 2 spans each (when sampled) + checkpoints"),
        ]
        traced_rows = {
            "pipeline_traced_sampling_ratio": sampling,
            "pipeline_traced_records_per_s": round(med_traced, 1),
            "pipeline_traced_vs_untraced_ratio": round(statistics.median(traced_ratios), 3),
            "pipeline_traced_worker_cpu_us_per_record": round(cpu_traced, 1),
            "pipeline_tracing_cost_us_per_record": round(cpu_traced - cpu_worker, 1),
            "pipeline_traced_spans_received": spans_received,
        }
    rows += provenance_rows(source, load_before)
    print_table("pipeline: worker vs bare GetRecords loop", rows)
    if profiles:
        out = Path(__file__).resolve().parent / "profiles"
        out.mkdir(exist_ok=True)
        (out / "pipeline.txt").write_text("\n\n".join(profiles) + "\n")
    return {
        "pipeline_bench_load_avg": load_before,
        "pipeline_bench_worker_source": source,
        "pipeline_vs_bare_ratio": round(ratio, 3),
        "pipeline_records_per_s": round(med_worker, 1),
        "bare_records_per_s": round(med_bare, 1),
        "bare_concurrent_records_per_s": round(med_conc, 1),
        "pipeline_vs_bare_concurrent_ratio": round(med_worker / med_conc, 3),
        "pipeline_bare_cpu_us_per_record": round(cpu_bare, 1),
        "pipeline_worker_cpu_us_per_record": round(cpu_worker, 1),
        "pipeline_vs_bare_cpu_ratio": round(cpu_ratio, 3),
        "pipeline_bench_rounds": rounds,
        "pipeline_bench_records": total,
        "pipeline_bench_shards": shards,
        **traced_rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=40_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                        help="after the measured rounds, one py-spy round of each (if py-spy is installed)")
    parser.add_argument("--tracing", type=float, nargs="?", const=1.0, default=None, metavar="RATIO",
                        help="also run the worker with tracing on (sampling ratio, default 1.0) in every round")
    args = parser.parse_args()
    merge("pipeline", run(args.records, args.shards, args.rounds, args.profile, args.tracing))


if __name__ == "__main__":
    main()
