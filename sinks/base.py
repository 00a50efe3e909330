"""The sink contract of ato-stream.

Every flow output is a Bytewax sink that takes whole batches (``write_batch``) and makes its
writes durable at epoch boundaries (``snapshot``), never one item at a time. Recoverable sinks
are ``FixedPartitionedSink`` subclasses whose snapshot is their resume position; sinks whose
writes are idempotent by key (Kafka with intervention ids, ClickHouse with ReplacingMergeTree
keys read with FINAL) may be ``DynamicSink``. Sinks raise :class:`SinkError` when data they
accepted cannot be written.
"""

from sinks.exceptions import SinkError

__all__ = ["SinkError"]
