"""Kafka sinks: interventions (one message each, keyed by client id) and dead letters.

Install: nothing beyond ato-stream (confluent-kafka). Use: ``KafkaRecordSink(settings.kafka,
topic, parts)`` takes ``(part key, list[Record])`` items. How it works: every process has one
idempotent producer per topic; ``write_batch`` produces asynchronously (delivery callbacks
record failures) and each epoch end (the partition's snapshot) flushes it and fails the step
if a message was not delivered within ``kafka.flush_timeout_s``, so nothing vanishes.
Delivery guarantee: at least once; after a crash the replayed epoch produces its messages
again, with the same deterministic intervention ids (consumers de-duplicate on
``intervention_id``).
"""

import logging
import threading
from dataclasses import dataclass
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from ato.config import KafkaSettings
from ato.exceptions import ConfigError
from ato.kafka_log import LIBRDKAFKA_LOG
from sinks.exceptions import SinkError

POLL_WHEN_FULL_S = 0.05
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """One message to produce."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]]


def producer_config(settings: KafkaSettings) -> dict[str, Any]:
    """Idempotent, acks from all replicas, small batching delay."""
    return {
        **settings.client_config(),
        "logger": LIBRDKAFKA_LOG,  # its log lines, at most one a minute per kind
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        "message.timeout.ms": int(settings.flush_timeout_s * 1000),
        **settings.producer_config,
    }


def check_producer_config(settings: KafkaSettings) -> None:
    """Raise :class:`ConfigError` when librdkafka refuses the producer's properties (a
    producer is otherwise made at the first output, which may be hours into a run)."""
    try:
        Producer({**producer_config(settings), "log_level": 0})  # quiet: no broker yet
    except KafkaException as exc:
        msg = (
            "librdkafka refuses the producer's properties (kafka.security_protocol, sasl_*,"
            f" producer_config): {exc.args[0].str()}"
        )
        raise ConfigError(msg) from exc


MAX_LISTED_ERRORS = 10  # distinct delivery errors a failure names


class TopicProducer:
    """One producer for one topic, shared by the sink partitions of a process."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self.topic = topic
        self.timeout_s = settings.flush_timeout_s
        self.producer = Producer(producer_config(settings))
        self.lock = threading.Lock()
        self.brokers = settings.brokers
        self.failed = 0  # deliveries that failed
        self.failures: dict[str, str] = {}  # up to 10 distinct errors: the first key of each
        self.delivered = 0

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.delivered += 1
            return
        self.failed += 1
        text = str(error)
        if text not in self.failures and len(self.failures) < MAX_LISTED_ERRORS:
            self.failures[text] = repr(message.key())

    def produce(self, records: list[Record]) -> None:
        """Queue ``records``; waits for room when the local queue is full, and raises as soon
        as a delivery has failed (a full queue is often a broker that is gone)."""
        self._raise_failures()
        produce, topic, callback = self.producer.produce, self.topic, self._on_delivery
        with self.lock:
            for r in records:
                while True:
                    try:
                        produce(topic, r.value, r.key, headers=r.headers, on_delivery=callback)
                        break
                    except BufferError:
                        self.producer.poll(POLL_WHEN_FULL_S)
                        self._raise_failures()
                    except KafkaException as exc:  # one the producer refuses: too large, say
                        msg = (
                            f"topic {topic}: cannot produce a message of {len(r.value)} bytes:"
                            f" {exc.args[0].str()}"
                        )
                        raise SinkError(msg) from exc
            self.producer.poll(0)

    def flush(self) -> None:
        """Wait until everything queued is delivered; raise if anything was not."""
        with self.lock:
            left = self.producer.flush(self.timeout_s)
        if left:
            msg = (
                f"topic {self.topic}: {left} messages not delivered within"
                f" {self.timeout_s}s (is the broker reachable?)"
            )
            raise SinkError(msg)
        self._raise_failures()

    def _raise_failures(self) -> None:
        if self.failed:
            errors = "; ".join(f"{error} (first key {key})" for error, key in self.failures.items())
            msg = (
                f"topic {self.topic}: delivery failed for {self.failed} messages (brokers"
                f" {self.brokers}): {errors}"
            )
            raise SinkError(msg)


_PRODUCERS: dict[tuple[str, str], tuple[TopicProducer, int]] = {}  # producer, users
_PRODUCERS_LOCK = threading.Lock()


def shared_producer(settings: KafkaSettings, topic: str) -> TopicProducer:
    """The process's producer for ``topic`` on these brokers; :func:`release` when done."""
    key = (settings.brokers, topic)
    with _PRODUCERS_LOCK:
        producer, users = _PRODUCERS.get(key) or (TopicProducer(settings, topic), 0)
        _PRODUCERS[key] = (producer, users + 1)
        return producer


def release(settings: KafkaSettings, producer: TopicProducer) -> None:
    """One user fewer; the last one flushes and drops the producer.

    Never raises: Bytewax calls this as it drops a sink partition, also while it unwinds
    from an error, where an exception aborts the process (and no message is printed). A
    flow that ends normally has flushed at its last epoch's end (the snapshot), which
    raises; what is left here is logged.
    """
    key = (settings.brokers, producer.topic)
    with _PRODUCERS_LOCK:
        _, users = _PRODUCERS[key]
        if users > 1:
            _PRODUCERS[key] = (producer, users - 1)
            return
        del _PRODUCERS[key]
    try:
        producer.flush()
    except SinkError as exc:
        log.error("%s", exc)


class _RecordPartition(StatefulSinkPartition[list[Record], None]):
    def __init__(self, settings: KafkaSettings, producer: TopicProducer) -> None:
        self.settings = settings
        self.producer = producer

    def write_batch(self, values: list[list[Record]]) -> None:
        for records in values:
            self.producer.produce(records)

    def snapshot(self) -> None:
        self.producer.flush()  # epoch end: everything of the epoch is on the broker

    def close(self) -> None:
        release(self.settings, self.producer)


class KafkaRecordSink(FixedPartitionedSink[list[Record], None]):
    """Produces ``(part key, records)`` items to ``topic``; ``parts`` are the part keys used."""

    def __init__(self, settings: KafkaSettings, topic: str, parts: list[str]) -> None:
        self.settings = settings
        self.topic = topic
        self.parts = sorted(parts)  # Bytewax indexes part_fn results into the sorted parts
        self.index = {part: i for i, part in enumerate(self.parts)}

    def list_parts(self) -> list[str]:
        """The part keys items carry (the flow's shard keys or input partitions)."""
        return self.parts

    def part_fn(self, item_key: str) -> int:
        """Items go to the partition of their own key."""
        return self.index[item_key]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _RecordPartition:
        """A partition writing through the process's shared producer."""
        return _RecordPartition(self.settings, shared_producer(self.settings, self.topic))
