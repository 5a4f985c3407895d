"""The per-shard consumer and its state machine."""
