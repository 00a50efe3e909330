"""Kafka source: one Bytewax partition per Kafka partition, batched ``consume()``, exact resume.

Install: nothing beyond ato-stream (confluent-kafka). Use: ``KafkaSource(settings.kafka,
batch_size)``. How it works: every Kafka partition of the input topics is a Bytewax partition
named ``topic#N``, read by its own consumer with explicit assignment (no consumer-group
rebalances). Each ``next_batch`` hands one :class:`RawBatch` of up to ``batch_size`` raw values
to the flow; the watermark is tracked per Bytewax partition, so per Kafka partition. The
partition's next offset is its Bytewax snapshot: after a crash the flow resumes exactly there.
Every ``kafka.commit_interval_ms`` a partition also commits its position to ``kafka.group_id``
(asynchronously, for lag monitoring with standard Kafka tools; recovery never reads it).
A fresh run starts at ``kafka.start``: earliest, latest, or the first offset at or after an
epoch-ms timestamp. Messages whose value is a JSON array (collector envelopes) are split into
their elements, with their original bytes, which share the envelope's offset
(:mod:`sources.envelopes`). Delivery guarantee: at least once into
the flow; the flow's outputs are deterministic, so replays repeat the same interventions.
"""

import logging
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ClusterMetadata

from ato.config import KafkaSettings
from ato.exceptions import AtoError, ConfigError
from ato.kafka_log import LIBRDKAFKA_LOG
from ato.process import gc_paused
from operators.batches import DeadLetter, RawBatch
from operators.decode import UNREADABLE, wall_ms
from sources.envelopes import MAY_START_ENVELOPE, expand_envelopes

log = logging.getLogger(__name__)
# errors of one record (corrupt, or compressed in a way that cannot be read): librdkafka moves
# past it, so it becomes a dead letter; other message errors concern the partition
RECORD_ERRORS = frozenset(
    [
        KafkaError._BAD_MSG,  # noqa: SLF001
        KafkaError._BAD_COMPRESSION,  # noqa: SLF001
        KafkaError.INVALID_MSG,
        KafkaError.UNSUPPORTED_COMPRESSION_TYPE,
        KafkaError._KEY_DESERIALIZATION,  # noqa: SLF001
        KafkaError._VALUE_DESERIALIZATION,  # noqa: SLF001
    ]
)
# errors of the partition no retry fixes: the run stops with them (librdkafka would retry,
# and the partition hold the watermark, for ever)
PERMANENT_ERRORS = frozenset(
    [
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,  # noqa: SLF001
    ]
)

METADATA_TIMEOUT_S = 30.0
REACH_TIMEOUT_S = 10.0  # the start-up look at the input topics: brokers that do not answer
HEARTBEAT_S = 0.1  # a caught-up partition says so at most this often
# librdkafka's statistics, every this often, say whether the partition's leader is connected;
# older than STATS_STALE_S, they say nothing
STATS_INTERVAL_MS = 500
STATS_STALE_S = 3.0
CLOSE_WAIT_S = 2.0  # longest a partition's close waits for its consumer


class KafkaSourceError(AtoError):
    """The input topics cannot be read."""


def part_name(topic: str, partition: int) -> str:
    """The Bytewax partition name of a Kafka partition."""
    return f"{topic}#{partition}"


def split_part_name(name: str) -> tuple[str, int]:
    """Inverse of :func:`part_name`."""
    topic, _, partition = name.rpartition("#")
    return topic, int(partition)


def cluster_metadata(settings: KafkaSettings) -> ClusterMetadata:
    """The brokers' metadata, waited for at most :data:`REACH_TIMEOUT_S` (``KafkaException``
    after that), with librdkafka logging only critical lines meanwhile, not one per failed
    connection attempt."""
    admin = AdminClient({**settings.client_config(), "log_level": 2})  # critical only
    return admin.list_topics(timeout=REACH_TIMEOUT_S)


def reached_metadata(settings: KafkaSettings) -> ClusterMetadata:
    """:func:`cluster_metadata`, or :class:`KafkaSourceError` when the brokers do not answer
    within :data:`REACH_TIMEOUT_S`: a run's first contact with them is a clear error, without
    librdkafka's log line per connection attempt (hundreds in that time) before it."""
    try:
        return cluster_metadata(settings)
    except Exception as exc:
        msg = f"cannot reach Kafka at {settings.brokers}: {exc}"
        raise KafkaSourceError(msg) from exc


def list_partitions(settings: KafkaSettings, meta: ClusterMetadata | None = None) -> list[str]:
    """Every partition of the input topics, as Bytewax partition names, sorted; from ``meta``
    when given, else from :func:`reached_metadata`."""
    meta = reached_metadata(settings) if meta is None else meta
    names: list[str] = []
    for topic in settings.input_topics:
        found = meta.topics.get(topic)
        if found is not None and found.error is not None:
            error = found.error
            if error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:  # not allowed, no leader, ...
                msg = f"input topic {topic!r} on {settings.brokers}: {error.name()}: {error.str()}"
                raise KafkaSourceError(msg)
        if found is None or found.error is not None or not found.partitions:
            msg = f"input topic {topic!r} does not exist on {settings.brokers}"
            raise KafkaSourceError(msg)
        names.extend(part_name(topic, p) for p in sorted(found.partitions))
    return names


def absent_topics(meta: ClusterMetadata, topics: list[str]) -> list[str]:
    """Those of ``topics`` the brokers' metadata ``meta`` does not list (reading it creates
    none)."""
    listed = meta.topics
    return [t for t in topics if t not in listed or listed[t].error is not None]


class PositionReader:
    """Reads, per partition, the position committed to ``group_id`` (``None`` before the
    first commit) and the partition's end, through one consumer kept open between reads.

    What the source's periodic commits (``kafka.commit_interval_ms``) left: it trails the flow
    by up to one interval. The lag is the end minus the committed position.
    """

    def __init__(self, settings: KafkaSettings, logger: logging.Logger | None = None) -> None:
        config: dict[str, Any] = {**consumer_config(settings), "enable.partition.eof": False}
        if logger is not None:  # librdkafka's log lines go there instead of stderr
            config["logger"] = logger
        self.consumer = Consumer(config)

    def read(self, parts: list[str]) -> dict[str, tuple[int | None, int]]:
        """Committed position and end of each of ``parts``."""
        tps = [TopicPartition(*split_part_name(name)) for name in parts]
        committed = self.consumer.committed(tps, timeout=METADATA_TIMEOUT_S)
        out: dict[str, tuple[int | None, int]] = {}
        for name, tp in zip(parts, committed, strict=True):
            _, high = self.consumer.get_watermark_offsets(tp, timeout=METADATA_TIMEOUT_S)
            out[name] = (int(tp.offset) if tp.offset >= 0 else None, int(high))
        return out

    def close(self) -> None:
        """Close the consumer."""
        self.consumer.close()


def committed_positions(
    settings: KafkaSettings, parts: list[str]
) -> dict[str, tuple[int | None, int]]:
    """One :meth:`PositionReader.read`."""
    reader = PositionReader(settings)
    try:
        return reader.read(parts)
    finally:
        reader.close()


def check_consumer_config(settings: KafkaSettings) -> None:
    """Raise :class:`ConfigError` when librdkafka refuses the consumer's properties (before
    the flow starts, rather than as a worker builds its partitions)."""
    try:
        Consumer({**consumer_config(settings), "log_level": 0}).close()  # quiet: no broker yet
    except KafkaException as exc:
        msg = (
            "librdkafka refuses the consumer's properties (kafka.security_protocol, sasl_*,"
            f" consumer_config): {exc.args[0].str()}"
        )
        raise ConfigError(msg) from exc


def consumer_config(settings: KafkaSettings) -> dict[str, Any]:
    """Consumer properties: explicit assignment, no auto-commit, low fetch back-off and wait."""
    return {
        **settings.client_config(),
        "logger": LIBRDKAFKA_LOG,  # its log lines, at most one a minute per kind
        "group.id": settings.group_id,  # commits are for monitoring; recovery uses snapshots
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",  # the start offset was deleted by retention meanwhile
        # librdkafka's default (1000 ms) cuts throughput ~7x when the flow works between polls
        "fetch.queue.backoff.ms": 10,
        # how long the broker may hold a fetch while it has nothing new: a broker that always
        # holds it that long (Tansu) otherwise adds up to 500 ms (the default) to every event
        "fetch.wait.max.ms": 100,
        "queued.max.messages.kbytes": 262_144,
        **settings.consumer_config,
    }


def split_errors(name: str, messages: list[Message]) -> tuple[list[Message], list[DeadLetter]]:
    """The readable messages of partition ``name``, and a dead letter (reason
    ``unreadable``, its bytes if any) per record that cannot be read (:data:`RECORD_ERRORS`).
    A fatal error, or one no retry fixes (:data:`PERMANENT_ERRORS`: a topic or partition that
    does not exist, access refused), raises :class:`KafkaSourceError`; other errors concern
    the partition, not a record, and are logged (librdkafka retries)."""
    kept: list[Message] = []
    dead: list[DeadLetter] = []
    for m in messages:
        error = m.error()
        if error is None:
            kept.append(m)
        elif error.fatal() or error.code() in PERMANENT_ERRORS:
            msg = f"{name}: {error}"
            raise KafkaSourceError(msg)
        elif error.code() in RECORD_ERRORS and (offset := m.offset()) is not None and offset >= 0:
            detail = f"{error.name()}: {error.str()}"
            log.warning("%s: offset %d: %s", name, offset, detail)
            dead.append(DeadLetter(UNREADABLE, detail, m.value() or b"", name, offset))
        else:
            log.warning("%s: %s", name, error)  # transient; librdkafka retries
    return kept, dead


def consumed_batch(
    name: str, messages: list[Message], read_ms: int, max_envelope_bytes: int | None = None
) -> tuple[RawBatch, int] | None:
    """The raw batch of messages consumed from partition ``name`` (envelopes up to
    ``max_envelope_bytes`` split, unreadable records as dead letters: :func:`split_errors`)
    and the offset to read next; None when no message held a record."""
    unreadable: list[DeadLetter] = []
    if any([m.error() is not None for m in messages]):
        messages, unreadable = split_errors(name, messages)
    values = [m.value() or b"" for m in messages]
    offsets: list[int] | None = None
    if messages:
        first, last, offsets = message_offsets(messages)
        if any([v[:1] in MAY_START_ENVELOPE for v in values]):
            listed = offsets if offsets is not None else list(range(first, last + 1))
            values, offsets = expand_envelopes(values, listed, max_envelope_bytes)
    elif unreadable:
        first = last = unreadable[0].offset
    else:
        return None
    end = max([last, *[d.offset for d in unreadable]])
    batch = RawBatch(
        name, values, first, read_ms, offsets, unreadable=tuple(unreadable),
        arrived_ms=_newest_timestamp(messages),
    )  # fmt: skip
    return batch, end + 1


def _newest_timestamp(messages: list[Message]) -> int | None:
    """The greatest Kafka timestamp of the batch's last messages (CreateTime or LogAppendTime,
    as the topic keeps them), or None when the broker gives none."""
    stamps = [
        ts
        for kind, ts in (m.timestamp() for m in messages[-16:])  # CreateTime may not be ordered
        if kind != TIMESTAMP_NOT_AVAILABLE and ts > 0
    ]
    return max(stamps) if stamps else None


def message_offsets(messages: list[Message]) -> tuple[int, int, list[int] | None]:
    """(first, last, every offset) of consumed messages of one partition, in order; every
    offset only when they are not consecutive (compaction or transaction markers left
    gaps), else None: no call per message."""
    first, last = int(messages[0].offset() or 0), int(messages[-1].offset() or 0)
    if last - first == len(messages) - 1:
        return first, last, None
    return first, last, [int(m.offset() or 0) for m in messages]


class _KafkaPartition(StatefulSourcePartition[RawBatch, int]):
    """One Kafka partition.

    Bytewax lets a partition read only while the whole flow has finished the epochs before
    the partition's own, and advances a partition's epoch by wall clock. A worker with fewer
    partitions than another therefore waits, and then (bytewax#556) would read just one batch
    per epoch and fall ever further behind. So a partition that was not called for a second
    or more reads up to ``catch_up_batches`` batches at once.

    Reads never wait (Bytewax's sources must not block: while one partition waited for its
    broker, every other partition and shard of the worker would wait too). A read that finds
    less than a full batch asks Bytewax to come back after ``poll_interval_ms``, so batches
    stay large when the input is slow; one that finds nothing also returns, when the
    partition is known to be at its end, an empty *heartbeat* batch (at most every
    ``HEARTBEAT_S``), which lets the watermark treat the partition as idle.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        name: str,
        batch_size: int,
        resume: int | None,
        stop_at: float | None,
    ) -> None:
        self.name = name
        self.cut = False  # the duration ran out and the cut batch was sent
        self.ended = False  # stop_at_end: the end was reached and the ended batch sent
        self.max_envelope_bytes = settings.max_envelope_bytes
        self.batch_size = batch_size
        self.poll_interval = timedelta(milliseconds=settings.poll_interval_ms)
        self.end_wait_s = settings.end_wait_ms / 1000
        self.awake: datetime | None = None  # see next_awake
        self.last_beat = -HEARTBEAT_S  # monotonic time of the last heartbeat
        self.catch_up = settings.catch_up_batches
        self.commit_every_s = settings.commit_interval_ms / 1000
        self.committed = -1
        self.stop_at = stop_at
        topic, partition = split_part_name(name)
        self.leader_up = False  # the last statistics saw the partition's leader connected
        self.stats_at = -STATS_STALE_S  # monotonic time of the last statistics
        self.fetched_at = -STATS_STALE_S  # monotonic time of the last read that got messages
        self.said_caught_up = False  # what the partition's last batch said
        config = {
            **consumer_config(settings),
            "statistics.interval.ms": STATS_INTERVAL_MS,
            "stats_cb": self._on_stats,
        }
        self.consumer = Consumer(config)
        tp = self.tp = TopicPartition(topic, partition)
        try:
            low, high = self.consumer.get_watermark_offsets(tp, timeout=METADATA_TIMEOUT_S)
        except KafkaException as exc:
            msg = f"{name}: cannot read the partition's offsets: {exc}"
            raise KafkaSourceError(msg) from exc
        self.end = int(high) if settings.stop_at_end else None
        if resume is None:
            resume = self._start_offset(settings.start, tp, int(low), int(high))
        elif resume < low:
            log.warning(
                "%s: resumes at offset %d, but the partition now starts at %d (retention or a"
                " deleted topic): %d messages were lost before they were read",
                name, resume, low, low - resume,
            )  # fmt: skip
        self.next_offset = resume
        self.consumer.assign([TopicPartition(topic, partition, resume)])
        self.last_call = self.last_commit = time.monotonic()

    def _start_offset(self, start: str, tp: TopicPartition, low: int, high: int) -> int:
        """A concrete offset, so that a snapshot before the first message is exact too."""
        if start == "earliest":
            return low
        if start == "latest":
            return high
        tp.offset = int(start)
        try:
            (found,) = self.consumer.offsets_for_times([tp], timeout=METADATA_TIMEOUT_S)
        except KafkaException as exc:
            msg = f"{self.name}: cannot find the first offset at {start} ms: {exc}"
            raise KafkaSourceError(msg) from exc
        if found.error is not None:  # else an error would start it at the end, silently
            msg = f"{self.name}: cannot find the first offset at {start} ms: {found.error}"
            raise KafkaSourceError(msg)
        return int(found.offset) if found.offset >= 0 else high

    def next_batch(self) -> list[RawBatch]:
        now = time.monotonic()
        waited, self.last_call = now - self.last_call, now
        if self.stop_at is not None and now >= self.stop_at:
            if self.cut:
                raise StopIteration
            # the duration ran out: a pause, not the end of the topic; say so (once), then stop
            self.cut = True
            return [RawBatch(self.name, [], self.next_offset, wall_ms(), cut=True)]
        if self.ended:  # it said so: nothing more is read
            raise StopIteration
        batches: list[RawBatch] = []
        for _ in range(self.catch_up if waited >= 1.0 else 1):
            batch = self._read(timeout_s=0.0)
            if batch is None:
                break
            batches.append(batch)
        if not batches:
            self._skip_markers()
        if not batches and self.end is not None and self.next_offset >= self.end:
            # At the end seen at start: wait a little for more before stopping, which also
            # covers brokers that under-report the end (Tansu: the last batch's first offset).
            batch = self._read(timeout_s=self.end_wait_s)
            if batch is None:
                if self.commit_every_s:
                    self._commit(now)  # the last position too, or tools show it as lag
                self.ended = True  # say so once: it reads nothing more, so it stops reporting
                return [
                    RawBatch(self.name, [], self.next_offset, wall_ms(), caught_up=True, ended=True)
                ]
            batches.append(batch)
        if self.commit_every_s and now - self.last_commit >= self.commit_every_s:
            self._commit(now)
        if batches and len(batches[-1].messages) >= self.batch_size:
            self.awake = None  # a full batch: more may be queued, read again at once
        else:
            self.awake = datetime.now(UTC) + self.poll_interval  # read to the end: wait
        if batches:
            self.said_caught_up = batches[-1].caught_up
            return batches
        lag = self._lag()
        if lag == 0 and now - self.last_beat >= HEARTBEAT_S:
            self.last_beat = now
            self.said_caught_up = True
            return [RawBatch(self.name, [], self.next_offset, wall_ms(), caught_up=True, lag=0)]
        if self.said_caught_up and not self._leader_answers(now):
            # the end it saw may be old: the broker went away since
            self.said_caught_up = False
            log.warning("%s: its broker does not answer; it holds the watermark", self.name)
            return [RawBatch(self.name, [], self.next_offset, wall_ms(), unsure=True)]
        return []  # nothing yet, or not known to be at the end: no news for the watermark

    def _on_stats(self, text: str) -> None:
        """librdkafka's statistics (JSON): is the partition's leader connected?"""
        try:
            stats = orjson.loads(text)
            topic = stats["topics"][self.tp.topic]["partitions"][str(self.tp.partition)]
            leader = topic["leader"]
            self.leader_up = any(
                b.get("nodeid") == leader and b.get("state") == "UP"
                for b in stats["brokers"].values()
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            self.leader_up = False  # the partition is not known (yet): not shown connected
        self.stats_at = time.monotonic()

    def _leader_answers(self, now: float) -> bool:
        """Whether recent statistics show the partition's leader connected; before the first
        statistics, whether a read brought messages within the last second."""
        if now - self.stats_at <= STATS_STALE_S:
            return self.leader_up
        return now - self.fetched_at <= 1.0

    def next_awake(self) -> datetime | None:
        """After a read that reached the partition's end: when to read again; else None (at
        once)."""
        return self.awake

    def _commit(self, now: float) -> None:
        """Commit the read position for monitoring; failures are only logged."""
        self.last_commit = now
        if self.next_offset == self.committed:
            return
        position = TopicPartition(self.tp.topic, self.tp.partition, self.next_offset)
        try:
            self.consumer.commit(offsets=[position], asynchronous=True)
            self.committed = self.next_offset
        except KafkaException as exc:
            log.warning("%s: cannot commit the read position: %s", self.name, exc)

    def _skip_markers(self) -> None:
        """Move the position past records the consumer passed over without returning them
        (transaction markers, aborted transactions' records): a topic written by
        transactional producers ends in a marker, and counting from the last message the
        partition was never at its end (no heartbeat, and ``stop_at_end`` never stopped)."""
        try:
            (position,) = self.consumer.position([self.tp])
        except KafkaException:
            return
        if position.offset > self.next_offset:
            self.next_offset = int(position.offset)

    def _lag(self) -> int | None:
        """Messages between our position and the partition's end, as of the last fetch; None
        when not known, or when the leader is not shown connected (the last fetch's end
        would then look caught up for as long as the broker is away)."""
        if not self._leader_answers(time.monotonic()):
            return None
        try:
            _, high = self.consumer.get_watermark_offsets(self.tp, cached=True)
        except KafkaException:
            return None
        return max(0, int(high) - self.next_offset) if high >= 0 else None

    def _read(self, timeout_s: float) -> RawBatch | None:
        # A batch is tens of thousands of Message objects, which the cycle collector tracks:
        # left on, it would scan them all about once per batch (7 % of a catch-up run).
        with gc_paused():
            messages = self.consumer.consume(num_messages=self.batch_size, timeout=timeout_s)
            if not messages:
                return None
            self.fetched_at = time.monotonic()
            got = consumed_batch(self.name, messages, wall_ms(), self.max_envelope_bytes)
            del messages  # freed before collections resume
        if got is None:
            return None
        batch, self.next_offset = got
        self._skip_markers()
        lag = self._lag()
        # caught up only when nothing is left at the partition's end as of the last fetch: a
        # short batch alone is no proof (a zero-timeout read returns what is queued locally)
        return replace(batch, caught_up=lag == 0, lag=lag)

    def snapshot(self) -> int:
        return self.next_offset

    def close(self) -> None:
        """Close the consumer, waiting at most :data:`CLOSE_WAIT_S`: with the broker gone,
        librdkafka waits for the last offset commit (up to a minute) before it lets go,
        which held a stopping run (SIGTERM, a failed step) that long."""
        if self.commit_every_s:
            self._commit(time.monotonic())  # close waits for it (within CLOSE_WAIT_S)
        closing = threading.Thread(target=self.consumer.close, name=f"close {self.name}")
        closing.daemon = True
        closing.start()
        closing.join(CLOSE_WAIT_S)
        if closing.is_alive():
            log.warning("%s: the consumer is still closing (its broker does not answer)", self.name)


class KafkaSource(FixedPartitionedSource[RawBatch, int]):
    """Raw batches from every partition of ``settings.input_topics``.

    ``partitions``: :func:`list_partitions` of the settings, when the caller has it.
    ``resuming``: the run resumes from a recovery directory. A partition without a resume
    offset then is one added to its topic since (or never read): it starts at its earliest
    offset, whatever ``kafka.start`` says, so what was written to it before the restart is
    read, not skipped (partitions are listed once, at start: one added while a run goes on
    is read from the next start).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        batch_size: int,
        duration_s: float | None = None,
        resuming: bool = False,
        partitions: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self.duration_s = duration_s
        self.resuming = resuming
        self.stop_at: float | None = None  # set when the first partition is built
        self._parts = partitions

    def input_partitions(self) -> list[str]:
        """Every Kafka partition the flow reads (the watermark waits for each)."""
        if self._parts is None:
            self._parts = list_partitions(self.settings)
        return self._parts

    def list_parts(self) -> list[str]:
        """Same as :meth:`input_partitions`."""
        return self.input_partitions()

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _KafkaPartition:
        """A consumer assigned to ``for_part`` at the resume offset or the start position.

        ``duration_s`` counts from the first partition built: the flow is running by then
        (its kernels compiled), so a run reads input for that long whatever its start-up took.
        """
        if self.stop_at is None and self.duration_s is not None:
            self.stop_at = time.monotonic() + self.duration_s
        settings = self.settings
        if self.resuming and resume_state is None and settings.start != "earliest":
            log.warning("%s: no resume offset (a new partition?): read from its start", for_part)
            settings = replace(settings, start="earliest")
        return _KafkaPartition(settings, for_part, self.batch_size, resume_state, self.stop_at)
