"""An aiohttp server on its own thread and event loop, for test doubles (the stream
simulator, the fault proxy) that tests in any event loop, and other processes, can call."""

from __future__ import annotations

import abc
import asyncio
import threading
from typing import Any

from aiohttp import web


class ThreadedServer(abc.ABC):
    """Subclasses define ``_handle(request)``, ``_astart`` (calling ``_serve``) and
    ``_astop``, and set ``host``, ``port`` and ``_label`` before ``start()``."""

    host: str
    port: int
    _label = "test server"

    def _init_thread_state(self) -> None:
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.ServerRunner | None = None
        self._start_error: BaseException | None = None

    @abc.abstractmethod
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request (the double's whole behaviour)."""

    async def _astart(self) -> None:
        await self._serve()

    async def _astop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self) -> None:
        server = web.Server(self._handle, access_log=None)
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # noqa: SLF001
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    def start(self, timeout: float = 10.0) -> Any:
        if self._thread is not None:
            return self
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=self._label, daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"{self._label} did not start in time")
        if self._start_error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"{self._label} failed to start") from self._start_error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._astart())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._start_error = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._astop())
            loop.close()
