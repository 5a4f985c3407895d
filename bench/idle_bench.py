"""Idle benchmark: what one worker holding 1,000 idle shards costs (CPU and memory).

* The simulator runs as its own process: one stream ``idle`` with ``--shards`` shards and
  no records (its default GetRecords limit of 5 per shard and second stays on).
* One ``stream-worker run`` process with a no-op route (bench/noop_handlers.py), lease
  table on a moto server, product defaults everywhere (idle poll 0.25 s backing off to
  1 s, then the process-wide budget of 20 idle polls a second on 0.5 s ticks; lease
  duration 10 s, checkpoint interval 1 s) except ``aws.max_pool_connections``
  (``--pool``, default 256, since 1,000 readers share one HTTP pool).
* Wait until its ``stream_worker_leases_held`` says it holds every shard, then
  ``--settle`` seconds more (every reader is past its idle back-off), then measure over
  ``--window`` seconds: CPU = utime + stime from /proc/<pid>/stat (ticks / SC_CLK_TCK) over
  wall time, RSS = VmRSS from /proc/<pid>/status at the end (VmHWM: the peak). The
  simulator's GetRecords count over the same window gives the idle polling rate.
* If the worker does not hold every lease within ``--hold-timeout`` (it self-fences when
  its heartbeat is starved), the window is measured anyway and the table says how many it
  held. ``idle_cpu_ms_per_get_records`` (worker CPU / GetRecords calls in the window) and
  ``idle_cpu_pct_1000_shards_projected`` (that x one poll per shard-second x 1,000) then
  give the cost at 1,000 held shards.
* ``--profile`` (default on, when py-spy is installed): afterwards, py-spy samples the
  worker for ``--profile-seconds`` and the summary (share of busy samples by layer and by
  function) is printed and written to bench/profiles/idle.txt.

Run: ``python -m bench.idle_bench [--shards 1000] [--window 30]``.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.results import merge, print_table
from bench.support import (
    provenance_rows,
    worker_source_hash,
    load_average,
    BenchMoto,
    Processes,
    count_events,
    cpu_seconds,
    memory_mb,
    metric_value,
    print_profile,
    py_spy_profile,
    start_simulator,
    start_worker,
    wait_for,
    write_config,
)
from worker.local.processes import free_port
from worker.local.simulator import RemoteSimulator

TABLE = "idle"
MAX_IDLE_POLL_SECONDS = 1.0  # reader.max_idle_poll_seconds, the product default: one GetRecords per idle shard per second
CPU_TARGET_PCT = 5.0
RSS_TARGET_MB = 300.0


def metrics(port: int) -> str:
    try:
        body: bytes = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        return body.decode()
    except OSError:
        return ""


def run(shards: int, window: float, settle: float, pool: int, profile: bool, profile_seconds: float,
        hold_timeout: float) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="idle-bench-"))
    load_before = load_average()
    source = worker_source_hash()
    print(f"logs in {workdir}")
    profile_text = ""
    with contextlib.ExitStack() as stack:
        moto = BenchMoto().start()
        stack.callback(moto.stop)
        procs = stack.enter_context(Processes())  # exits first: workers stop before moto
        sim_url, arns, sim_proc = start_simulator(procs, [f"{TABLE}:{shards}:pk"], log=workdir / "simulator.log")
        sim = RemoteSimulator(sim_url)
        port = free_port()
        log = workdir / "worker.log"
        config = write_config(workdir / "worker.yaml", {
            "worker": {"id": "bench-idle", "shutdown_timeout_seconds": 20},
            "aws": {"region": "us-east-1", "endpoint_url": moto.url, "endpoints": {"dynamodbstreams": sim_url},
                    "max_pool_connections": pool},
            "tables": {TABLE: {"name": TABLE, "key": "pk", "stream": {"arn": arns[TABLE]}}},
            "leases": {"table": "bench-idle-leases"},
            "publisher": {"type": "outbox", "table": TABLE},
            "routes": [{"name": "noop", "table": TABLE, "handler": "bench.noop_handlers:noop"}],
            "observability": {"metrics": {"host": "127.0.0.1", "port": 0},
                              "logging": {"level": "INFO", "format": "json"}},
        })
        launched = time.monotonic()
        proc = start_worker(procs, config, log, metrics_port=port)
        held_after: float | None = None
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: metric_value(metrics(port), "stream_worker_leases_held") >= shards,
                     timeout=hold_timeout, interval=1.0, what=f"worker holds {shards} leases", alive=proc)
            held_after = time.monotonic() - launched
        if held_after is None:
            print(f"NOT all leases held after {hold_timeout:.0f} s: "
                  f"{metric_value(metrics(port), 'stream_worker_leases_held'):.0f}; measuring anyway")
        else:
            print(f"holds {shards} leases {held_after:.1f} s after launch; settling {settle:.0f} s")
        time.sleep(settle)

        calls_before = sim.calls(operation="GetRecords")
        held_start = metric_value(metrics(port), "stream_worker_leases_held")
        cpu_before, sim_before, clock = cpu_seconds(proc.pid), cpu_seconds(sim_proc.pid), time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - clock
        cpu_pct = 100 * (cpu_seconds(proc.pid) - cpu_before) / elapsed
        sim_pct = 100 * (cpu_seconds(sim_proc.pid) - sim_before) / elapsed
        polls_per_s = (sim.calls(operation="GetRecords") - calls_before) / elapsed
        memory = memory_mb(proc.pid)
        body = metrics(port)
        held = metric_value(body, "stream_worker_leases_held")
        errors = metric_value(body, "stream_worker_get_records_total") - metric_value(
            body, "stream_worker_get_records_total", outcome="ok")

        if profile and cpu_pct > CPU_TARGET_PCT:
            summary = py_spy_profile(proc.pid, profile_seconds, workdir / "idle.pyspy")
            if summary is not None:
                busy = 100 * summary["samples"] / (profile_seconds * 200)
                profile_text = print_profile(
                    f"idle worker, {held:.0f} of {shards} shards held, py-spy {profile_seconds:.0f} s at 200 Hz "
                    f"(busy in about {busy:.0f}% of samples)", summary)
        exit_code = procs.stop(proc, timeout=40)
        fenced = count_events(log, "stop all shards: heartbeat not renewed in time")
        takes = count_events(log, "take lease")

    ms_per_poll = 1000 * (cpu_pct / 100) / max(polls_per_s, 1e-9)
    # Polls per shard-second: measured when every shard was held all along, else the default
    # reader's steady idle rate (one GetRecords per max_idle_poll_seconds).
    steady = held_start >= shards and held >= shards
    per_shard = polls_per_s / shards if steady else 1.0 / MAX_IDLE_POLL_SECONDS
    projected = ms_per_poll / 1000 * per_shard * shards * 100
    held_text = f"all held {held_after:.1f} s after launch" if held_after is not None else (
        f"NOT all held within {hold_timeout:.0f} s")
    rows = [
        ("shards held", f"{held_start:.0f} -> {held:.0f} of {shards}", f"window start -> end; {held_text}"),
        ("idle_cpu_pct_1000_shards", f"{cpu_pct:.1f}%", f"target <= {CPU_TARGET_PCT:.0f}% of a core ({window:.0f} s window)"),
        ("rss_mb_1000_shards", f"{memory['VmRSS']:.0f} MB", f"target <= {RSS_TARGET_MB:.0f} MB (peak {memory['VmHWM']:.0f} MB)"),
        ("idle GetRecords/s", f"{polls_per_s:.0f}",
         f"{polls_per_s / max((held_start + held) / 2, 1):.2f} per held shard and second (mean of start and end)"),
        ("CPU per idle GetRecords", f"{ms_per_poll:.2f} ms", "worker CPU in the window / GetRecords in the window"),
        ("idle_cpu_pct_1000_shards_projected", f"{projected:.0f}%",
         f"{ms_per_poll:.2f} ms x {per_shard:.2f} polls per shard-second x {shards} shards"),
        ("self-fencing (heartbeat late)", str(fenced), f"{takes} lease takes in the whole run"),
        ("GetRecords errors (whole run)", f"{errors:.0f}", f"worker exit code {exit_code}"),
        ("simulator CPU", f"{sim_pct:.0f}%", "separate process, informational"),
    ]
    rows += provenance_rows(source, load_before)
    print_table(f"idle: one worker, {shards} idle shards", rows)
    if profile_text:
        out = Path(__file__).resolve().parent / "profiles"
        out.mkdir(exist_ok=True)
        (out / f"idle-{shards}.txt").write_text(profile_text + "\n")
    return {
        "idle_bench_load_avg": load_before,
        "idle_bench_worker_source": source,
        "idle_cpu_pct_1000_shards": round(cpu_pct, 2),
        "rss_mb_1000_shards": round(memory["VmRSS"], 1),
        "peak_rss_mb_1000_shards": round(memory["VmHWM"], 1),
        "idle_leases_held_1000_shards": int(held),
        "idle_self_fencing_1000_shards": fenced,
        "idle_get_records_per_s_1000_shards": round(polls_per_s, 1),
        "idle_cpu_ms_per_get_records": round(ms_per_poll, 3),
        "idle_cpu_pct_1000_shards_projected": round(projected, 1),
        "idle_bench_shards": shards,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=1000)
    parser.add_argument("--window", type=float, default=30.0, help="CPU measurement window (s)")
    parser.add_argument("--settle", type=float, default=10.0, help="wait after all leases are held (s)")
    parser.add_argument("--pool", type=int, default=256, help="aws.max_pool_connections")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                        help="py-spy the worker after the window when the CPU target is missed")
    parser.add_argument("--profile-seconds", type=float, default=15.0)
    parser.add_argument("--hold-timeout", type=float, default=75.0,
                        help="give up waiting for every lease after this long and measure what is held (s)")
    args = parser.parse_args()
    values = run(args.shards, args.window, args.settle, args.pool, args.profile, args.profile_seconds,
                 args.hold_timeout)
    if args.shards == 1000:  # the keys name the 1,000-shard case; other sizes are printed only
        merge("idle", values)


if __name__ == "__main__":
    main()
