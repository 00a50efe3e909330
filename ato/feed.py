"""Generated traffic into the input topic: ``ato feed`` and the demo data of ``ato dev up``."""

from confluent_kafka import KafkaError, Message, Producer

from ato.catalog import Catalog
from ato.config import GeneratorSettings, KafkaSettings
from ato.exceptions import AtoError
from ato.generator import GeneratedTraffic, generate

POLL_WHEN_FULL_S = 0.05


class FeedError(AtoError):
    """Traffic could not be written to the input topic."""


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
            while True:
                try:
                    producer.produce(topic, line, partition=i % partitions, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(POLL_WHEN_FULL_S)
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
