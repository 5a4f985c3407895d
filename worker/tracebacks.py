"""Tracebacks of handler failures: bounded text, the failing line, and a per-key rate limit.

Leaf module (standard library only): the delivery logs with it and the dead letter stores
its text. Everything here runs only after a handler failed; the success path never formats
anything.
"""

from __future__ import annotations

import time
import traceback
from collections import OrderedDict
from typing import Callable, Hashable

# A log line or dead letter needs the innermost frames, where the handler failed; a deep
# stack (or a chained cause) is cut from the outside in, never from the failing end.
MAX_TRACEBACK_CHARS = 4_000
MAX_FRAMES = 30


def format_traceback(error: BaseException, max_chars: int = MAX_TRACEBACK_CHARS) -> str:
    """The traceback of ``error`` (causes included) as text, at most ``max_chars`` long.

    When cut, the start goes and a marker says how much, so the failing line stays.
    """
    text = "".join(traceback.format_exception(error, limit=-MAX_FRAMES)).rstrip("\n")
    if len(text) <= max_chars:
        return text
    marker = "[... {} characters cut ...]\n"
    keep = max_chars - len(marker.format(len(text)))
    return marker.format(len(text) - keep) + text[-keep:]


def failure_site(error: BaseException) -> str:
    """Where ``error`` was raised: ``path:line in function`` of the innermost frame ('' if none)."""
    tb = error.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{code.co_filename}:{tb.tb_lineno} in {code.co_name}"


class TracebackGate:
    """Says when a failure's traceback is worth logging: the first time for a key, then at
    most once per ``interval`` seconds, so a poison record retried for hours logs its
    traceback a few times, not on every retry. Remembers at most ``max_keys`` keys (the
    oldest are forgotten first), so memory stays bounded whatever fails."""

    def __init__(self, interval: float = 60.0, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._max_keys = max_keys
        self._clock = clock
        self._last: OrderedDict[Hashable, float] = OrderedDict()

    def allow(self, key: Hashable) -> bool:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            return False
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self._max_keys:
            self._last.popitem(last=False)
        return True
