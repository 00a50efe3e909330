"""Shards in lanes (``engine.lanes``): the same results as one lane, side by side or not."""

import pickle
import random
import threading
from typing import Any

import numpy as np
import pytest

from ato.config import EngineSettings
from ato.exceptions import ConfigError
from ato.threads import in_halves, run_parts
from operators.batches import RawBatch, ShardOutput
from operators.funnel import FunnelRows
from operators.route import Router
from operators.shard_step import ShardContext, ShardLogic
from state.hashing import lane_of
from state.lanes import LanedStore, snapshot_lanes
from tests.operators.test_shard_step import (
    CATALOG,
    CONFIRM,
    DECODER,
    LATE,
    T0,
    Clock,
    _script,
    _summary,
    _traffic,
    batch,
    interventions,
    logic,
    raw_event,
    run,
    tick,
)


@pytest.fixture(params=[False, True], ids=["one-after-another", "side-by-side"])
def side_by_side(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Lanes of every call side by side (threshold 0), or never (the threshold unreached)."""
    threshold = 0 if request.param else 10**9
    monkeypatch.setattr("operators.shard_step.SIDE_BY_SIDE_EVENTS", threshold)
    return bool(request.param)


def _metrics_shard(lanes: int) -> ShardLogic:
    ctx = ShardContext(CATALOG, EngineSettings(lanes=lanes), ["p0"], Clock(), metrics=True)
    return ShardLogic(ctx, None)


def _records(outputs: list[ShardOutput], name: str) -> list[tuple[Any, ...]]:
    """Every stall or outcome record of ``outputs`` as sortable rows (client, ints, floats)."""
    rows = []
    for out in outputs:
        records = getattr(out, name)
        for k in range(len(records)):
            rows.append(
                (
                    int(records.client_key[k]),
                    *(int(v) for i, v in enumerate(records.ints[:, k]) if i != 0),
                    *records.floats[:, k].tolist(),
                )
            )
    return sorted(rows)


def _funnel(outputs: list[ShardOutput]) -> dict[int, list[int]]:
    rows = FunnelRows.concat([o.funnel for o in outputs if o.funnel is not None]).summed()
    return {int(k): c.tolist() for k, c in zip(rows.keys, rows.counts, strict=True)}


@pytest.mark.parametrize("lanes", [2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_lanes_give_the_records_of_one_lane(lanes: int, seed: int, side_by_side: bool) -> None:
    """Interventions, stall and outcome records and funnel counts: the same as one lane's
    (the record rows leave out the client slot, which is a lane's own)."""
    events = _traffic(seed)
    rng = random.Random(seed)
    shuffled = sorted(events, key=lambda e: e[1] + rng.randrange(LATE))
    sizes = [rng.randrange(1, 9) for _ in events]

    def replay(n_lanes: int) -> list[ShardOutput]:
        shard, out, i = _metrics_shard(n_lanes), [], 0
        for size in sizes:
            if i < len(shuffled):
                out += run(shard, [batch(shuffled[i : i + size])])
                i += size
        out += run(shard, [tick(shuffled[-1][1] + 10 * 86_400_000)])
        return out + shard.on_eof()[0]

    one, many = replay(1), replay(lanes)
    key = lambda d: d["intervention_id"]  # noqa: E731
    assert sorted(interventions(many), key=key) == sorted(interventions(one), key=key)
    assert len(interventions(one)) > 0
    for name in ("stalls", "outcomes"):
        assert _records(many, name) == _records(one, name)
    assert _funnel(many) == _funnel(one) and _funnel(one)
    assert sum(o.applied for o in many) == sum(o.applied for o in one) == len(events)


@pytest.mark.parametrize("cut", [0, 3, 6, len(_script())])
def test_a_laned_shard_resumes_from_its_snapshot(cut: int, side_by_side: bool) -> None:
    """Snapshot after any item, restore: the same outputs follow as without the cut (and as
    with one lane, but for the order of a call's documents)."""
    script = _script()
    whole = logic(lanes=2)
    expected = run(whole, script) + whole.on_eof()[0]
    single = logic()
    alone = run(single, script) + single.on_eof()[0]
    key = lambda d: d["intervention_id"]  # noqa: E731
    assert sorted(interventions(expected), key=key) == sorted(interventions(alone), key=key)
    assert len(interventions(alone)) >= 3
    first = logic(lanes=2)
    before = run(first, script[:cut])
    snap = pickle.loads(pickle.dumps(first.snapshot()))
    assert snap is not None and snapshot_lanes(snap["store"]) == 2
    second = logic(resume=snap, lanes=2)
    after = run(second, script[cut:]) + second.on_eof()[0]
    assert _summary(before + after) == _summary(expected)


def test_a_snapshot_of_another_lane_count_is_refused() -> None:
    """A client's state is in its lane's store: resuming with other lanes would lose it. A
    snapshot from before lanes (a plain store's) resumes with one lane."""
    shard = logic(lanes=2)
    run(shard, [batch([("a", T0, "order_confirm_viewed")])])
    snap = shard.snapshot()
    assert snap is not None
    with pytest.raises(ConfigError, match=r"engine.lanes = 2, this run has 1.*--lanes 2"):
        logic(resume=snap)
    single = logic()
    run(single, [batch([("a", T0, "order_confirm_viewed")])])
    old = single.snapshot()
    assert old is not None
    old = {**old, "store": old["store"]["lanes"][0]}  # a store's own, as before lanes
    with pytest.raises(ConfigError, match="engine.lanes = 1, this run has 2"):
        logic(resume=old, lanes=2)
    resumed = logic(resume=old)
    outs = run(resumed, [tick(T0 + 10 * CONFIRM)])
    assert [d["client_id"] for d in interventions(outs)] == ["a"]


def test_split_hands_out_slices_of_grouped_events_and_sorts_the_rest() -> None:
    """The router groups a shard's events by lane: splitting them copies nothing. Events in
    another order are grouped first; either way each lane's keep their order."""
    messages = [raw_event(f"c{i}", T0 + i, "page_view") for i in range(200)]
    decoded = DECODER.decode(RawBatch("p0", messages))
    ((_, grouped),) = Router(1, 3)(decoded)
    ((_, mixed),) = Router(1)(decoded)
    store = LanedStore.empty(CATALOG, 3)
    for item, copies in ((grouped, False), (mixed, True)):
        parts = store.split(item.events)
        assert [len(p) for p in parts] == np.bincount(
            lane_of(item.events.client_key, 3), minlength=3
        ).tolist()
        for k, part in enumerate(parts):
            assert (lane_of(part.client_key, 3) == k).all()
            assert (np.diff(part.ts) > 0).all()  # arrival order kept
            assert np.shares_memory(part.ts, item.events.ts) != copies


def test_open_fields_of_lanes_match_one_store() -> None:
    """The live-state lookup finds each pair's instance in its lane, rows in input order."""
    events = [("a", T0, "order_confirm_viewed"), ("b", T0 + 1, "otp_sent")]
    events += [(f"x{i}", T0 + 2 + i, "transfer_start") for i in range(40)]
    found = {}
    for lanes in (1, 2):
        shard = logic(lanes=lanes)
        run(shard, [batch(events), tick(T0 + 10_000)])
        keys = batch(events).events.client_key
        journeys = np.full(len(keys), CATALOG.journey("large_transfer").index, np.int64)
        rows, fields = shard.store.open_fields(keys, journeys)
        found[lanes] = (rows.tolist(), {k: v.tolist() for k, v in fields.items()})
        found[-lanes] = (shard.store.counters(), shard.store.sizes()["instances"])
        assert all(s.known_clients() for s in shard.store.stores)  # every lane holds some
    assert found[2] == found[1] and len(found[1][0]) == 41
    assert found[-2] == found[-1] and found[-1][1] == 42


def test_run_parts_waits_for_every_part_before_raising() -> None:
    """A failing part does not leave another running on the state it shares."""
    done = threading.Event()

    def slow() -> int:
        done.wait(0.2)
        done.set()
        return 2

    def fails() -> int:
        msg = "lane broke"
        raise ValueError(msg)

    with pytest.raises(ValueError, match="lane broke"):
        run_parts([fails, slow])
    assert done.is_set()
    assert run_parts([lambda: 1, lambda: 2, lambda: 3]) == [1, 2, 3]
    assert in_halves(5, lambda a, b: (a, b)) == [(0, 5)]
    assert in_halves(5_000, lambda a, b: (a, b)) == [(0, 2_500), (2_500, 5_000)]


def test_shard_key_is_unchanged_by_lanes() -> None:
    """Lanes split a shard; they do not move clients between shards."""
    messages = [raw_event(f"c{i}", T0 + i, "page_view") for i in range(100)]
    decoded = DECODER.decode(RawBatch("p0", messages))
    by_shard = {
        lanes: {
            key: sorted(item.events.client_key.tolist()) for key, item in Router(4, lanes)(decoded)
        }
        for lanes in (1, 2)
    }
    assert by_shard[1] == by_shard[2]
