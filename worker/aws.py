"""AWS clients: one aioboto3 session, long-lived clients, closed in one place.

Region comes from the config or ``AWS_REGION``/``AWS_DEFAULT_REGION`` (botocore only
reads the latter); the endpoint from the config or ``AWS_ENDPOINT_URL``; credentials
from the SDK's default chain (env, profile, ECS task role, instance profile).
"""

from __future__ import annotations

import contextlib
from typing import Any

import aioboto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from worker.aws_errors import error_code
from worker.config import AwsConfig

__all__ = ["AwsClients", "RETRYABLE_CODES", "is_retryable_aws_error"]

# Error codes that a later identical call may not hit: back off and retry.
RETRYABLE_CODES = frozenset(
    {
        "LimitExceededException",
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "RequestTimeout",
        "TransactionConflictException",
    }
)




def is_retryable_aws_error(exc: BaseException) -> bool:
    """Throttling, 5xx and connection trouble are retryable; everything else is not."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return code in RETRYABLE_CODES or status >= 500
    # botocore's connection errors and timeouts, aiohttp's and asyncio's.
    return isinstance(exc, (OSError, TimeoutError)) or type(exc).__module__.startswith(
        ("botocore.exceptions", "aiohttp")
    )


class AwsClients:
    """Owns the session and every client; ``close()`` is idempotent."""

    def __init__(self, config: AwsConfig) -> None:
        self._config = config
        self.region = config.resolved_region()
        self.endpoint_url = config.resolved_endpoint()
        self.session = aioboto3.Session(region_name=self.region)
        self._boto_config = BotoConfig(
            connect_timeout=config.connect_timeout_seconds,
            read_timeout=config.read_timeout_seconds,
            max_pool_connections=config.max_pool_connections,
            # Our own loops own the retry policy; the SDK gets one quick retry for blips.
            retries={"mode": "standard", "total_max_attempts": 2},
        )
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[str, Any] = {}
        self._resource: Any = None

    async def client(self, service: str) -> Any:
        """A shared client for ``service`` (dynamodb, dynamodbstreams, events, sqs, sns)."""
        if service not in self._clients:
            self._clients[service] = await self._stack.enter_async_context(
                self.session.client(
                    service, endpoint_url=self._config.resolved_endpoint(service), config=self._boto_config
                )
            )
        return self._clients[service]

    async def dynamodb_resource(self) -> Any:
        """The high-level resource API, whose Table objects (de)serialize plain Python values."""
        if self._resource is None:
            self._resource = await self._stack.enter_async_context(
                self.session.resource(
                    "dynamodb", endpoint_url=self._config.resolved_endpoint("dynamodb"), config=self._boto_config
                )
            )
        return self._resource

    async def close(self) -> None:
        self._clients.clear()
        self._resource = None
        await self._stack.aclose()
