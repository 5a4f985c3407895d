"""A DynamoDB Streams simulator (tests, benchmarks): the real aiobotocore client talks to it unchanged.

    sim = Simulator(streams={"orders": 32}).start()     # 127.0.0.1, free port, own thread+loop
    session.client("dynamodbstreams", endpoint_url=sim.url)  # ListStreams, DescribeStream,
    session.client("dynamodb", endpoint_url=sim.url)         # GetShardIterator, GetRecords;
    sim.put_record("orders", {"pk": "a"}, {"n": 1})          # DescribeTable of simulated tables
    sim.stop()

Wire protocol: AWS JSON 1.0 (POST /, ``X-Amz-Target: DynamoDBStreams_20120810.<Op>`` or
``DynamoDB_20120810.DescribeTable``). Errors are HTTP 400 (500 for InternalServerError)
with ``{"__type": "com.amazonaws.dynamodb.v20120810#<Code>", "message": ...}``; botocore
raises ``ClientError`` whose ``response["Error"]["Code"]`` is the part after ``#``.
With ``upstream_url=`` (e.g. a moto server) every request that is not about a simulated
table/stream/iterator is forwarded there verbatim, so the simulator can be a process's
single endpoint. Without it, other DynamoDB operations answer UnknownOperationException
and unknown tables/streams ResourceNotFoundException.

To see injected errors on the first attempt, build the client with
``Config(retries={"total_max_attempts": 1, "mode": "standard"})``: botocore's legacy
``max_attempts`` counts *retries* (``max_attempts=1`` means two requests), and standard
mode retries InternalServerError/LimitExceededException by itself. Stats count requests
as the simulator saw them, i.e. including SDK retries.

Switches (constructor keywords; change later with ``configure(**knobs)`` or the setters;
every control method is thread-safe and may be called while the server runs):

* clock: ``now()`` is real time unless ``start_time=`` (then manual); ``advance(seconds)``
  moves it forward. Retention, iterator age and ApproximateCreationDateTime use it.
* ``retention_seconds`` (86400): older records are trimmed lazily; AT/AFTER a trimmed
  sequence number, or an iterator now pointing at trimmed data -> TrimmedDataAccessException;
  TRIM_HORIZON starts at the oldest retained record; closed shards closed and emptied
  longer than the retention ago vanish from DescribeStream.
* ``DescribeStream`` honours ``ShardFilter={"Type": "CHILD_SHARDS", "ShardId": ...}`` as AWS
  does (one page: that shard's children); moto and DynamoDB Local ignore the filter.
* ``iterator_ttl_seconds`` (900): older iterators -> ExpiredIteratorException.
* ``throttle_enabled`` (True) / ``max_get_records_per_shard_per_second`` (5): more GetRecords
  calls per shard within a sliding 1 s window (real time) -> LimitExceededException.
  ``set_throttle(enabled=None, per_shard_per_second=None)``.
* ``latency_seconds`` / ``latency_jitter_seconds``: added to every response.
* ``error_rate`` (0..1): that fraction of simulated calls -> HTTP 500 InternalServerError.
* ``fail_next(n, code="InternalServerError", operation=None, message=None)``: the next n
  calls (of that operation) fail with that code; ``code="DISCONNECT"`` drops the connection.
  ``set_faults(...)``, ``clear_faults()``.
* ``empty_read_rate`` (0): that fraction of GetRecords return no records (but an iterator
  at the same position) even when data is there, as real streams sometimes do.
* ``eager_shard_end`` (True): NextShardIterator is omitted in the same response that
  returns a closed shard's last records; False: one extra empty response ends the shard.
* ``auto_rotate_seconds`` (None): open shards older than this are rotated (lazily).
* ``max_response_bytes`` (1 MiB): GetRecords stops before exceeding it.
* ``seq_start`` (10**20, 21 digits), ``seq_jitter`` (100): sequence numbers come from one
  global counter with random gaps, so children > parents; set ``seq_start=10**21 - 1000``
  to make numbers change length mid-test (compare them as ints!). ``seed`` for repeatability.

Topology/data: ``create_stream``, ``disable_stream``, ``put_record(s)``, ``split_shard``,
``rotate_shard``, ``rotate_all``, ``shard_for_key``; inspection: ``shards``, ``records``,
``stream_arn``, ``tables``; stats: ``stats()``, ``calls(op)``, ``errors(op, code)``,
``reset_stats()``. Other processes: ``python -m worker.local.simulator --streams orders:32``
(prints the URL first) and ``RemoteSimulator(url)`` for the same control methods.
"""

from worker.local.simulator.model import SimError, StreamModel, is_typed, to_typed
from worker.local.simulator.remote import RemoteSimulator
from worker.local.simulator.server import Simulator

__all__ = ["RemoteSimulator", "SimError", "Simulator", "StreamModel", "is_typed", "to_typed"]
