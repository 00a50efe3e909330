"""Live-state values rendered by the numba template equal the plain encoding, and marks."""

import threading
import time

import numpy as np
import orjson
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from ato.catalog import CHANNELS, load_catalog
from ato.columns import EventColumns, client_id_texts
from ato.config import EngineSettings, GeneratorSettings
from ato.generator import generate
from operators.batches import RawBatch
from operators.decode import Decoder
from operators.interventions import InterventionBuilder
from operators.live_changes import (
    MAX_IN_FLIGHT,
    LiveStateTracker,
    unique_pairs,
    unique_pairs_twin,
)
from policy.exceptions import LiveStateError
from policy.live_state import LiveStateWriter, encode_value, lookup
from state.shard_store import NumbaShardStore, order_events

CATALOG = load_catalog()
NAMES = InterventionBuilder(CATALOG)


@pytest.fixture(scope="module")
def store_and_events() -> tuple[NumbaShardStore, EventColumns]:
    traffic = generate(CATALOG, GeneratorSettings(clients=300, seed=4, partitions=1))
    (lines,) = traffic.partitions.values()
    events = Decoder(CATALOG, EngineSettings())(RawBatch("p", lines[: len(lines) // 2])).events
    store = NumbaShardStore(CATALOG)
    store.apply(events.take(order_events(events)))
    return store, events


def expected(store: NumbaShardStore, keys: np.ndarray, journeys: np.ndarray, now: int) -> list:
    """``encode_value`` of each pair's open instance, None where none is open."""
    slots = store.find_instances(keys, journeys)
    out: list[str | None] = []
    for slot, j in zip(slots.tolist(), journeys.tolist(), strict=True):
        if slot < 0:
            out.append(None)
            continue
        f = {k: v[0] for k, v in store.instance_fields(np.array([slot])).items()}
        columns = {
            "step": [NAMES.step_names[j, f["step"]]],
            "since_ms": [int(f["since_ms"])],
            "last_event_type": [NAMES.type_names[f["last_type"]]],
            "last_channel": [CHANNELS[f["last_channel"]]],
            "last_event_ms": [int(f["last_ms"])],
            "stalled": [bool(f["stalled"])],
            "attempt": [int(f["attempt"])],
        }
        out.append(encode_value(columns, 0, now).decode())
    return out


def test_rendered_values_equal_the_plain_encoding(
    store_and_events: tuple[NumbaShardStore, EventColumns], r: redis.Redis
) -> None:
    store, events = store_and_events
    tracker = LiveStateTracker(NAMES, LiveStateWriter(r, 60), interval_ms=0)
    keys = np.repeat(np.unique(events.client_key), len(CATALOG.journeys))
    journeys = np.tile(np.arange(len(CATALOG.journeys)), len(keys) // len(CATALOG.journeys))
    got = tracker.values(store, keys, journeys, now_ms=1_767_600_000_123)
    want = expected(store, keys, journeys, 1_767_600_000_123)
    assert got == want
    assert sum(v is not None for v in got) > 100  # open instances among them
    assert all(orjson.loads(v)["updated_ms"] == 1_767_600_000_123 for v in got if v)


def test_marks_are_written_once_each_and_kept_while_redis_fails(
    store_and_events: tuple[NumbaShardStore, EventColumns], r: redis.Redis
) -> None:
    store, events = store_and_events
    broken = redis.Redis(port=1, socket_connect_timeout=0.2)  # nothing listens there
    tracker = LiveStateTracker(NAMES, LiveStateWriter(broken, 60, outage_wait_s=0.5), 0)
    effects_journey = np.zeros(len(events), np.int64)  # everyone in journey 0
    tracker.mark(events.client_key, effects_journey, events.client_id)
    tracker.mark(events.client_key, np.full(len(events), -1), events.client_id)  # ignored
    distinct = len(np.unique(events.client_key))
    assert tracker.maybe_write(store, 1) == distinct  # handed over ...
    tracker._collect(wait=True)  # ... and failed
    assert tracker.stats["failures"] == 1 and tracker.new_outages() == 1
    assert tracker.pending() == distinct  # kept, deduplicated
    started = time.monotonic()
    with pytest.raises(LiveStateError, match=rf"waited \d+ s .*{distinct} instance changes not"):
        tracker.maybe_write(store, 2, force=True)  # end of input: retried, then loud
    assert 0.5 <= time.monotonic() - started < 15  # the last attempt may take a while
    assert tracker.pending() == distinct and tracker.new_outages() == 0  # the same outage
    tracker.writer = LiveStateWriter(r, 60)
    assert tracker.maybe_write(store, 2, force=True) == distinct
    assert tracker.pending() == 0 and tracker.stats["writes"] == 1
    assert not [t for t in threading.enumerate() if t.name.startswith("ato-live-state")]
    journey = CATALOG.journeys[0].name
    opened = [c for c in set(client_id_texts(events.client_id)) if journey in lookup(r, c)]
    slots = store.find_instances(np.unique(events.client_key), np.zeros(distinct, np.int64))
    assert len(opened) == int((slots >= 0).sum())


def hanging_writer(r: redis.Redis) -> tuple[LiveStateWriter, threading.Event]:
    """A writer whose sends wait (up to 10 s) until the event is set: a Redis that hangs."""
    writer = LiveStateWriter(r, 60)
    gate = threading.Event()
    real_send = writer.send
    writer.send = lambda *a, **k: real_send(*a, **k) if gate.wait(10) else 0  # type: ignore[method-assign]
    return writer, gate


def test_while_writes_hang_new_marks_wait_and_the_flow_does_not(
    store_and_events: tuple[NumbaShardStore, EventColumns], r: redis.Redis
) -> None:
    """With MAX_IN_FLIGHT writes of a shard on their way (a Redis that hangs), a new write
    is not handed over and nothing waits for the old ones: the marks wait for a later call."""
    store, events = store_and_events
    writer, gate = hanging_writer(r)
    tracker = LiveStateTracker(NAMES, writer, interval_ms=0)
    keys, ids = events.client_key, events.client_id
    for now in range(MAX_IN_FLIGHT):
        tracker.mark(keys[now : now + 1], np.zeros(1, np.int64), ids[now : now + 1])
        assert tracker.maybe_write(store, now) == 1
    tracker.mark(keys[10:12], np.zeros(2, np.int64), ids[10:12])
    assert tracker.maybe_write(store, 99) == 0  # returned at once: four writes hang
    assert tracker.pending() == 2
    gate.set()
    assert tracker.maybe_write(store, 100, force=True) == 2
    assert tracker.pending() == 0 and tracker.stats["writes"] == MAX_IN_FLIGHT + 1


def test_end_of_input_waits_out_a_short_outage(
    store_and_events: tuple[NumbaShardStore, EventColumns], r: redis.Redis
) -> None:
    """A Redis that refuses the first final write and answers the next: everything is
    written (a second after the first try), nothing raised."""
    store, events = store_and_events
    writer = LiveStateWriter(r, 60, outage_wait_s=30)
    real_send, calls = writer.send, []

    def first_fails(*args: object, **kwargs: object) -> int:
        calls.append(time.monotonic())
        if len(calls) == 1:
            refused = "refused"
            raise LiveStateError(refused, transient=True)
        return real_send(*args, **kwargs)  # type: ignore[arg-type]

    writer.send = first_fails  # type: ignore[method-assign]
    tracker = LiveStateTracker(NAMES, writer, interval_ms=0)
    tracker.mark(events.client_key[:5], np.zeros(5, np.int64), events.client_id[:5])
    assert tracker.maybe_write(store, 1, force=True) == len(np.unique(events.client_key[:5])) * 2
    assert tracker.pending() == 0 and tracker.stats["writes"] == 1
    assert tracker.stats["outages"] == 1 and len(calls) == 2
    assert 0.9 < calls[1] - calls[0] < 3  # the flow's own pause between final tries


def test_a_cut_input_tries_its_marks_once_and_keeps_what_fails_for_the_snapshot(
    store_and_events: tuple[NumbaShardStore, EventColumns],
) -> None:
    """Input cut in a run that resumes: no retrying for outage_wait_s and no error (the
    run pauses, as the policy step does); the marks go into the snapshot."""
    store, events = store_and_events
    broken = redis.Redis(port=1, socket_connect_timeout=0.2, retry=None)
    tracker = LiveStateTracker(NAMES, LiveStateWriter(broken, 60, outage_wait_s=300), 0)
    tracker.mark(events.client_key[:4], np.zeros(4, np.int64), events.client_id[:4])
    distinct = len(np.unique(events.client_key[:4]))
    started = time.monotonic()
    assert tracker.write_before_pause(store, 1) == distinct
    assert time.monotonic() - started < 5 and tracker.new_outages() == 1
    assert len(tracker.snapshot()["keys"]) == distinct


def test_the_final_writes_do_not_wait_for_the_writers_pause(
    store_and_events: tuple[NumbaShardStore, EventColumns], r: redis.Redis
) -> None:
    """After earlier outages the writer pauses up to 8 s between tries; at end of input the
    flow retries itself, so a Redis that answers again is written at once (it used to fail
    the run, saying Redis did not answer, when outage_wait_s was under the pause)."""
    store, events = store_and_events
    writer = LiveStateWriter(r, 60, outage_wait_s=3)
    for _ in range(4):
        writer.backoff.failed(int(time.monotonic() * 1000))  # pausing 8 s now
    tracker = LiveStateTracker(NAMES, writer, interval_ms=0)
    tracker.mark(events.client_key[:3], np.zeros(3, np.int64), events.client_id[:3])
    started = time.monotonic()
    tracker.maybe_write(store, 1, force=True)
    assert time.monotonic() - started < 1
    assert tracker.pending() == 0 and writer.stats["round_trips"] == 1


def test_a_snapshot_holds_the_marks_of_writes_on_their_way_without_waiting(
    store_and_events: tuple[NumbaShardStore, EventColumns], r: redis.Redis
) -> None:
    store, events = store_and_events
    writer, gate = hanging_writer(r)
    tracker = LiveStateTracker(NAMES, writer, interval_ms=0)
    keys, ids = events.client_key, events.client_id
    tracker.mark(keys[:3], np.zeros(3, np.int64), ids[:3])
    assert tracker.maybe_write(store, 0) == len(np.unique(keys[:3]))  # on its way, hanging
    tracker.mark(keys[3:5], np.ones(2, np.int64), ids[3:5])  # waiting
    started = time.monotonic()
    snap = tracker.snapshot()
    assert time.monotonic() - started < 1  # did not wait for the hanging write
    got = set(zip(snap["keys"].tolist(), snap["journeys"].tolist(), strict=True))
    want = {(k, 0) for k in keys[:3].tolist()} | {(k, 1) for k in keys[3:5].tolist()}
    assert got == want
    resumed = LiveStateTracker(NAMES, LiveStateWriter(r, 60), interval_ms=0)
    resumed.restore(snap)
    assert resumed.pending() == len(want)
    gate.set()
    tracker.maybe_write(store, 1, force=True)


def test_a_clock_stepping_back_does_not_stop_the_writes(
    store_and_events: tuple[NumbaShardStore, EventColumns], r: redis.Redis
) -> None:
    store, events = store_and_events
    tracker = LiveStateTracker(NAMES, LiveStateWriter(r, 60), interval_ms=1_000)
    keys, ids = events.client_key, events.client_id
    hour = 3_600_000
    tracker.mark(keys[:1], np.zeros(1, np.int64), ids[:1])
    assert tracker.maybe_write(store, 10 * hour) == 1
    tracker.mark(keys[1:2], np.zeros(1, np.int64), ids[1:2])
    assert tracker.maybe_write(store, 10 * hour + 500) == 0  # within the interval
    assert tracker.maybe_write(store, 9 * hour) == 1  # an hour back: written, not held an hour
    tracker.mark(keys[2:3], np.zeros(1, np.int64), ids[2:3])
    assert tracker.maybe_write(store, 9 * hour + 500) == 0  # the interval counts from then
    assert tracker.maybe_write(store, 9 * hour + 1_000) == 1
    tracker.maybe_write(store, 9 * hour + 2_000, force=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 4)), max_size=200))
def test_unique_pairs_equals_its_twin(marks: list[tuple[int, int]]) -> None:
    """The numba kernel and its plain-Python twin pick the same rows in the same order:
    each (client, journey) pair once, a client's rows adjacent."""
    keys = np.array([(k * 0x9E3779B97F4A7C15) % 2**64 for k, _ in marks], np.uint64)
    journeys = np.array([j for _, j in marks], np.int64)
    rows = unique_pairs(keys, journeys)
    assert rows.tolist() == unique_pairs_twin(keys, journeys).tolist()
    pairs = list(zip(keys[rows].tolist(), journeys[rows].tolist(), strict=True))
    assert sorted(pairs) == sorted(set(zip(keys.tolist(), journeys.tolist(), strict=True)))
    seen = [k for i, (k, _) in enumerate(pairs) if i == 0 or pairs[i - 1][0] != k]
    assert len(seen) == len(set(seen))  # every client's rows in one run
