"""``python -m worker.local.simulator --port 0 --streams orders:32 ...``: run the simulator as a process.

Prints the endpoint URL as the first stdout line (then one ``STREAM <table> <arn>`` line
per stream) and serves until SIGTERM/SIGINT. Drive it with ``worker.local.simulator.RemoteSimulator``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from worker.local.simulator.server import Simulator


def _stream_spec(text: str) -> tuple[str, int, list[str]]:
    parts = text.split(":")
    if not 1 <= len(parts) <= 3 or not parts[0]:
        raise argparse.ArgumentTypeError(f"expected TABLE[:SHARDS[:KEY,KEY]], got {text!r}")
    shards = int(parts[1]) if len(parts) > 1 and parts[1] else 1
    keys = parts[2].split(",") if len(parts) > 2 and parts[2] else ["pk"]
    return parts[0], shards, keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.local.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = a free port")
    parser.add_argument(
        "--streams",
        type=_stream_spec,
        action="append",
        default=[],
        metavar="TABLE[:SHARDS[:KEY,KEY]]",
        help="a simulated table with a stream, e.g. orders:32 or users:4:id,ts (repeatable)",
    )
    parser.add_argument("--upstream", default=None, help="forward everything else here (e.g. a moto server URL)")
    parser.add_argument("--retention-seconds", type=float, default=24 * 3600.0)
    parser.add_argument("--iterator-ttl-seconds", type=float, default=900.0)
    parser.add_argument("--no-throttle", action="store_true", help="disable the GetRecords per-shard rate limit")
    parser.add_argument("--max-get-records-per-shard", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every response")
    parser.add_argument("--latency-jitter", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction of calls failing with HTTP 500")
    parser.add_argument("--empty-read-rate", type=float, default=0.0)
    parser.add_argument("--auto-rotate-seconds", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)

    sim = Simulator(
        host=args.host,
        port=args.port,
        upstream_url=args.upstream,
        retention_seconds=args.retention_seconds,
        iterator_ttl_seconds=args.iterator_ttl_seconds,
        throttle_enabled=not args.no_throttle,
        max_get_records_per_shard_per_second=args.max_get_records_per_shard,
        latency_seconds=args.latency,
        latency_jitter_seconds=args.latency_jitter,
        error_rate=args.error_rate,
        empty_read_rate=args.empty_read_rate,
        auto_rotate_seconds=args.auto_rotate_seconds,
        seed=args.seed,
    )
    for table, shards, keys in args.streams:
        sim.create_stream(table, shards=shards, key_schema=keys)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    sim.start()
    try:
        print(sim.url, flush=True)
        for table in sim.tables():
            print(f"STREAM {table} {sim.stream_arn(table)}", flush=True)
        while not done.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
