"""The ``stream-worker`` console script: for ``run``, SIGTERM/SIGINT are caught from the
first moment, before the CLI's imports.

Importing the CLI (the SDK, pydantic, structlog) takes about 0.3 s. A container stopped in
that window used to die by the signal instead of stopping; now the signals of that window
are remembered in :data:`early_signals` and worker/cli.py honours them as a graceful stop as
soon as its event loop runs. Every other command keeps the default behaviour (the CLI
restores it and re-raises a remembered signal). What is left is the interpreter's own
start-up, a few tens of milliseconds.
"""

from __future__ import annotations

import signal
import sys

early_signals: list[int] = []
CAUGHT = (signal.SIGTERM, signal.SIGINT)


def remember_signal(signum: int, frame: object) -> None:
    early_signals.append(signum)


def main() -> int:
    if sys.argv[1:2] == ["run"]:
        for signum in CAUGHT:
            signal.signal(signum, remember_signal)
    from worker.cli import main as cli_main

    return cli_main()
