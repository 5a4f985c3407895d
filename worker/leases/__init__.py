"""Shard leases in a DynamoDB table: model, conditional table access, coordination."""
