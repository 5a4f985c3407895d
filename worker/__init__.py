"""stream-worker: a self-hosted DynamoDB Streams consumer daemon."""

__version__ = "0.1.0"
