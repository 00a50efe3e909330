"""Kafka benchmark: the journey flow catching up on a pre-loaded topic.

    python -m load_tests.bench_kafka [--clients 1000000] [--journeys 1.8] [--partitions 8]
        [--processes 1 2] [--naive-events 1000000] [--brokers HOST:PORT]

Generates (once, cached under ``.bench-cache/``) single-event JSON messages, starts a Tansu
broker (unless ``--brokers`` names one), loads the messages into a topic with ``--partitions``
partitions, then measures in one run:

* ``ceiling_events_per_s``: a plain confluent-kafka consumer that only consumes and
  ``orjson``-parses every message;
* per ``--processes`` value, ``ato run --config ... --processes P`` reading the topic from
  earliest to its end: events over the flow's own time (first poll to last output, start-up
  excluded) and over the whole command;
* ``naive_events_per_s``: the naive Bytewax design (``load_tests/naive.py``: one item per
  event, orjson per event, dict state keyed by client) on the first ``--naive-events``
  messages, read from the same broker in batches and then passed on one item per message.

The last line printed is JSON.
"""

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from bytewax.testing import run_main
from confluent_kafka import Consumer, TopicPartition

from ato.catalog import load_catalog
from ato.config import KafkaSettings
from ato.devservers import Server, create_topics, start_broker
from ato.feed import produce_waiting
from load_tests.bench_inprocess import CountSink, load_messages
from load_tests.naive import build_naive_flow
from sources.kafka import KafkaSource


def preload(brokers: str, topic: str, parts: list[list[bytes]]) -> float:
    """Write partition ``i`` of ``parts`` to partition ``i`` of ``topic``; messages/s."""
    from confluent_kafka import Producer  # noqa: PLC0415

    producer = Producer(
        {"bootstrap.servers": brokers, "linger.ms": 20, "batch.num.messages": 10_000, "acks": 1}
    )
    started = time.perf_counter()
    n = 0
    for partition, messages in enumerate(parts):
        for message in messages:
            produce_waiting(producer, topic, message, partition)
            n += 1
        producer.poll(0)
    if producer.flush(300):
        msg = f"preloading {topic}: messages left undelivered"
        raise RuntimeError(msg)
    return n / (time.perf_counter() - started)


def ceiling(brokers: str, topic: str, partitions: int, total: int) -> float:
    """Events/s of a consumer that only consumes and parses."""
    consumer = Consumer(
        {"bootstrap.servers": brokers, "group.id": "bench-ceiling", "fetch.queue.backoff.ms": 10}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    loads = orjson.loads
    started = time.perf_counter()
    n = 0
    while n < total:
        batch = consumer.consume(10_000, timeout=1.0)
        for m in batch:
            if m.error() is None:
                loads(m.value() or b"")
                n += 1
    seconds = time.perf_counter() - started
    consumer.close()
    return n / seconds


def run_flow(brokers: str, topic: str, processes: int, workdir: Path) -> dict[str, Any]:
    """``ato run --processes P`` over the whole topic; its summary and wall time."""
    out_topic = f"bench.out{processes}"
    create_topics(brokers, {out_topic: 4, "bench.dlq": 1})
    config = workdir / f"p{processes}.toml"
    config.write_text(
        f'out_dir = "{workdir / "out"}"\n'
        f'[kafka]\nbrokers = "{brokers}"\ninput_topics = ["{topic}"]\n'
        f'interventions_topic = "{out_topic}"\ndead_letter_topic = "bench.dlq"\n'
        "stop_at_end = true\n"
        "[clickhouse]\nenabled = false\n"  # the Kafka path alone; bench_inprocess prices metrics
    )
    argv = [sys.executable, "-m", "ato.cli", "run", "--config", str(config)]
    started = time.perf_counter()
    done = subprocess.run(  # noqa: S603 - our own command
        [*argv, "--processes", str(processes)], capture_output=True, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        msg = f"ato run --processes {processes} failed:\n{done.stderr.decode()[-3000:]}"
        raise RuntimeError(msg)
    summary: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    summary["wall_seconds"] = round(wall, 2)
    print(f"  {processes} process(es): {summary}", file=sys.stderr)
    return summary


def run_naive(brokers: str, topic: str) -> float:
    """Seconds the naive design takes over ``topic``."""
    settings = KafkaSettings(brokers=brokers, input_topics=(topic,), stop_at_end=True)
    sink = CountSink()
    flow = build_naive_flow(
        KafkaSource(settings, 1000), sink, load_catalog(), messages=lambda b: b.messages
    )
    started = time.perf_counter()
    run_main(flow, epoch_interval=timedelta(seconds=10))
    seconds = time.perf_counter() - started
    print(f"  naive: {seconds:.1f}s, {sink.count:,} stalls", file=sys.stderr)
    return seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print and return its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--journeys", type=float, default=1.8, help="journeys per client")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--naive-events", type=int, default=1_000_000)
    parser.add_argument("--brokers", help="an existing broker (default: start Tansu)")
    args = parser.parse_args(argv)

    parts_by_name, clients = load_messages(args.clients, args.seed, args.journeys, args.partitions)
    parts = list(parts_by_name.values())
    total = sum(len(p) for p in parts)
    print(f"{total:,} events, {clients:,} clients, {len(parts)} partitions", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        workdir = Path(tmp)
        server: Server | None = None
        brokers = args.brokers
        if brokers is None:
            server = start_broker(None, workdir)
            brokers = server.address
        try:
            stamp = int(time.time())
            topic, naive_topic = f"bench.in.{stamp}", f"bench.naive.{stamp}"
            create_topics(brokers, {topic: len(parts), naive_topic: len(parts)})
            produce_rate = preload(brokers, topic, parts)
            print(f"  preloaded at {produce_rate:,.0f} msg/s", file=sys.stderr)
            naive_parts = [p[: args.naive_events // len(parts)] for p in parts]
            naive_events = sum(len(p) for p in naive_parts)
            preload(brokers, naive_topic, naive_parts)
            del parts, parts_by_name, naive_parts
            ceiling_rate = ceiling(brokers, topic, args.partitions, total)
            print(f"  ceiling {ceiling_rate:,.0f} events/s", file=sys.stderr)
            runs = [run_flow(brokers, topic, p, workdir) for p in args.processes]
            naive_seconds = run_naive(brokers, naive_topic)
            broker_rss = _rss_mb(server.process.pid) if server and server.process else None
        finally:
            if server is not None:
                server.stop()
    best = max(zip(args.processes, runs, strict=True), key=lambda pr: pr[1]["events_per_s"])
    result = {
        "events": total,
        "events_per_s": best[1]["events_per_s"],
        "processes": best[0],
        "ceiling_events_per_s": round(ceiling_rate),
        "naive_events_per_s": round(naive_events / naive_seconds),
        "runs": [
            {
                "processes": p,
                "events": r["events"],
                "events_per_s": r["events_per_s"],
                "flow_seconds": r["seconds"],
                "wall_seconds": r["wall_seconds"],
                "interventions": r["interventions"],
            }
            for p, r in zip(args.processes, runs, strict=True)
        ],
        "naive_events": naive_events,
        "preload_msgs_per_s": round(produce_rate),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "broker_rss_mb": broker_rss,
    }
    print(orjson.dumps(result).decode())
    return result


def _rss_mb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


if __name__ == "__main__":
    main()
