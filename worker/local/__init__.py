"""Local mode: the endpoints that stand in for AWS on loopback, and what runs them.

The embedded moto endpoint and ``create-tables``/``demo``; moto as a server process; the
DynamoDB Local installer; the DynamoDB Streams simulator (many shards, splits, trimming,
throttling); an OTLP trace receiver; free ports and child processes; a Debian package
installer for the tools some runs drive. The tests and the benchmarks both use them, so
they live in the package (typed, checked by mypy like the rest) and neither imports the
other's helpers.
"""
