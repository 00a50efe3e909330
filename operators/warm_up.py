"""Compile the numba kernels before a flow starts.

A kernel compiles on its first call; without numba's on-disk cache (a fresh clone, a new
machine) that takes seconds. Inside a running flow the pause would block the worker and
delay every output behind it, so :func:`warm_up` pushes two synthetic events through a
throwaway decoder, router and shard, which compiles everything the hot path calls.
"""

import numpy as np
import orjson

from ato.catalog import Catalog
from ato.config import EngineSettings
from operators.batches import RawBatch
from operators.decode import Decoder
from operators.funnel import MEASURES, event_rows_kernel, sum_by_key
from operators.live_changes import unique_pairs
from operators.route import Router
from operators.shard_step import ShardContext, ShardLogic
from sinks.insert_order import parse_uuids, radix_argsort

WARM_UP_TS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
LATER_MS = 100 * 86_400_000  # past every deadline and client idle TTL of a sane catalog


def warm_up(catalog: Catalog, settings: EngineSettings) -> int:
    """Decode, route, apply and expire one stalling journey; return interventions built (1).

    Uses the first journey (its first step always has a timeout): one client enters it, by
    the step's first event type or, when no type maps to it, by naming the step; a second
    client's event much later moves the final watermark past its deadline and idle TTL.
    """
    journey = catalog.journeys[0]
    step = journey.steps[0]
    later = WARM_UP_TS + max(LATER_MS, step.timeout_ms + catalog.client_idle_ttl_ms + 1)
    enter = {"type": step.on[0]} if step.on else {"type": "warm_up", "step": step.name}
    events = [
        {"client_id": "warm-up-a", "ts": WARM_UP_TS, "journey": journey.name, **enter},
        {"client_id": "warm-up-b", "ts": later, "type": "warm_up"},
    ]
    messages = [
        orjson.dumps({"event_id": f"warm-up-{i}", "channel": "app", **doc})
        for i, doc in enumerate(events)
    ]
    decoder = Decoder(catalog, settings, now_ms=lambda: later)
    ctx = ShardContext(catalog, settings, ["warm-up"], now_ms=lambda: later)
    shard: ShardLogic | None = None
    built = 0
    for _, item in Router(1, settings.lanes)(decoder(RawBatch("warm-up", messages))):
        shard = shard or ShardLogic(ctx, None)
        outputs, _ = shard.on_batch([item])
        built += sum(len(out.interventions) for out in outputs)
    if shard is not None:
        outputs, _ = shard.on_eof()
        built += sum(len(out.interventions) for out in outputs)
    # the kernels of metrics and live-state writes, with the types they get there: funnel
    # rows of events (int8 counts), their sums (of events' rows, and of sums), insert order
    # (intervention ids parsed as numbers)
    ints = np.zeros(1, np.int64)
    event_rows_kernel(ints, ints, ints, ints, ints, ints)
    sum_by_key(ints, np.zeros((1, len(MEASURES)), np.int8))
    sum_by_key(ints, np.zeros((1, len(MEASURES)), np.int64))
    radix_argsort(np.zeros(1, np.uint64), 1)
    uuid_text = np.frombuffer(bytearray(b"0" * 8 + b"-0000" * 3 + b"-" + b"0" * 12), np.uint8)
    parse_uuids(uuid_text.reshape(1, 36), np.zeros(1, np.uint64), np.zeros(1, np.uint64))
    unique_pairs(np.zeros(1, np.uint64), ints)
    return built
