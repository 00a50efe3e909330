"""Kafka benchmark: the journey flow catching up on a pre-loaded topic.

    python -m load_tests.bench_kafka [--clients 1000000] [--journeys 1.8] [--partitions 8]
        [--processes 1 2] [--naive-events 1000000] [--brokers HOST:PORT]

Generates (once, cached under ``.bench-cache/``) single-event JSON messages, starts a Tansu
broker (unless ``--brokers`` names one), loads the messages into a topic with ``--partitions``
partitions, then measures in one run:

* plain reads of the whole topic by one confluent-kafka consumer, each with its CPU per
  message in this process and in the broker, and the rate that CPU allows on two cores
  (``reads``): consuming alone, consuming and ``orjson``-parsing every message (the ceiling,
  ``ceiling_events_per_s``), and consuming and running the flow's decode step;
* per ``--processes`` value, ``ato run --config ... --processes P`` reading the topic from
  earliest to its end: events over the flow's own time (first poll to last output, start-up
  excluded) and over the whole command;
* ``naive_events_per_s``: the naive Bytewax design (``load_tests/naive.py``: one item per
  event, orjson per event, dict state keyed by client) on the first ``--naive-events``
  messages, read from the same broker in batches and then passed on one item per message.

The last line printed is JSON: ``peak_rss_mb`` is the benchmark process's peak RSS,
``children_peak_rss_mb`` the largest of its finished children (a flow run or Tansu).
"""

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from bytewax.testing import run_main
from confluent_kafka import Consumer, TopicPartition

from ato.catalog import Catalog, load_catalog
from ato.config import EngineSettings, KafkaSettings
from ato.devservers import Server, create_topics, start_broker
from ato.feed import produce_waiting
from load_tests.bench_inprocess import CountSink, load_messages
from load_tests.monitor import read_proc
from load_tests.naive import build_naive_flow
from operators.batches import RawBatch
from operators.decode import Decoder
from sources.kafka import KafkaSource


class BenchError(RuntimeError):
    """The benchmark could not be carried out."""


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
        raise BenchError(msg)
    return n / (time.perf_counter() - started)


READ_IDLE_S = 60.0  # a read fails after this long without a message

# one consumer for every partition, fetching big: the fastest reads of the probes here
READ_CONFIG = {
    "fetch.queue.backoff.ms": 10,
    "fetch.wait.max.ms": 10,
    "fetch.max.bytes": 100 * 1024 * 1024,
    "max.partition.fetch.bytes": 10 * 1024 * 1024,
    "queued.min.messages": 1_000_000,
}


@dataclass(frozen=True)
class Read:
    """One plain read of the whole topic: its rate, and the CPU it took per message."""

    events_per_s: float
    client_us: float  # this process (Python and librdkafka's threads), per message
    broker_us: float | None  # the broker's process, per message (None: not ours to measure)

    def two_core_bound(self) -> float:
        """Messages/s this work allows on two cores, were both busy with nothing else."""
        return 2e6 / (self.client_us + (self.broker_us or 0.0))

    def figures(self) -> dict[str, float | None]:
        """The JSON figures."""
        return {
            "events_per_s": round(self.events_per_s),
            "client_us_per_event": round(self.client_us, 3),
            "broker_us_per_event": None if self.broker_us is None else round(self.broker_us, 3),
            "two_core_bound_events_per_s": round(self.two_core_bound()),
        }


def read_topic(
    brokers: str,
    topic: str,
    partitions: int,
    total: int,
    handle: Callable[[list[bytes]], object],
    broker_pid: int | None,
    idle_timeout_s: float = READ_IDLE_S,
) -> Read:
    """Consume the whole topic from earliest, handing each batch's values to ``handle``;
    :class:`BenchError` when no message came for ``idle_timeout_s`` before ``total``."""
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "bench-read", **READ_CONFIG})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    broker_cpu = _cpu_s(broker_pid)
    cpu, started = time.process_time(), time.perf_counter()
    n, last = 0, time.monotonic()
    try:
        while n < total:
            values = [m.value() or b"" for m in consumer.consume(10_000, timeout=1.0)]
            if values:
                last = time.monotonic()
            elif time.monotonic() - last > idle_timeout_s:
                msg = (
                    f"reading {topic}: {n:,} of {total:,} messages, then none for"
                    f" {idle_timeout_s:g} s"
                )
                raise BenchError(msg)
            handle(values)
            n += len(values)
    finally:
        consumer.close()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    broker = None if broker_cpu is None else (_cpu_s(broker_pid) or 0.0) - broker_cpu
    return Read(n / seconds, cpu / n * 1e6, None if broker is None else broker / n * 1e6)


def orjson_all(values: list[bytes]) -> None:
    """The ceiling's work: parse every message."""
    loads = orjson.loads
    for value in values:
        loads(value)


def decode_all(catalog: Catalog) -> Callable[[list[bytes]], object]:
    """The flow's decode step on the caller's thread (``decode_threads = 1``)."""
    decoder = Decoder(catalog, EngineSettings(decode_threads=1))
    return lambda values: decoder.decode(RawBatch("bench", values))


def _cpu_s(pid: int | None) -> float | None:
    """CPU seconds (user + system) process ``pid`` has used, None if unknown."""
    proc = read_proc(pid) if pid is not None else None
    return proc[2] if proc is not None else None


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
        raise BenchError(msg)
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
            broker_pid = server.process.pid if server and server.process else None
            reads = {
                name: read_topic(brokers, topic, args.partitions, total, handle, broker_pid)
                for name, handle in (
                    ("consume_only", lambda values: None),
                    ("consume_orjson", orjson_all),
                    ("consume_decode", decode_all(load_catalog())),
                )
            }
            for name, read in reads.items():
                print(f"  {name}: {read.figures()}", file=sys.stderr)
            ceiling_rate = reads["consume_orjson"].events_per_s
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
        "reads": {name: read.figures() for name, read in reads.items()},
        "naive_events": naive_events,
        "preload_msgs_per_s": round(produce_rate),
        **peak_rss(),
        "broker_rss_mb": broker_rss,
    }
    print(orjson.dumps(result).decode())
    return result


def peak_rss() -> dict[str, int]:
    """Peak RSS (MB) of this process, and of the largest of its finished children."""
    return {
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "children_peak_rss_mb": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        ),
    }


def _rss_mb(pid: int) -> int | None:
    proc = read_proc(pid)
    return int(proc[0]) if proc is not None else None


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        print(f"bench_kafka: error: {exc}", file=sys.stderr)
        sys.exit(2)
