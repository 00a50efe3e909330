"""In-process benchmark of the journey flow (no Kafka).

    python -m load_tests.bench_inprocess [--clients 1000000] [--repeat 3] [--naive-events N]
                                         [--span-s S] [--no-policy] [--batch-size 400000]
                                         [--lanes 2]

Generates (once, cached under ``.bench-cache/``) single-event JSON messages from the built-in
generator, then in one run measures, each ``--repeat`` times (medians reported), with the
settings of a catch-up replay (``--batch-size`` 400,000 and ``--lanes`` 2; ``ato run``'s
defaults are 50,000 and 1, see the README's Benchmark section):

* ``events_per_s``: the whole journey flow from raw bytes (decode, route, shards, outputs),
* ``metrics_events_per_s``: the same with live metrics written to an embedded ClickHouse
  (chDB in a temporary directory, a fresh database each round, migrated before the flow
  starts as ``ato run`` does, and dropped after it), and ``metrics_cost``, the share of
  throughput they cost,
* ``policy_events_per_s``: the same with the contact policy and live journey state in a
  redis-server the benchmark starts (every client's generated profile loaded first; sent
  sets and live state cleared each round), and ``policy_cost``, the share of throughput
  they cost (``--no-policy`` skips it),
* ``state_events_per_s``: the stages after decode alone (route, shard step) on pre-decoded
  batches,
* ``decode_events_per_s``: the decode step alone, and ``orjson_events_per_s``: bare
  ``orjson.loads`` of every message (the decoder's ceiling),
* ``naive_events_per_s``: the naive Bytewax design (``load_tests/naive.py``) on the same
  messages (all of them by default; ``--naive-events N``: the first N, a sample that favours
  it, since its per-client state is smallest early in the traffic).

The last line printed is JSON.
"""

import argparse
import gc
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import orjson
import redis
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, run_main

from ato.catalog import SEGMENTS, Catalog, load_catalog
from ato.columns import client_id_texts
from ato.config import GeneratorSettings, Settings
from ato.devservers import start_redis
from ato.generator import TRAFFIC_VERSION, generate
from ato.process import tune_gc
from ato.runner import metrics_sink
from flows.journeys import FlowSinks, build_flow
from load_tests.naive import build_naive_flow
from operators.batches import DecodedBatch, RawBatch
from operators.decode import Decoder
from operators.route import Router
from operators.shard_step import ShardContext, ShardLogic
from policy.generated import generated_profile
from policy.profiles import ProfileStore
from sinks.clickhouse import ClickHouseStore
from sinks.progress import ProgressSink, RunStats

CACHE = Path(".bench-cache")


class CountSink(DynamicSink[Any]):
    """Counts the documents it receives; keeps nothing."""

    def __init__(self) -> None:
        self.count = 0

    def build(self, step_id: str, worker_index: int, worker_count: int) -> "_CountPart":
        """One counter per worker."""
        return _CountPart(self)


class _CountPart(StatelessSinkPartition[Any]):
    def __init__(self, sink: CountSink) -> None:
        self.sink = sink

    def write_batch(self, items: list[Any]) -> None:
        for item in items:
            self.sink.count += _count(item)


def _count(item: Any) -> int:
    """Documents in an item: a count, a ``(key, block of JSON lines)``, or one document."""
    if isinstance(item, int):
        return item
    if isinstance(item, tuple) and isinstance(item[1], bytes):
        return item[1].count(b"\n")
    return 1


DEFAULT_SPAN_S = GeneratorSettings().span_s
# A catch-up replay's settings: one shard call per 25,000 events of a shard instead of 3,000
# (a call costs about 0.2 ms besides its events), the lanes of a shard side by side. State-only
# rounds at 1 M clients (/tmp probe, medians of 5): 50,000 and 1 lane 3.09 s, 400,000 and 1
# lane 1.64-1.74 s, 400,000 and 2 lanes 1.48-1.49 s.
CATCH_UP_BATCH_SIZE = 400_000
CATCH_UP_LANES = 2


def load_messages(
    clients: int,
    seed: int,
    journeys_per_client: float = 1.2,
    partitions: int = 4,
    span_s: int = DEFAULT_SPAN_S,
) -> tuple[dict[str, list[bytes]], int]:
    """Generated messages per partition, cached on disk; also the number of clients."""
    shape = (
        ""
        if (journeys_per_client, partitions) == (1.2, 4)
        else f"-{journeys_per_client}-{partitions}"
    )
    if span_s != DEFAULT_SPAN_S:
        shape += f"-span{span_s}"
    path = CACHE / f"events-v{TRAFFIC_VERSION}-{clients}-{seed}{shape}.jsonl"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        print(f"generating traffic for {clients:,} clients (cached in {path}) ...", file=sys.stderr)
        cfg = GeneratorSettings(
            clients=clients,
            seed=seed,
            journeys_per_client=journeys_per_client,
            partitions=partitions,
            span_s=span_s,
        )
        traffic = generate(load_catalog(), cfg)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            for name, lines in traffic.partitions.items():
                f.write(name.encode() + b"\t" + str(len(lines)).encode() + b"\n")
                f.write(b"\n".join(lines) + b"\n")
        tmp.rename(path)
        print(f"  generated in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    parts: dict[str, list[bytes]] = {}
    with path.open("rb") as f:
        while header := f.readline():
            name, count = header.decode().rstrip("\n").split("\t")
            parts[name] = [f.readline().rstrip(b"\n") for _ in range(int(count))]
    return parts, clients


def raw_batches(parts: dict[str, list[bytes]], size: int) -> list[RawBatch]:
    """Round-robin batches over the partitions, as a source would deliver them."""
    out = []
    longest = max(len(v) for v in parts.values())
    for start in range(0, longest, size):
        for name, lines in parts.items():
            if start < len(lines):
                out.append(RawBatch(name, lines[start : start + size], start))
    return out


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn`` takes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _loads_per_batch(batches: list[RawBatch]) -> None:
    loads = orjson.loads
    for batch in batches:
        [loads(m) for m in batch.messages]


def run_full(
    batches: list[RawBatch],
    partitions: list[str],
    settings: Settings,
    catalog: Catalog,
    metrics_url: str | None = None,
) -> float:
    """Whole flow from raw bytes; with ``metrics_url``, writing metrics to ClickHouse too;
    with ``settings.redis.url``, deciding with the contact policy and writing live state."""
    sink = CountSink()
    metrics = None
    if metrics_url is not None:  # no recovery, as for the shards: epoch ends need not wait
        # as ato run does: the migrations are applied before the flow starts (not timed)
        with_url = replace(settings, clickhouse=replace(settings.clickhouse, url=metrics_url))
        metrics = metrics_sink(with_url, recovery=False)
    sinks = FlowSinks(
        sink, CountSink(), CountSink(), ProgressSink(RunStats(), None), metrics=metrics
    )
    flow = build_flow(
        TestingSource(batches), sinks, settings, catalog, partitions=partitions, snapshots=False
    )
    seconds = timed(lambda: run_main(flow, epoch_interval=timedelta(seconds=10)))
    what = "full flow" if metrics is None else "full flow + ClickHouse"
    if settings.redis.enabled:
        what = "full flow + Redis policy and live state"
    print(f"  {what}: {seconds:.2f}s, {sink.count:,} interventions", file=sys.stderr)
    return seconds


def run_state_only(
    decoded: list[DecodedBatch], partitions: list[str], settings: Settings, catalog: Catalog
) -> float:
    """Route and shard step on pre-decoded batches (no snapshots, as in :func:`run_full`)."""
    ctx = ShardContext(catalog, settings.engine, partitions, snapshots=False)
    flow = Dataflow("state_only")
    batches = op.input("input", flow, TestingSource(decoded))
    keyed = op.flat_map("route", batches, Router(settings.engine.shards, settings.engine.lanes))
    out = op.stateful_batch("shards", keyed, lambda resume: ShardLogic(ctx, resume))
    sink = CountSink()
    op.output("out", op.map("interventions", out, lambda kv: len(kv[1].interventions)), sink)
    return timed(lambda: run_main(flow, epoch_interval=timedelta(seconds=10)))


def client_segments(decoded: list[DecodedBatch]) -> dict[str, str]:
    """Each client's segment as its events carry it (the generator puts it on every one)."""
    found: dict[str, str] = {}
    for batch in decoded:
        events = batch.events
        known = events.segment >= 0
        for client, code in zip(
            client_id_texts(events.client_id[known]), events.segment[known].tolist(), strict=True
        ):
            found[client] = SEGMENTS[code]
    return found


def load_profiles(url: str, segments: dict[str, str]) -> int:
    """Write every client's generated profile."""
    with redis.Redis.from_url(url) as client:
        store = ProfileStore(client, chunk=5_000)
        return store.load(generated_profile(c, seg) for c, seg in segments.items())


def drop_database(url: str, database: str) -> None:
    """Drop a round's metrics database: chDB would otherwise go on merging its parts (and
    refreshing its hour tables) in this process during the next rounds, which measured
    1.5-3 s of extra chDB CPU by round 3 (``/tmp`` probe)."""
    with ClickHouseStore(url, database) as store:
        store.client.command(f"DROP DATABASE IF EXISTS {database} SYNC")


def clear_policy_state(url: str) -> None:
    """Remove sent sets and live journey state (profiles stay) between rounds."""
    with redis.Redis.from_url(url) as client:
        for pattern in ("ato:sent:*", "ato:journey:*"):
            keys: list[bytes] = []
            for key in client.scan_iter(match=pattern, count=10_000):
                keys.append(key)
                if len(keys) >= 10_000:
                    client.unlink(*keys)
                    keys = []
            if keys:
                client.unlink(*keys)


def run_naive(messages: list[bytes], catalog: Catalog) -> float:
    """The naive design on ``messages``."""
    sink = CountSink()
    flow = build_naive_flow(TestingSource(messages, batch_size=1000), sink, catalog)
    return timed(lambda: run_main(flow, epoch_interval=timedelta(seconds=10)))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print and return its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=CATCH_UP_BATCH_SIZE,
        help=f"engine.batch_size (default: {CATCH_UP_BATCH_SIZE}, a catch-up replay's)",
    )
    parser.add_argument(
        "--lanes",
        type=int,
        default=CATCH_UP_LANES,
        help=f"engine.lanes (default: {CATCH_UP_LANES}, a catch-up replay's)",
    )
    parser.add_argument(
        "--naive-events",
        type=int,
        default=None,
        help="run the naive design on the first N messages only (default: all of them)",
    )
    parser.add_argument(
        "--span-s",
        type=int,
        default=DEFAULT_SPAN_S,
        help="event-time span of the traffic: funnel rows per event grow as it gets sparser",
    )
    parser.add_argument(
        "--no-policy",
        action="store_true",
        help="skip the run with the Redis contact policy and live state",
    )
    args = parser.parse_args(argv)

    catalog = load_catalog()
    settings = Settings().with_overrides("engine", batch_size=args.batch_size, lanes=args.lanes)
    parts, clients = load_messages(args.clients, args.seed, span_s=args.span_s)
    partitions = list(parts)
    batches = raw_batches(parts, args.batch_size)
    messages = [m for b in batches for m in b.messages]
    n = len(messages)
    print(f"{n:,} events, {clients:,} clients, {len(batches)} batches", file=sys.stderr)
    decoder = Decoder(catalog, settings.engine)
    decoded = [decoder(b) for b in batches]  # also warms the JIT caches
    gc.collect()
    gc.freeze()  # the input data is long-lived: keep it out of every collection
    tune_gc()  # as ato run does
    run_state_only(decoded[: len(partitions) * 2], partitions, settings, catalog)

    figures: dict[str, list[float]] = {
        "full": [], "metrics": [], "policy": [], "state": [], "decode": [], "orjson": [],
    }  # fmt: skip
    chdb_dir = tempfile.mkdtemp(prefix="ato-bench-chdb-")
    redis_server = None
    with_redis = settings
    if not args.no_policy:
        redis_server = start_redis(None, Path(tempfile.mkdtemp(prefix="ato-bench-redis-")))
        redis_url = f"redis://{redis_server.address}/0"
        t0 = time.perf_counter()
        count = load_profiles(redis_url, client_segments(decoded))
        print(f"  {count:,} profiles loaded in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        with_redis = settings.with_overrides("redis", url=redis_url)
    for i in range(args.repeat):
        print(f"round {i + 1}/{args.repeat}", file=sys.stderr)
        figures["orjson"].append(timed(lambda: _loads_per_batch(batches)))
        figures["decode"].append(timed(lambda: [decoder(b) for b in batches]))
        figures["state"].append(run_state_only(decoded, partitions, settings, catalog))
        figures["full"].append(run_full(batches, partitions, settings, catalog))
        with_db = replace(settings, clickhouse=replace(settings.clickhouse, database=f"bench_{i}"))
        figures["metrics"].append(
            run_full(batches, partitions, with_db, catalog, metrics_url=f"chdb://{chdb_dir}")
        )
        drop_database(f"chdb://{chdb_dir}", with_db.clickhouse.database)
        if redis_server is not None:
            figures["policy"].append(run_full(batches, partitions, with_redis, catalog))
            clear_policy_state(with_redis.redis.url)
    shutil.rmtree(chdb_dir, ignore_errors=True)
    if redis_server is not None:
        redis_server.stop()
    naive_messages = messages if args.naive_events is None else messages[: args.naive_events]
    naive = [run_naive(naive_messages, catalog) for _ in range(max(1, args.repeat // 2))]

    def rate(seconds: list[float], count: int = n) -> float:
        return round(count / statistics.median(seconds))

    result = {
        "events": n,
        "clients": clients,
        "events_per_s": rate(figures["full"]),
        "naive_events_per_s": rate(naive, len(naive_messages)),
        "ratio": round(rate(figures["full"]) / rate(naive, len(naive_messages)), 2),
        "metrics_events_per_s": rate(figures["metrics"]),
        "metrics_cost": round(1 - rate(figures["metrics"]) / rate(figures["full"]), 3),
        "policy_events_per_s": rate(figures["policy"]) if figures["policy"] else None,
        "policy_cost": (
            round(1 - rate(figures["policy"]) / rate(figures["full"]), 3)
            if figures["policy"]
            else None
        ),
        "state_events_per_s": rate(figures["state"]),
        "decode_events_per_s": rate(figures["decode"]),
        "orjson_events_per_s": rate(figures["orjson"]),
        "workers": 1,
        "batch_size": args.batch_size,
        "lanes": args.lanes,
        "repeats": args.repeat,
        "naive_events": len(naive_messages),
        "span_s": args.span_s,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(orjson.dumps(result).decode())
    return result


if __name__ == "__main__":
    main()
