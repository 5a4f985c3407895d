"""Small facts about AWS errors and time, with no imports from this package.

A leaf module: anything may import it without closing an import cycle.
"""

from __future__ import annotations

from datetime import datetime, timezone

from botocore.exceptions import ClientError

CONDITIONAL_CHECK_FAILED = "ConditionalCheckFailedException"


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a ``ClientError`` (``None`` for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or None
    return None


def is_conditional_check_failed(exc: BaseException) -> bool:
    """True when a conditional write was refused because its condition did not hold."""
    return error_code(exc) == CONDITIONAL_CHECK_FAILED


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(timezone.utc)
