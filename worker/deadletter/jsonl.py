"""JSONL dead letters: one line per letter in a local file, for hosts without AWS targets.

Durability: ``send`` returns only after the line is written and ``os.fsync``-ed (and,
when the file was just created, its directory too), because the caller advances the
checkpoint past the record once ``send`` returns.

The file is append-only and never rewritten: acknowledging a letter appends its id to
the sidecar ``<path>.replayed``, and ``fetch`` skips the ids listed there. A crash in the
middle of a write leaves a torn last line; ``fetch`` skips it without raising, and the
next ``send`` first ends it with a newline so the torn bytes cannot swallow the next
letter. Repeated sends of one letter (same id) are separate lines; ``fetch`` returns the
first and skips the rest.

One process per file: the lock orders the writes of one process only, so give each
worker its own path (e.g. with the worker id in it). File IO runs in a thread
(``asyncio.to_thread``) so that an fsync never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import structlog

from worker.deadletter.base import Parked
from worker.deadletter.errors import DeadLetterDecodeError
from worker.deadletter.message import DeadLetter

log = structlog.get_logger(__name__)


def append_durably(path: Path, data: bytes) -> None:
    """Appends ``data`` (newline-terminated) to ``path`` and fsyncs it before returning.

    A missing trailing newline means the previous append was torn: it is terminated
    first, so ``data`` always starts a line of its own.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # A new file's directory entry is durable only once the directory is synced.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JsonlDeadLetters:
    """Parks letters as lines of ``path`` and replays them from it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.replayed_path = Path(f"{os.fspath(path)}.replayed")
        self._lock = asyncio.Lock()

    async def send(self, message: DeadLetter) -> None:
        line = (message.to_json() + "\n").encode("ascii")
        async with self._lock:
            await asyncio.to_thread(append_durably, self.path, line)

    async def fetch(self, limit: int) -> list[Parked]:
        if limit <= 0:
            return []
        return await asyncio.to_thread(self._read, limit)

    async def acknowledge(self, parked: Parked) -> None:
        async with self._lock:
            await asyncio.to_thread(append_durably, self.replayed_path, f"{parked.handle}\n".encode())

    async def close(self) -> None:
        return None

    def replayed_ids(self) -> set[str]:
        try:
            text = self.replayed_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return set()
        # A torn last id is a prefix of a real id at worst: it cannot match another id.
        return {line.strip() for line in text.splitlines() if line.strip()}

    def _read(self, limit: int) -> list[Parked]:
        skip = self.replayed_ids()
        found: list[Parked] = []
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return found
        with handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    message = DeadLetter.from_json(line)
                except DeadLetterDecodeError as exc:
                    # An unterminated last line is the expected trace of a crash mid-write.
                    if line.endswith(b"\n"):
                        log.warning("skip dead-letter line that cannot be decoded", path=str(self.path),
                                    line=number, error=str(exc))
                    continue
                if message.id in skip:
                    continue
                skip.add(message.id)
                found.append(Parked(message=message, handle=message.id))
                if len(found) >= limit:
                    break
        return found
