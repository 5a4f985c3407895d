"""Checkpointing: the fenced, monotonic record of how far a shard is done."""
