"""Kafka test helpers: fresh topics per test on the session broker (tests/conftest.py)."""

import os
import signal
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from ato.config import KafkaSettings
from ato.devservers import Server, create_topics


@pytest.fixture
def topics(broker: Server, request: pytest.FixtureRequest) -> KafkaSettings:
    """Fresh topics for one test: input (3 partitions), interventions, dead letters."""
    stem = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:80]
    settings = KafkaSettings(
        brokers=broker.address,
        input_topics=(f"{stem}.in",),
        interventions_topic=f"{stem}.out",
        dead_letter_topic=f"{stem}.dlq",
        stop_at_end=True,
        end_wait_ms=20,
        flush_timeout_s=10.0,
    )
    create_topics(
        broker.address,
        {f"{stem}.in": 3, f"{stem}.out": 1, f"{stem}.dlq": 1},
    )
    return settings


def produce(
    brokers: str, topic: str, messages: list[tuple[int, bytes]], timestamps: list[int] | None = None
) -> None:
    """Write ``(partition, value)`` messages and wait until all are delivered."""
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 5})
    failed: list[str] = []

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failed.append(str(error))

    for i, (partition, value) in enumerate(messages):
        ts = timestamps[i] if timestamps is not None else 0
        producer.produce(topic, value, partition=partition, timestamp=ts, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert failed == []


def consume_all(brokers: str, topic: str, quiet_s: float = 1.0) -> list[Message]:
    """Every message of ``topic`` (all partitions) from the beginning until ``quiet_s`` of
    silence (Tansu under-reports partition ends, so they cannot say when to stop)."""
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "tests"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in sorted(meta.partitions)])
        out: list[Message] = []
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            got = consumer.consume(10_000, timeout=0.1)
            if got:
                last = time.monotonic()
                out.extend(m for m in got if m.error() is None)
        return out
    finally:
        consumer.close()


def run_with_kills(
    argv: list[str], brokers: str, topic: str, thresholds: list[float], max_starts: int
) -> int:
    """Run ``argv`` (stdout and stderr discarded) until it exits 0, restarting it after each
    SIGKILL. Its whole process group is killed each time ``topic`` has received the next of
    ``thresholds`` messages (counted over every start, replays included), so the kills fall
    while the run produces. Returns how many kills fell; fails the test if the run exits any
    other way or has not finished after ``max_starts`` starts."""
    counter = Consumer({"bootstrap.servers": brokers, "group.id": f"kill-counter-{topic}"})
    counter.assign([TopicPartition(topic, 0, 0)])
    produced = kills = 0
    try:
        for _ in range(max_starts):
            proc = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
            while proc.poll() is None:
                produced += len(counter.consume(10_000, timeout=0.05))
                if kills < len(thresholds) and produced >= thresholds[kills]:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    kills += 1
            if proc.returncode == 0:
                return kills
            assert proc.returncode == -signal.SIGKILL
        pytest.fail(f"{' '.join(argv[2:])}: not finished after {max_starts} starts")
    finally:
        counter.close()
