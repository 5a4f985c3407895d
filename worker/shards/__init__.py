"""Stream resolution, shard discovery (paginated) and the parent/child lineage graph."""
