"""Memory of the shard stores holding many open journey instances.

    python -m load_tests.bench_state_memory [--instances 10000000] [--shards 16] [--batch 100000]

Opens ``--instances`` journey instances, one per client: each client's one event is the first
step of the journey with the longest first-step timeout, so none expires during the run. Events
are built as columns (ids like the generator's), routed by client hash to ``--shards`` stores
and applied batch by batch as the shard step does (event-time order, then an expiry pass).
Prints one JSON line: state bytes as ``sizes()`` reports them, bytes per array, process RSS
before and after, peak RSS, bytes per instance and seconds.
"""

import argparse
import gc
import resource
import sys
import time
from typing import Any

import numpy as np
import orjson

from ato.catalog import Catalog, load_catalog
from ato.columns import EventColumns
from state.hashing import hash_client_ids, shard_of
from state.shard_store import NumbaShardStore, order_events

T0 = 1_700_000_000_000
ID_PREFIX = "C07"
ID_DIGITS = 9


def rss_bytes() -> int:
    """Resident set size of this process now (VmRSS)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes() -> int:
    """Largest resident set size of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def client_ids(start: int, stop: int) -> np.ndarray:
    """Ids ``C07000000042``-style of clients ``start`` to ``stop`` as a numpy ``U`` array."""
    numbers = np.arange(start, stop, dtype=np.int64)
    width = len(ID_PREFIX) + ID_DIGITS
    points = np.empty((len(numbers), width), np.uint32)
    points[:, : len(ID_PREFIX)] = [ord(c) for c in ID_PREFIX]
    for k in range(ID_DIGITS):
        points[:, width - 1 - k] = ord("0") + (numbers // 10**k) % 10
    return points.view(f"U{width}").reshape(len(numbers))


def longest_first_step(catalog: Catalog) -> tuple[int, int]:
    """(journey code, type code) of the first step with the longest timeout."""
    journey = max(catalog.journeys, key=lambda j: j.steps[0].timeout_ms)
    return journey.index, catalog.type_codes[journey.steps[0].on[0]]


def opening_events(catalog: Catalog, start: int, stop: int) -> EventColumns:
    """One first-step event for each client ``start`` to ``stop``, 1 ms apart per 1000."""
    journey, type_code = longest_first_step(catalog)
    ids = client_ids(start, stop)
    n = len(ids)
    t = catalog.tables
    return EventColumns(
        hash_client_ids(ids),
        ids,
        T0 + np.arange(start, stop, dtype=np.int64) // 1000,
        np.zeros(n, np.int8),
        np.full(n, type_code, np.int32),
        np.full(n, t.type_journey[type_code], np.int16),
        np.full(n, t.type_step[type_code], np.int16),
        np.full(n, t.type_flags[type_code], np.int8),
        None,
        np.arange(start, stop, dtype=np.int64),
        np.full(n, journey % 4, np.int8),
    )


def array_bytes(stores: list[NumbaShardStore]) -> dict[str, int]:
    """Bytes of each numpy array attribute summed over the stores (Python objects an object
    array points to included)."""
    out: dict[str, int] = {}
    for store in stores:
        for name, value in vars(store).items():
            if isinstance(value, np.ndarray) and not name.startswith("_"):
                out[name] = out.get(name, 0) + value.nbytes + _object_bytes(value)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _object_bytes(array: np.ndarray) -> int:
    if array.dtype != object:
        return 0
    return sum(sys.getsizeof(v) for v in array.tolist() if v is not None)


def run(catalog: Catalog, instances: int, shards: int, batch: int) -> dict[str, Any]:
    """Open ``instances`` instances over ``shards`` stores; return the figures."""
    gc.collect()
    rss_before = rss_bytes()
    stores = [NumbaShardStore(catalog) for _ in range(shards)]
    t0 = time.perf_counter()
    for start in range(0, instances, batch):
        events = opening_events(catalog, start, min(start + batch, instances))
        shard = shard_of(events.client_key, shards)
        for s, store in enumerate(stores):
            part = events.take(shard == s)
            store.apply(part.take(order_events(part)))
            store.expire(int(part.ts.max()) if len(part) else T0)
    seconds = time.perf_counter() - t0
    del events, part
    gc.collect()
    rss_after = rss_bytes()
    sizes = [store.sizes() for store in stores]
    state = sum(s["bytes"] for s in sizes)
    opened = sum(s["instances"] for s in sizes)
    return {
        "instances": opened,
        "clients": sum(s["clients"] for s in sizes),
        "shards": shards,
        "state_bytes": state,
        "state_bytes_per_instance": round(state / max(opened, 1), 1),
        "rss_before": rss_before,
        "rss_after": rss_after,
        "rss_bytes_per_instance": round((rss_after - rss_before) / max(opened, 1), 1),
        "peak_rss": peak_rss_bytes(),
        "seconds": round(seconds, 2),
        "instances_per_s": round(opened / seconds),
        "arrays": array_bytes(stores),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print and return its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--instances", type=int, default=10_000_000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--batch", type=int, default=100_000, help="events per applied batch")
    args = parser.parse_args(argv)
    catalog = load_catalog()
    warm = NumbaShardStore(catalog)  # compiles (or loads) the kernels before measuring
    warm.apply(opening_events(catalog, 0, 2))
    del warm
    result = run(catalog, args.instances, args.shards, args.batch)
    print(orjson.dumps(result).decode())
    return result


if __name__ == "__main__":
    main()
