"""Per-shard readers: iterators, GetRecords, back-off, expiry and trim recovery."""
