"""The ``stream-worker`` console script: for ``run``, SIGTERM/SIGINT are caught from the
first moment, before the CLI's imports.

Importing the CLI (the SDK, pydantic, structlog) takes about 0.3 s. A container stopped in
that window used to die by the signal instead of stopping; now the signals of that window
are remembered (worker/signals.py, a leaf module both this file and the CLI import) and
worker/cli.py honours them as a graceful stop as soon as its event loop runs. Every other
command keeps the default behaviour: its handlers are never installed. What is left is the
interpreter's own start-up, a few tens of milliseconds.
"""

from __future__ import annotations

import sys

from worker.signals import remember_early_signals


def main() -> int:
    if sys.argv[1:2] == ["run"]:
        remember_early_signals()
    # Imported here, not at the top: this import is the slow window the handlers cover.
    from worker.cli import main as cli_main

    return cli_main()
