"""Where parked records go: one validated section, usable per route or as the default.

Kept free of imports from :mod:`worker.config` (which imports this module) so that the
two can never form an import cycle.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DeadLetterType = Literal["sqs", "sns", "dynamodb", "jsonl"]

# The one field each destination type cannot work without.
REQUIRED_FIELD: dict[str, str] = {
    "sqs": "queue_url",
    "sns": "topic_arn",
    "dynamodb": "table",
    "jsonl": "path",
}


class DeadLetterConfig(BaseModel):
    """``type`` picks the destination; the field it needs must be set (checked here, so a
    typo fails at start-up rather than on the first record that has to be parked)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: DeadLetterType
    queue_url: str | None = Field(None, description="sqs: the queue URL (a .fifo URL keeps per-shard order)")
    topic_arn: str | None = Field(None, description="sns: the topic ARN (send-only)")
    table: str | None = Field(None, description="dynamodb: LOGICAL table name, hash key 'id' (S)")
    path: str | None = Field(None, description="jsonl: file path; '<path>.replayed' holds acknowledged ids")

    @model_validator(mode="after")
    def _target_present(self) -> "DeadLetterConfig":
        needed = REQUIRED_FIELD[self.type]
        if not getattr(self, needed):
            raise ValueError(f"dead-letter type {self.type!r} needs {needed!r}")
        return self
