"""The Kafka source against a real broker: batching, envelopes, start positions, partitions."""

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bytewax.operators as op
import orjson
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import StatefulSourcePartition
from bytewax.testing import TestingSink, cluster_main, run_main
from confluent_kafka import Message, Producer

from ato.config import KafkaSettings
from ato.devservers import create_topics, start_broker
from operators.batches import RawBatch
from sources.envelopes import expand_envelopes
from sources.kafka import (
    HEARTBEAT_S,
    STATS_STALE_S,
    KafkaSource,
    KafkaSourceError,
    committed_positions,
    message_offsets,
    part_name,
)
from tests.kafka.conftest import produce


def _read(settings: KafkaSettings, batch_size: int = 1000, workers: int = 1) -> list[RawBatch]:
    flow = Dataflow("read")
    got: list[RawBatch] = []
    op.output("out", op.input("in", flow, KafkaSource(settings, batch_size)), TestingSink(got))
    if workers == 1:
        run_main(flow, epoch_interval=timedelta(seconds=1))
    else:
        cluster_main(
            flow, [], 0, epoch_interval=timedelta(seconds=1), worker_count_per_proc=workers
        )
    return got


def _events(n: int, partitions: int = 3) -> list[tuple[int, bytes]]:
    return [(i % partitions, orjson.dumps({"i": i})) for i in range(n)]


def _seen(batches: list[RawBatch]) -> dict[tuple[str, int], bytes]:
    out = {}
    for b in batches:
        offsets = b.offset_array().tolist()
        for offset, message in zip(offsets, b.messages, strict=True):
            assert (b.partition, offset) not in out
            out[(b.partition, offset)] = message
    return out


def test_reads_every_message_once_in_batches(topics: KafkaSettings) -> None:
    topic = topics.input_topics[0]
    produce(topics.brokers, topic, _events(2_500))
    batches = _read(topics, batch_size=400)
    seen = _seen(batches)
    assert len(seen) == 2_500
    assert max(len(b.messages) for b in batches) <= 400
    assert len(batches) < 2_500 / 50  # batches, not single messages
    for p in range(3):  # offsets are per partition and start at 0
        mine = sorted(o for part, o in seen if part == part_name(topic, p))
        assert mine == list(range(len(mine)))


@pytest.mark.parametrize("workers", [2, 4])
def test_uneven_and_empty_worker_partition_splits_finish(
    topics: KafkaSettings, workers: int
) -> None:
    """3 partitions on 2 workers (2 + 1) and on 4 workers (one worker has none)."""
    produce(topics.brokers, topics.input_topics[0], _events(3_000))
    assert len(_seen(_read(topics, batch_size=100, workers=workers))) == 3_000


def test_envelopes_are_split_and_share_their_offset(topics: KafkaSettings) -> None:
    envelope = orjson.dumps([{"a": 1}, {"a": 2}, {"a": 3}])
    produce(topics.brokers, topics.input_topics[0], [(0, b'{"a":0}'), (0, envelope), (0, b"[oops")])
    (batch,) = [b for b in _read(topics) if b.messages]
    assert batch.messages == [b'{"a":0}', b'{"a":1}', b'{"a":2}', b'{"a":3}', b"[oops"]
    assert batch.offset_array().tolist() == [0, 1, 1, 1, 2]


def test_expand_envelopes_keeps_plain_and_broken_messages() -> None:
    messages = [b' [{"x":1}]', b"[]", b'{"y":2}', b"[1,"]
    assert expand_envelopes(messages, [5, 6, 7, 8]) == (
        [b'{"x":1}', b"[]", b'{"y":2}', b"[1,"],
        [5, 6, 7, 8],
    )


def test_start_latest_reads_nothing_already_there(topics: KafkaSettings) -> None:
    # one message per produce request: Tansu reports the end of a partition as the first
    # offset of its last record batch plus one (see README, Tansu)
    for partition, value in _events(6):
        produce(topics.brokers, topics.input_topics[0], [(partition, value)])
    assert _seen(_read(KafkaSettings(**{**_fields(topics), "start": "latest"}))) == {}


def test_a_resumed_run_reads_a_partition_without_a_resume_offset_from_its_start(
    topics: KafkaSettings,
) -> None:
    """A partition added to the topic since the snapshot has no resume offset; with
    ``start = "latest"`` it skipped what was written to it before the restart."""
    topic = topics.input_topics[0]
    for i in range(3):  # one a request: Tansu's end is its last record batch's first offset
        produce(topics.brokers, topic, [(1, orjson.dumps({"i": i}))])
    latest = replace(topics, start="latest")
    fresh = KafkaSource(latest, batch_size=100).build_part("in", part_name(topic, 1), None)
    assert fresh.snapshot() == 3  # a fresh run: from the end
    fresh.close()
    source = KafkaSource(latest, batch_size=100, resuming=True)
    added = source.build_part("in", part_name(topic, 1), None)
    try:
        assert [b.offset_array().tolist() for b in _until_messages(added)] == [[0, 1, 2]]
    finally:
        added.close()
    kept = source.build_part("in", part_name(topic, 1), 2)  # a resume offset is kept
    try:
        assert [b.offset_array().tolist() for b in _until_messages(kept)] == [[2]]
    finally:
        kept.close()


def test_start_at_a_timestamp(topics: KafkaSettings) -> None:
    """Starts at the first message at or after the time (Tansu: the time it stored it)."""
    topic = topics.input_topics[0]
    produce(topics.brokers, topic, _events(10, 1))
    time.sleep(0.05)
    start = int(time.time() * 1000)
    time.sleep(0.05)
    produce(topics.brokers, topic, [(0, orjson.dumps({"i": i})) for i in range(10, 20)])
    seen = _seen(_read(KafkaSettings(**{**_fields(topics), "start": str(start)})))
    assert sorted(orjson.loads(m)["i"] for m in seen.values()) == list(range(10, 20))


def test_missing_topic_is_a_clear_error(topics: KafkaSettings) -> None:
    settings = KafkaSettings(**{**_fields(topics), "input_topics": ("no-such-topic",)})
    with pytest.raises(KafkaSourceError, match="'no-such-topic' does not exist"):
        KafkaSource(settings, 10).input_partitions()


def test_resume_state_is_the_next_offset(topics: KafkaSettings) -> None:
    topic = topics.input_topics[0]
    produce(topics.brokers, topic, [(0, orjson.dumps({"i": i})) for i in range(10)])
    source = KafkaSource(topics, batch_size=4)
    part = source.build_part("in", part_name(topic, 0), None)
    assert part.snapshot() == 0
    first = _until_items(part)
    assert [b.offset_array().tolist() for b in first] == [[0, 1, 2, 3]]
    assert part.snapshot() == 4
    part.close()
    resumed = source.build_part("in", part_name(topic, 0), 4)
    assert _until_items(resumed)[0].offset_array().tolist() == [4, 5, 6, 7]
    resumed.close()


def _until_items(
    part: StatefulSourcePartition[RawBatch, int], timeout_s: float = 10.0
) -> list[RawBatch]:
    """What a partition returns once it returns anything (reads never wait for the broker)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batches = part.next_batch()
        if batches:
            return batches
        time.sleep(0.002)
    msg = "the partition returned nothing"
    raise AssertionError(msg)


def _until_messages(
    part: StatefulSourcePartition[RawBatch, int], timeout_s: float = 10.0
) -> list[RawBatch]:
    """:func:`_until_items` without heartbeats: a caught-up partition may beat (every
    ``HEARTBEAT_S``) before a fetch brings what was just produced, on a busy machine."""
    deadline = time.monotonic() + timeout_s
    while True:
        batches = [b for b in _until_items(part, deadline - time.monotonic()) if b.messages]
        if batches:
            return batches


def _fields(settings: KafkaSettings) -> dict:
    return {f: getattr(settings, f) for f in settings.__dataclass_fields__}


def test_idle_partitions_send_heartbeats_that_advance_the_watermark(
    topics: KafkaSettings,
) -> None:
    """A partition with nothing to read says so; after the idle timeout it stops holding."""
    from ato.catalog import load_catalog
    from ato.config import EngineSettings
    from operators.decode import Decoder
    from operators.route import Router
    from operators.shard_step import ShardContext, ShardLogic

    topic = topics.input_topics[0]
    t0 = 1_767_600_000_000
    events = [
        {"event_id": f"e{i}", "client_id": f"c{i}", "ts": t0 + i * 1_000, "channel": "app",
         "type": "page_view"}
        for i in range(5)
    ]  # fmt: skip
    produce(topics.brokers, topic, [(0, orjson.dumps(e)) for e in events])
    live = KafkaSettings(**{**_fields(topics), "stop_at_end": False})
    source = KafkaSource(live, batch_size=100)
    busy = source.build_part("in", part_name(topic, 0), None)
    quiet = [source.build_part("in", part_name(topic, p), None) for p in (1, 2)]
    try:
        (batch,) = _until_items(busy)
        assert len(batch.messages) == 5 and batch.caught_up  # a short read: nothing more yet
        beats = [b for part in quiet for b in _until_items(part)]
        assert [(b.partition, b.messages, b.caught_up) for b in beats] == [
            (part_name(topic, 1), [], True),
            (part_name(topic, 2), [], True),
        ]
        catalog = load_catalog()
        engine = EngineSettings(shards=1, idle_timeout_ms=1_000)
        wall = [t0]
        names = [part_name(topic, p) for p in range(3)]
        shard = ShardLogic(ShardContext(catalog, engine, names, lambda: wall[0]), None)
        decoder, router = Decoder(catalog, engine), Router(1)
        for raw in [batch, *beats]:
            decoded = decoder(raw)
            assert decoded.dead == []
            for _, item in router(decoded):
                shard.on_batch([item])
        assert shard.tracker.current < t0  # the quiet partitions still hold it
        wall[0] += 1_000  # the quiet partitions' idle timeout passes; p0 keeps sending
        later = {**events[0], "event_id": "e5", "ts": t0 + 5_000}
        produce(topics.brokers, topic, [(0, orjson.dumps(later))])
        deadline = time.monotonic() + 10
        while shard.tracker.current < t0 and time.monotonic() < deadline:
            # heartbeats until the broker hands it over; the quiet partitions keep saying
            # they are caught up (one that stopped would hold the watermark: held back)
            for raw in [b for part in [busy, *quiet] for b in part.next_batch()]:
                for _, item in router(decoder(raw)):
                    shard.on_batch([item])
        assert shard.tracker.current == t0 + 5_000 - engine.allowed_lateness_ms
    finally:
        for part in [busy, *quiet]:
            part.close()


def test_batches_report_the_partition_lag(topics: KafkaSettings) -> None:
    """Lag after each batch: messages left before the partition's end (as of the fetch)."""
    topic = topics.input_topics[0]
    produce(topics.brokers, topic, [(0, orjson.dumps({"i": i})) for i in range(10)])
    live = replace(topics, stop_at_end=False)
    part = KafkaSource(live, batch_size=4).build_part("in", part_name(topic, 0), None)
    lags = []
    for _ in range(50):
        batches = _until_items(part)
        lags += [(len(b.messages), b.lag) for b in batches]
        # a short batch is not proof of being caught up: only an empty end is
        assert all(b.caught_up == (b.lag == 0) for b in batches)
        if not batches[-1].messages:
            break
    part.close()
    read = [n for n, _ in lags if n]
    assert sum(read) == 10
    assert lags[-1] == (0, 0)  # the heartbeat: caught up
    left = 10
    for n, lag in lags:
        left -= n
        assert lag is None or lag == left  # known once the first fetch came back
    assert any(lag for n, lag in lags if n)  # the first batches see messages left


def test_a_finished_partition_commits_its_last_position(topics: KafkaSettings) -> None:
    """A backfill (``stop_at_end``) shorter than ``commit_interval_ms`` committed nothing,
    and a longer one not its last second: Kafka tools showed what it read as lag."""
    topic = topics.input_topics[0]
    for i in range(5):  # one per request: Tansu's end of a partition is its last batch's start
        produce(topics.brokers, topic, [(0, orjson.dumps({"i": i}))])
    settings = replace(topics, group_id=f"{topic}.end", commit_interval_ms=60_000)
    _read(settings)
    done = committed_positions(settings, [part_name(topic, p) for p in range(3)])
    assert [done[part_name(topic, p)][0] for p in range(3)] == [5, 0, 0]


def test_read_position_is_committed_for_lag_monitoring(topics: KafkaSettings) -> None:
    """Kafka tools see the flow's lag: the source commits its position to ``group_id``."""
    topic = topics.input_topics[0]
    produce(topics.brokers, topic, [(0, orjson.dumps({"i": i})) for i in range(10)])
    settings = replace(topics, stop_at_end=False, group_id=f"{topic}.g", commit_interval_ms=1)
    parts = [part_name(topic, 0), part_name(topic, 1)]
    before = committed_positions(settings, parts)
    assert [before[p][0] for p in parts] == [None, None]
    assert before[parts[1]][1] == 0
    assert before[parts[0]][1] > 0  # Tansu reports the last batch's first offset as the end
    part = KafkaSource(settings, batch_size=4).build_part("in", parts[0], None)
    read = 0
    while read < 10:  # 4 + 4 + 2 messages (reads do not wait for the broker's fetch)
        read += sum(len(b.messages) for b in _until_items(part))
        time.sleep(0.01)
    part.next_batch()  # commits the position after the last read
    part.consumer.poll(0.5)  # serve the asynchronous commit's callback
    part.close()
    after = committed_positions(settings, parts)
    assert [after[p][0] for p in parts] == [10, None]
    off = replace(settings, group_id=f"{topic}.off", commit_interval_ms=0)
    part = KafkaSource(off, batch_size=4).build_part("in", parts[0], None)
    part.next_batch()
    part.close()
    assert committed_positions(off, parts[:1])[parts[0]][0] is None


def test_message_offsets_are_listed_only_with_gaps() -> None:
    def consumed(offsets: list[int]) -> list[Message]:
        return [Message(topic="t", partition=0, offset=o, value=b"{}") for o in offsets]

    assert message_offsets(consumed([7, 8, 9])) == (7, 9, None)
    assert message_offsets(consumed([7])) == (7, 7, None)
    assert message_offsets(consumed([7, 9, 10])) == (7, 10, [7, 9, 10])  # a compacted gap


def test_reads_never_wait_and_quiet_partitions_beat_at_most_every_heartbeat(
    topics: KafkaSettings,
) -> None:
    """A read returns at once; after one that reached the partition's end (nothing, or less
    than a full batch) Bytewax is asked to come back after the poll interval, after a full
    batch at once; a caught-up partition sends a heartbeat at most every HEARTBEAT_S."""
    topic = topics.input_topics[0]
    live = replace(topics, stop_at_end=False, poll_interval_ms=7)
    part = KafkaSource(live, batch_size=2).build_part("in", part_name(topic, 0), None)

    def asks_to_wait() -> bool:
        awake = part.next_awake()
        return awake is not None and awake <= datetime.now(UTC) + timedelta(milliseconds=7)

    try:
        (beat,) = _until_items(part)  # the first fetch came back: the partition is empty
        assert (beat.messages, beat.caught_up, beat.lag) == ([], True, 0)
        started, beats, empty = time.monotonic(), 0, 0
        while time.monotonic() - started < 5 * HEARTBEAT_S:
            got = part.next_batch()
            beats += len(got)
            empty += not got
            assert asks_to_wait()
        elapsed = time.monotonic() - started
        assert empty > beats  # most empty reads return nothing, not a heartbeat
        assert 1 <= beats <= elapsed / HEARTBEAT_S + 1
        produce(topics.brokers, topic, [(0, orjson.dumps({"i": i})) for i in range(3)])
        (full,) = _until_messages(part)
        assert len(full.messages) == 2
        assert part.next_awake() is None  # a full batch: more may be queued, read again at once
        (rest,) = _until_messages(part)
        assert rest.messages == [orjson.dumps({"i": 2})]
        assert asks_to_wait()
    finally:
        part.close()


def test_batches_carry_the_time_their_messages_arrived(topics: KafkaSettings) -> None:
    """Each batch knows when its newest message reached Kafka (the message timestamp): with
    the replay clock, event time counts at most up to it."""
    before = int(time.time() * 1000)
    produce(topics.brokers, topics.input_topics[0], _events(30))
    after = int(time.time() * 1000)
    batches = [b for b in _read(topics, batch_size=7) if b.messages]
    assert batches
    for batch in batches:
        assert batch.arrived_ms is not None
        assert before - 1_000 <= batch.arrived_ms <= after + 1_000


def test_a_topic_ending_in_a_transaction_marker_is_read_to_its_end(
    topics: KafkaSettings,
) -> None:
    """A transactional producer's commit leaves a marker record after the messages: the
    partition's end is one past it. Counting from the last message, the partition was never
    caught up (no heartbeat) and ``stop_at_end`` never stopped; the next offset skips it."""
    topic = topics.input_topics[0]
    producer = Producer({"bootstrap.servers": topics.brokers, "transactional.id": topic})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, orjson.dumps({"i": i}), partition=0)
    producer.commit_transaction(30)
    endless = replace(topics, stop_at_end=False)
    part = KafkaSource(endless, batch_size=100).build_part("in", part_name(topic, 0), None)
    try:
        assert [b.offset_array().tolist() for b in _until_messages(part)] == [[0, 1, 2]]
        assert part.snapshot() == 4  # past the marker at offset 3
        beat = _until_items(part, timeout_s=HEARTBEAT_S + 5)
        assert [(b.messages, b.caught_up, b.lag) for b in beat] == [([], True, 0)]
    finally:
        part.close()
    ending = replace(topics, stop_at_end=True, end_wait_ms=2_000)  # Tansu under-reports ends
    part = KafkaSource(ending, batch_size=100).build_part("in", part_name(topic, 0), None)
    try:
        assert [b.offset_array().tolist() for b in _until_messages(part)] == [[0, 1, 2]]
        (end,) = _until_items(part)  # its end, said once: it idles for good
        assert (end.messages, end.caught_up, end.ended) == ([], True, True)
        with pytest.raises(StopIteration):
            _until_items(part)
    finally:
        part.close()


def test_a_caught_up_partition_whose_broker_goes_away_says_it_is_unsure(
    tmp_path: Path,
) -> None:
    """The end the last fetch saw stays in librdkafka's cache when the broker goes: the
    partition went on beating ``caught_up`` (lag 0), so it went idle and a live watermark
    followed the wall clock. Once the statistics show its leader gone it says it is unsure,
    once, and beats no more."""
    server = start_broker(None, tmp_path)
    try:
        create_topics(server.address, {"in": 1})
        produce(server.address, "in", [(0, orjson.dumps({"i": i})) for i in range(3)])
        # no offset commits: one pending to the gone broker keeps the consumer (and its log
        # lines on stderr, which other tests read) alive for a minute after close
        settings = KafkaSettings(brokers=server.address, input_topics=("in",), commit_interval_ms=0)
        part = KafkaSource(settings, batch_size=100).build_part("in", part_name("in", 0), None)
        assert [len(b.messages) for b in _until_messages(part)] == [3]
        deadline = time.monotonic() + 10
        while not any(b.caught_up for b in part.next_batch()):  # a heartbeat
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        server.stop()
    seen: list[RawBatch] = []
    deadline = time.monotonic() + 4 * STATS_STALE_S
    while not any(b.unsure for b in seen):
        assert time.monotonic() < deadline, seen
        seen.extend(part.next_batch())
        time.sleep(0.01)
    later: list[RawBatch] = []
    until = time.monotonic() + 1.0
    while time.monotonic() < until:
        later.extend(part.next_batch())
        time.sleep(0.01)
    part.close()
    assert [(b.messages, b.unsure) for b in seen if not b.caught_up] == [([], True)]
    assert later == []  # no heartbeat, and no second unsure report
