"""The record sink against a real broker: keys, headers, order, and loud failure."""

import subprocess
import sys
from pathlib import Path

import pytest

from ato.config import KafkaSettings
from ato.devservers import create_topics, free_port, start_broker
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
        # quiet: once the broker is gone the producer's failed connections would fill stderr,
        # which other tests read, for as long as it lives
        settings = KafkaSettings(
            brokers=server.address, flush_timeout_s=2.0, producer_config={"log_level": "0"}
        )
        producer = TopicProducer(settings, "out")
        producer.produce([Record(b"k", b"before", [])])
        producer.flush()  # delivered while the broker is up
    finally:
        server.stop()
    producer.produce([Record(b"k", b"after", [])])
    with pytest.raises(SinkError, match="topic out: .*(not delivered|delivery failed)"):
        producer.flush()


def test_a_broker_gone_makes_a_few_log_lines_and_one_counted_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """librdkafka wrote a line per failed connection (about 2,800 in a run whose broker
    died), and the error listed the same error once per message, uncounted."""
    server = start_broker(None, tmp_path)
    try:
        create_topics(server.address, {"out": 1})
        # deliveries time out (1 s) well before the flush gives up (5 s)
        config = {"message.timeout.ms": "1000"}
        settings = KafkaSettings(
            brokers=server.address, flush_timeout_s=5.0, producer_config=config
        )
        producer = TopicProducer(settings, "out")
        producer.produce([Record(b"k", b"before", [])])
        producer.flush()
    finally:
        server.stop()
    capfd.readouterr()
    producer.produce([Record(b"k%d" % i, b"after", []) for i in range(50)])
    with pytest.raises(SinkError) as info:
        producer.flush()
    err = capfd.readouterr().err
    assert "%3|" not in err and "%4|" not in err  # none straight from librdkafka
    assert len(err.splitlines()) <= 10, err
    text = str(info.value)
    assert f"delivery failed for 50 messages (brokers {server.address})" in text
    assert text.count("first key") == len(producer.failures) <= 10


def test_a_full_queue_with_the_broker_gone_fails_while_producing(tmp_path: Path) -> None:
    """The local queue fills when the broker is gone; produce raises once a delivery has
    failed, rather than queueing the rest of its records first."""
    server = start_broker(None, tmp_path)
    try:
        create_topics(server.address, {"out": 1})
        settings = KafkaSettings(
            brokers=server.address,
            flush_timeout_s=5.0,  # room for a slow first delivery on a loaded machine
            producer_config={"queue.buffering.max.messages": 5, "linger.ms": 0, "log_level": "0"},
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


FAILING_FLOW = """
import sys
from datetime import timedelta
import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from ato.config import KafkaSettings
from sinks.kafka import KafkaRecordSink, Record

settings = KafkaSettings(brokers=sys.argv[1], flush_timeout_s=1.0)
flow = Dataflow("undelivered")
items = [("a", [Record(b"k", b"v", [])]), ("b", [Record(b"k", b"w", [])])]
out = op.input("in", flow, TestingSource(items))
op.output("out", out, KafkaRecordSink(settings, "t", ["a", "b"]))
try:
    run_main(flow, epoch_interval=timedelta(seconds=0.2))
except Exception as exc:
    print("raised:", exc, exc.__cause__)
    sys.exit(1)
"""


def test_a_flow_whose_deliveries_fail_raises_the_error_instead_of_aborting() -> None:
    """The epoch end's flush raises; as Bytewax then drops the sink partitions, their close
    flushed again and raised a second time, which aborted the process (SIGABRT, nothing
    printed; with chDB loaded, it hung instead)."""
    nobody = f"127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-c", FAILING_FLOW, nobody],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2], check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert "raised:" in done.stdout
    assert "topic t: " in done.stdout + done.stderr


def test_a_message_the_producer_refuses_is_a_sink_error_naming_its_size() -> None:
    quiet = {"message.max.bytes": "1000", "log_level": "0"}  # no broker there: quiet, as above
    settings = KafkaSettings(brokers=f"127.0.0.1:{free_port()}", producer_config=quiet)
    producer = TopicProducer(settings, "out")
    with pytest.raises(SinkError, match="topic out: cannot produce a message of 5000 bytes: "):
        producer.produce([Record(b"k", b"x" * 5000, [])])
