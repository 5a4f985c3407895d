"""The embedded local endpoint: a moto server on a free loopback port, in this process."""

from __future__ import annotations

import logging
import os
from typing import Any

from worker.local.processes import free_port


def point_aws_at(url: str) -> None:
    """Point this process's AWS settings at a local endpoint. Fake credentials: the local
    endpoints accept anything, and no real account is touched."""
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
            "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        }
    )
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)



class EmbeddedMoto:
    """Starts moto's threaded server and points this process's AWS settings at it."""

    def __init__(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:  # moto is the optional 'local' extra
            raise RuntimeError("the local endpoint needs moto: pip install 'stream-worker[local]'") from exc
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: Any = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def start(self) -> "EmbeddedMoto":
        # moto's werkzeug logs every request at INFO: keep the demo's output readable.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server.start()
        point_aws_at(self.url)
        return self

    def stop(self) -> None:
        self._server.stop()
