"""Producer processes of ``ato loadtest``: generate a share of the traffic, then send it paced.

Each process generates its own clients (seed per process), reports ready, waits for the
release instant, sends the population and backfill at full speed, then paces the live part
so that an event leaves when the wall clock reaches its (shifted) event time. Progress goes to
shared counters; at the end the process writes its truth and send-time samples to
``producer-N.json`` in the run directory.
"""

import gc
import multiprocessing as mp
import signal
import time
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized, SynchronizedArray
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import KafkaError, Producer

from ato.catalog import load_catalog
from ato.feed import produce_waiting
from ato.generator import generate
from load_tests.monitor import QUIET
from load_tests.scenario import Scenario
from load_tests.traffic import (
    generator_settings,
    live_zero_ms,
    population_clients,
    population_event,
    schedule,
    shape,
    shifted,
    truth,
)

CHUNK = 2_000  # most messages sent between two clock checks
LINGER_MS = 20  # fewer, larger produce requests: less CPU for producer and broker
MIN_SLEEP_S = 0.002  # pacing granularity: events leave at most this much after their time
SAMPLE_EVERY_S = 0.02  # how often the send-time curve is sampled
FULL_QUEUE_WAIT_S = 0.01  # poll this long when the local queue is full (pacing stays fine)
HEAD = 3  # shared counters per producer: sent, max event time sent (ms), state; then sent
# per topic partition
READY, SENDING, DONE, FAILED = 1.0, 2.0, 3.0, -1.0


@dataclass(frozen=True)
class ProducerJob:
    """What one producer process does."""

    index: int
    producers: int
    scenario: Scenario
    clients: int
    brokers: str
    topic: str
    run_dir: Path


@dataclass
class ProducerHandles:
    """The parent's view of the producer processes."""

    processes: list[Any]
    counters: SynchronizedArray
    release_ms: Synchronized
    width: int  # counters per producer

    def states(self) -> list[float]:
        """Each producer's state (READY, SENDING, DONE, FAILED; 0 while generating)."""
        return [self.counters[i * self.width + 2] for i in range(len(self.processes))]

    def sent(self) -> int:
        """Messages sent by all producers so far."""
        return int(sum(self.counters[i * self.width] for i in range(len(self.processes))))

    def sent_by_partition(self) -> list[int]:
        """Messages sent to each topic partition so far."""
        rows = [
            self.counters[i * self.width + HEAD : (i + 1) * self.width]
            for i in range(len(self.processes))
        ]
        return [int(sum(column)) for column in zip(*rows, strict=True)]

    def release(self, at_ms: int) -> None:
        """Let the producers start sending; live time 0 is ``at_ms`` + the scenario's lead."""
        self.release_ms.value = at_ms


def start_producers(jobs: list[ProducerJob]) -> ProducerHandles:
    """Spawn one process per job (spawn: no librdkafka state crosses a fork)."""
    ctx = mp.get_context("spawn")
    width = HEAD + jobs[0].scenario.partitions
    counters = ctx.Array("d", width * len(jobs), lock=False)
    release_ms = ctx.Value("d", 0.0, lock=False)
    processes = []
    for job in jobs:
        process = ctx.Process(
            target=producer_main, args=(job, counters, release_ms), name=f"producer-{job.index}"
        )
        process.start()
        processes.append(process)
    return ProducerHandles(processes, counters, release_ms, width)


def producer_main(job: ProducerJob, counters: Any, release_ms: Any) -> None:
    """Body of one producer process. Ctrl-C reaches it with the harness (one process group):
    it leaves the stopping to the harness, which kills it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    base = job.index * (HEAD + job.scenario.partitions)
    try:
        _produce(job, counters, base, release_ms)
        counters[base + 2] = DONE
    except BaseException as exc:
        counters[base + 2] = FAILED
        (job.run_dir / f"producer-{job.index}.error").write_text(f"{type(exc).__name__}: {exc}")
        raise


def _produce(job: ProducerJob, counters: Any, base: int, release_ms: Any) -> None:
    scenario = job.scenario
    catalog = load_catalog(scenario.catalog_path())
    seed = scenario.seed * 100 + job.index
    traffic = generate(
        catalog, generator_settings(scenario, job.clients, seed), shape=shape(scenario)
    )
    plan = schedule(traffic, scenario)
    gc.freeze()  # millions of long-lived objects: keep collections from rescanning them
    counters[base + 2] = READY
    while release_ms.value == 0:
        time.sleep(0.01)
    released = int(release_ms.value)
    live_zero_wall = released + int(scenario.lead_s * 1000)
    shift = live_zero_wall - live_zero_ms(scenario)
    producer = Producer(
        {
            "bootstrap.servers": job.brokers,
            "linger.ms": LINGER_MS,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "acks": 1,
            "error_cb": _raise_fatal,
            "logger": QUIET,  # broker failures are the harness's to report, in one line
        }
    )
    counters[base + 2] = SENDING
    samples: list[tuple[int, int]] = []
    if scenario.population:
        clients = population_clients(scenario, job.index, job.producers)
        _blast(producer, job.topic, clients, scenario.partitions, counters, base)
    sent = _pace(producer, job.topic, plan, shift, counters, base, samples)
    left = producer.flush(60)
    if left:
        msg = f"producer {job.index}: {left} messages undelivered after 60 s"
        raise RuntimeError(msg)
    out = {
        "index": job.index,
        "sent": sent,
        "population": scenario.population,
        "truth": truth(traffic, scenario, shift),
        "samples": samples,  # (wall ms, highest event time sent so far)
        "live_zero_wall_ms": live_zero_wall,
    }
    (job.run_dir / f"producer-{job.index}.json").write_bytes(orjson.dumps(out))


def _raise_fatal(error: KafkaError) -> None:
    if error.fatal():
        raise RuntimeError(str(error))


def _count(counters: Any, base: int, parts: np.ndarray) -> None:
    """Add a sent chunk to the shared counters (total and per partition)."""
    counters[base] += len(parts)
    for partition, n in enumerate(np.bincount(parts).tolist()):
        counters[base + HEAD + partition] += n


def _blast(
    producer: Producer, topic: str, clients: np.ndarray, partitions: int, counters: Any, base: int
) -> None:
    """Send the population at full speed, each event stamped with the wall time it leaves
    (live mode: older times would be behind the watermark, i.e. late)."""
    for i in range(0, len(clients), CHUNK):
        chunk = clients[i : i + CHUNK]
        now_ms = int(time.time() * 1000)
        parts = (chunk % partitions).astype(np.int32)
        for client, partition in zip(chunk.tolist(), parts.tolist(), strict=True):
            produce_waiting(
                producer,
                topic,
                population_event(client, now_ms),
                partition,
                wait_s=FULL_QUEUE_WAIT_S,
            )
        producer.poll(0)
        _count(counters, base, parts)


def _pace(
    producer: Producer,
    topic: str,
    plan: Any,
    shift: int,
    counters: Any,
    base: int,
    samples: list[tuple[int, int]],
) -> int:
    """Send ``plan`` in order, each message once the shifted clock reaches its send time."""
    values, parts, send_at, stamps = plan.values, plan.partitions, plan.send_at, plan.ts
    n, i, next_sample = len(values), 0, 0.0
    while i < n:
        now_ms = time.time() * 1000 - shift  # the generated event time it is now
        j = min(int(np.searchsorted(send_at, now_ms, side="right")), i + CHUNK)
        if j == i:
            producer.poll(0)
            time.sleep(min(0.01, max(MIN_SLEEP_S, (send_at[i] - now_ms) / 1000)))
            continue
        chunk = zip(values[i:j], stamps[i:j].tolist(), parts[i:j].tolist(), strict=True)
        for value, ts, partition in chunk:
            produce_waiting(
                producer, topic, shifted(value, ts, shift), partition, wait_s=FULL_QUEUE_WAIT_S
            )
        producer.poll(0)
        _count(counters, base, parts[i:j])
        high = int(send_at[j - 1]) + shift
        counters[base + 1] = high
        wall = time.time()
        if wall >= next_sample:
            samples.append((int(wall * 1000), high))
            next_sample = wall + SAMPLE_EVERY_S
        i = j
    samples.append((int(time.time() * 1000), int(send_at[-1]) + shift if n else 0))
    return n
