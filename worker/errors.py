"""One root error; every class says whether retrying can help.

Handlers raise :class:`PermanentError` for bad data (retrying cannot help) and
:class:`RetryableError` for transient trouble. Any other exception a handler
raises is treated as retryable. Delivery decides by :func:`is_retryable`, which reads
the class's ``retryable``. Lease errors form their own family because the consumer
reacts to them by stopping the shard, not by retrying.
"""

from __future__ import annotations


class StreamWorkerError(Exception):
    """Root of every error this package raises on purpose."""

    retryable: bool = True  # may the same call succeed later? Read by is_retryable().


def is_retryable(error: BaseException) -> bool:
    """Whether retrying the call that raised ``error`` can help: an error of ours says so
    with ``retryable``; any other exception is taken as transient."""
    return not isinstance(error, StreamWorkerError) or error.retryable


class ConfigError(StreamWorkerError):
    """The configuration is invalid; start-up stops with exit code 2.

    ``problems`` holds one ``(key_path, reason)`` pair per problem found.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in problems))


class SetupError(StreamWorkerError):
    """The environment does not fit the config (table missing, stream off, wrong view type)."""


class StartupError(StreamWorkerError):
    """Start-up could not complete: AWS unreachable, or a call refused (exit code 1)."""


class RetryableError(StreamWorkerError):
    """A transient failure: the same call may succeed later."""

    retryable = True


class PermanentError(StreamWorkerError):
    """Bad data or a bug: retrying the same record gives the same failure."""

    retryable = False


class LeaseError(StreamWorkerError):
    """Root of the lease family."""


class LeaseLostError(LeaseError):
    """A conditional lease write failed: another worker owns the lease now (fenced)."""


class ShardGoneError(StreamWorkerError):
    """The stream or shard no longer exists (ResourceNotFoundException)."""


class TrimmedDataError(StreamWorkerError):
    """The position asked for is older than the stream's retention (policy: stop)."""
