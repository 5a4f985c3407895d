from __future__ import annotations

import pytest
from tenacity import wait_fixed

import worker.retry


@pytest.fixture(autouse=True)
def fast_aws_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """call_aws backs off 50 ms plus up to 1 s of jitter; unit tests retry at once."""
    monkeypatch.setattr(worker.retry, "wait_exponential_jitter", lambda **_: wait_fixed(0.001))
