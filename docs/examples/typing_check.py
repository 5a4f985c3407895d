"""The example handlers fit the two handler signatures (checked by mypy --strict)."""

from __future__ import annotations

from payments_handlers import audit_captured, record_refunds

from worker import BatchHandler, Handler

per_record: Handler = audit_captured
per_batch: BatchHandler = record_refunds
