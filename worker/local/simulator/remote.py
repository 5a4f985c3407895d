"""Drive a simulator running in another process through its ``/_sim/<method>`` control endpoint."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from worker.local.simulator.server import CONTROL_METHODS


class RemoteSimulator:
    """Same control methods as ``Simulator`` (keyword arguments only), over HTTP.

    JSON round-trips: tuples come back as lists, Decimal/bytes/sets are not accepted in
    ``put_record`` images (use plain JSON values or already-typed DynamoDB JSON).
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def call(self, method: str, **kwargs: Any) -> Any:
        request = urllib.request.Request(
            f"{self.url}/_sim/{method}",
            data=json.dumps(kwargs).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())["result"]
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise RuntimeError(f"simulator control {method} failed: {detail}") from None

    def __getattr__(self, name: str) -> Any:
        if name not in CONTROL_METHODS:
            raise AttributeError(name)
        return lambda **kwargs: self.call(name, **kwargs)
