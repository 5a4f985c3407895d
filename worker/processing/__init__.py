"""The handler API, the registry (import strings), the router and the record processor."""

from worker.processing.context import HandlerContext

__all__ = ["HandlerContext"]
