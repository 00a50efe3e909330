"""The record sink against a real broker: keys, headers, order, and loud failure."""

from pathlib import Path

import pytest

from ato.config import KafkaSettings
from ato.devservers import create_topics, start_broker
from sinks.exceptions import SinkError
from sinks.kafka import Record, TopicProducer, release, shared_producer
from tests.kafka.conftest import consume_all


def test_records_arrive_with_key_headers_and_in_order(topics: KafkaSettings) -> None:
    producer = shared_producer(topics, topics.interventions_topic)
    records = [Record(b"client-7", f"v{i}".encode(), [("n", str(i).encode())]) for i in range(50)]
    producer.produce(records[:20])
    producer.produce(records[20:])
    producer.flush()
    release(topics, producer)
    got = consume_all(topics.brokers, topics.interventions_topic)
    assert [m.value() for m in got] == [r.value for r in records]
    assert {m.key() for m in got} == {b"client-7"}
    assert [m.headers() for m in got] == [[("n", str(i).encode())] for i in range(50)]


def test_shared_producer_is_one_per_topic_until_released(topics: KafkaSettings) -> None:
    a = shared_producer(topics, topics.interventions_topic)
    b = shared_producer(topics, topics.interventions_topic)
    assert a is b
    release(topics, a)
    release(topics, b)
    c = shared_producer(topics, topics.interventions_topic)
    assert c is not a
    release(topics, c)


def test_undelivered_messages_fail_loudly_when_the_broker_is_gone(tmp_path: Path) -> None:
    server = start_broker(None, tmp_path)
    try:
        create_topics(server.address, {"out": 1})
        settings = KafkaSettings(brokers=server.address, flush_timeout_s=2.0)
        producer = TopicProducer(settings, "out")
        producer.produce([Record(b"k", b"before", [])])
        producer.flush()  # delivered while the broker is up
    finally:
        server.stop()
    producer.produce([Record(b"k", b"after", [])])
    with pytest.raises(SinkError, match="topic out: .*(not delivered|delivery failed)"):
        producer.flush()


def test_a_full_queue_with_the_broker_gone_fails_while_producing(tmp_path: Path) -> None:
    """The local queue fills when the broker is gone; produce raises once a delivery has
    failed, rather than queueing the rest of its records first."""
    server = start_broker(None, tmp_path)
    try:
        create_topics(server.address, {"out": 1})
        settings = KafkaSettings(
            brokers=server.address,
            flush_timeout_s=5.0,  # room for a slow first delivery on a loaded machine
            producer_config={"queue.buffering.max.messages": 5, "linger.ms": 0},
        )
        producer = TopicProducer(settings, "out")
        producer.produce([Record(b"k", b"before", [])])
        producer.flush()
    finally:
        server.stop()
    records = [Record(b"k", b"after-%d" % i, []) for i in range(200)]
    with pytest.raises(SinkError, match="topic out: delivery failed"):
        producer.produce(records)
    assert producer.delivered == 1
