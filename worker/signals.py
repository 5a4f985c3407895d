"""Signals that arrive before the event loop runs: caught by the console script's first
line (worker/entry.py) and honoured by ``run`` as a graceful stop (worker/cli.py).

A leaf module with nothing but the standard library, so both sides import it without
importing each other: the entry point must stay cheap to import (it runs before the SDK
and pydantic load), and the CLI must not import the entry point that imports it.
"""

from __future__ import annotations

import signal

CAUGHT = (signal.SIGTERM, signal.SIGINT)
early_signals: list[int] = []


def remember_signal(signum: int, frame: object) -> None:
    early_signals.append(signum)


def remember_early_signals() -> None:
    """Until the event loop installs its own handlers, a stop signal is remembered instead
    of killing the process."""
    for signum in CAUGHT:
        signal.signal(signum, remember_signal)
