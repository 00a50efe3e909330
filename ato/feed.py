"""Generated traffic into the input topic: ``ato feed`` and the demo data of ``ato dev up``."""

from collections.abc import Callable

from confluent_kafka import KafkaError, Message, Producer

from ato.catalog import Catalog
from ato.config import GeneratorSettings, KafkaSettings
from ato.exceptions import AtoError
from ato.generator import GeneratedTraffic, generate

POLL_WHEN_FULL_S = 0.05


class FeedError(AtoError):
    """Traffic could not be written to the input topic."""


def produce_waiting(
    producer: Producer,
    topic: str,
    value: bytes,
    partition: int,
    on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    wait_s: float = POLL_WHEN_FULL_S,
) -> None:
    """Queue one message on ``partition``, serving deliveries while the local queue is full."""
    while True:
        try:
            if on_delivery is None:
                producer.produce(topic, value, partition=partition)
            else:
                producer.produce(topic, value, partition=partition, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(wait_s)


def feed(kafka: KafkaSettings, traffic: GeneratedTraffic, partitions: int) -> int:
    """Write generator partition ``i`` to partition ``i % partitions`` of the first input topic.

    Returns the number of messages delivered; raises if any was not.
    """
    producer = Producer({**kafka.client_config(), "linger.ms": 20, "batch.num.messages": 10_000})
    topic = kafka.input_topics[0]
    failures: list[str] = []

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        if error is not None and len(failures) < 5:
            failures.append(str(error))

    sent = 0
    for i, lines in enumerate(traffic.partitions.values()):
        for line in lines:
            produce_waiting(producer, topic, line, i % partitions, on_delivery)
            sent += 1
        producer.poll(0)
    left = producer.flush(kafka.flush_timeout_s)
    if left or failures:
        msg = f"topic {topic}: {left} messages undelivered; errors: {'; '.join(failures)}"
        raise FeedError(msg)
    return sent


def feed_generated(
    kafka: KafkaSettings, catalog: Catalog, settings: GeneratorSettings, partitions: int
) -> tuple[int, GeneratedTraffic]:
    """Generate traffic with ``settings`` and :func:`feed` it."""
    traffic = generate(catalog, settings)
    return feed(kafka, traffic, partitions), traffic
