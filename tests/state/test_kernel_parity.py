"""The numba shard store against its plain-Python twin, and the kernels' hash index."""

import itertools
import math
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ato.catalog import load_catalog
from ato.columns import EventColumns, client_id_texts
from state import kernels, shard_store
from state.base import Effects, Records
from state.hashing import hash_client_id_py, hash_client_ids, mix64_py
from state.layout import CLIENT_SWEEP_MS, O_CLIENT, O_DEADLINE, O_JOURNEY
from state.shard_store import NumbaShardStore, order_events
from state.twins import Effect, PyShard, StallRecord

CATALOG = load_catalog()
TABLES = CATALOG.tables
T0 = 1_700_000_000_000
DAY = 86_400_000
SETTINGS = settings(deadline=None, max_examples=60)  # the first call compiles

# A few journeys with short timeouts, abandon signals, back-steps and a failure terminal.
JOURNEYS = [
    CATALOG.journey_codes[name] for name in ("open_account", "loan_application", "large_transfer")
]
_STEP_TYPES = [
    CATALOG.type_codes[t] for j in JOURNEYS for s in CATALOG.journeys[j].steps for t in s.on
]
_ABANDON_TYPES = [
    CATALOG.type_codes[t]
    for t in (
        "app_backgrounded", "face_verify_failed", "otp_failed", "ivr_hangup", "upload_failed",
    )
]  # fmt: skip
_OTHER_TYPES = [
    CATALOG.type_codes[t]
    for t in (
        "error", "call_started", "ivr_started", "app_session_start", "page_view",
        "payment_failed",  # an abandon signal of a journey outside JOURNEYS
        "card_delivered",  # a step of a journey outside JOURNEYS
    )
]  # fmt: skip
TYPES = _STEP_TYPES * 3 + _ABANDON_TYPES * 3 + _OTHER_TYPES + [0]  # 0: a type not in the catalog
GAPS = [0, 0, 1, 1_000, 1_000, 5_000, 30_000, 45_000, 60_000, 90_000, 300_000, 3_600_000]
BATCH_GAPS = [1, 1_000, 60_000, 600_000, 3_600_000, DAY, 2 * DAY, 3 * DAY + 1, 8 * DAY, 15 * DAY]
LAGS = [0, 1, 1_000, 60_000, 3_600_000, DAY]

# client, type code, journey the event names (-1: none), channel, ms after the previous event
# or None: exactly at the deadline of an open instance, whose client and journey it then names,
# segment
EVENT = st.tuples(
    st.integers(0, 2),
    st.sampled_from(TYPES),
    st.sampled_from([-1, -1, *JOURNEYS]),
    st.integers(0, 3),
    st.sampled_from([*GAPS, None, None]),
    st.integers(-1, 7),  # segment code
)
Step = tuple[EventColumns, list[int]]


def decode(type_code: int, named: int) -> tuple[int, int, int]:
    """(journey, step, flags) the way the decode step maps a type and an optional journey."""
    if named >= 0:
        journey, step = named, int(TABLES.type_step_in_journey[named, type_code])
    else:
        journey, step = int(TABLES.type_journey[type_code]), int(TABLES.type_step[type_code])
    return journey, step, int(TABLES.type_flags[type_code])


def columns(rows: list[tuple[Any, ...]]) -> EventColumns:
    """Ordered columns from (client id, ts, channel, type, journey, step, flags[, segment])."""
    ids = np.array([r[0] for r in rows] or [""], dtype=str)[: len(rows)]
    cols = EventColumns(
        hash_client_ids(ids),
        ids,
        np.array([r[1] for r in rows], np.int64),
        np.array([r[2] for r in rows], np.int8),
        np.array([r[3] for r in rows], np.int32),
        np.array([r[4] for r in rows], np.int16),
        np.array([r[5] for r in rows], np.int16),
        np.array([r[6] for r in rows], np.int8),
        np.array([b""] * len(rows), object),
        np.arange(len(rows), dtype=np.int64),
        segment=np.array([r[7] if len(r) > 7 else -1 for r in rows], np.int8),
    )
    return cols.take(order_events(cols))


@st.composite
def scenarios(draw: st.DrawFn) -> list[Step]:
    """Event batches, each followed by its watermarks (nondecreasing, below the next batch).

    A twin run alongside tells pending deadlines and client expiries, so that events and
    watermarks land exactly on them as well as between them.
    """
    oracle, ids = new_twin(), dict[int, str]()
    now, watermark, steps = T0, T0 - 1, []
    for _ in range(draw(st.integers(1, 6))):
        due = sorted((i.deadline, i.client, i.journey) for i in oracle.instances.values())
        rows = []
        for client, type_code, named, channel, dt, seg in draw(st.lists(EVENT, max_size=16)):
            client_id, journey = f"c{client}", named
            if dt is not None:
                now += dt
            elif later := [d for d in due if d[0] >= now]:
                now, key, journey = draw(st.sampled_from(later))
                client_id = ids[key]
            rows.append((client_id, now, channel, type_code, *decode(type_code, journey), seg))
        cols = columns(rows)
        ids.update(zip(cols.client_key.tolist(), client_id_texts(cols.client_id), strict=True))
        twin_apply(oracle, cols)
        now += draw(st.sampled_from(BATCH_GAPS))
        watermarks = []
        for _ in range(draw(st.integers(0, 2))):
            ttl = oracle.client_ttl_ms
            expiries = [c.last_ts + ttl for c in oracle.clients.values() if c.open == 0]
            due_times = [i.deadline for i in oracle.instances.values()] + expiries
            exact = sorted({d for d in due_times if d >= watermark})
            lag = draw(st.sampled_from([*LAGS, None]))
            if lag is None and exact:
                watermark = draw(st.sampled_from(exact))
            else:
                watermark = max(watermark, now - 1 - (lag or 0))
            now = max(now, watermark + 1)  # the next batch is not late
            twin_expire(oracle, watermark)
            watermarks.append(watermark)
        steps.append((cols, watermarks))
    return steps


def new_twin() -> PyShard:
    return PyShard(TABLES, float(CATALOG.decay_half_life_ms), CATALOG.client_idle_ttl_ms)


def twin_apply(twin: PyShard, cols: EventColumns) -> tuple[list[StallRecord], list[Effect]]:
    c = cols
    return twin.apply(
        c.client_key, c.ts, c.channel, c.type_code, c.journey, c.step, c.flags, c.segment
    )


def twin_expire(twin: PyShard, watermark: int) -> list[StallRecord]:
    twin.expire_clients(watermark)  # the store forgets idle clients first, too
    return twin.expire(watermark)


def store_records(stalls: Records) -> list[StallRecord]:
    """The store's records in the twin's form (client hash in place of the slot)."""
    records = []
    for k in range(len(stalls)):
        key = int(stalls.client_key[k])
        assert hash_client_id_py(stalls.client_id[k].decode()) == key
        ints = stalls.ints[O_CLIENT + 1 :, k].tolist()
        records.append((key, *ints, *stalls.floats[:, k].tolist()))
    return records


def assert_same_stalls(stalls: Records, expected: list[StallRecord]) -> None:
    got = sorted(store_records(stalls))
    want = sorted(expected)
    assert [r[:-2] for r in got] == [r[:-2] for r in want]
    for g, w in zip(got, want, strict=True):
        assert math.isclose(g[-2], w[-2], rel_tol=1e-9), (g, w)
        assert math.isclose(g[-1], w[-1], rel_tol=1e-9), (g, w)


def twin_instances(twin: PyShard) -> dict[tuple[int, int], dict[str, Any]]:
    """The twin's open instances in the shape of ``NumbaShardStore.open_instances``."""
    out = {}
    for (key, journey), inst in twin.instances.items():
        client = twin.clients[key]
        fields = dict(vars(inst))
        fields["client_key"] = fields.pop("client")
        fields.update(
            calls=client.calls,
            sessions=client.sessions,
            client_last_ts=client.last_ts,
            last_instance=client.last_instance == (key, journey),
        )
        out[(key, journey)] = fields
    return out


def assert_same_state(store: NumbaShardStore, twin: PyShard) -> None:
    assert store.counters() == twin.counters
    assert store.known_clients() == set(twin.clients)
    got = {(f["client_key"], f["journey"]): f for f in store.open_instances().values()}
    want = twin_instances(twin)
    assert got.keys() == want.keys()
    for key, expected in want.items():
        for name, value in expected.items():
            if isinstance(value, float):
                assert math.isclose(got[key][name], value, rel_tol=1e-9), (key, name)
            else:
                assert got[key][name] == value, (key, name)
    assert_same_lookups(store, twin)


def assert_same_lookups(store: NumbaShardStore, twin: PyShard) -> None:
    """``find_instances``/``instance_fields`` against the twin's ``find``, for every known
    client and journey (open or not) and a client the store never saw."""
    pairs = [(key, j) for key in [*twin.clients, 12345] for j in range(len(CATALOG.journeys))]
    keys = np.array([k for k, _ in pairs], np.uint64)
    journeys = np.array([j for _, j in pairs], np.int64)
    slots = store.find_instances(keys, journeys)
    open_ = slots >= 0
    fields = store.instance_fields(slots[open_])
    got = [dict(zip(fields, row, strict=True)) for row in zip(*fields.values(), strict=True)]
    want = []
    for key, j in pairs:
        inst = twin.find(key, j)
        assert (inst is not None) == bool(open_[pairs.index((key, j))]), (key, j)
        if inst is not None:
            want.append(
                {
                    "journey": inst.journey, "step": inst.step, "since_ms": inst.entered,
                    "last_type": inst.last_type, "last_channel": inst.last_channel,
                    "last_ms": inst.last_event, "stalled": inst.stalled, "attempt": inst.attempt,
                }
            )  # fmt: skip
    assert [{k: int(v) for k, v in row.items()} for row in got] == want


def assert_same_effects(effects: Effects, expected: list[Effect]) -> None:
    e = effects
    got = list(zip(e.effect.tolist(), e.journey.tolist(), e.step.tolist(), strict=True))
    assert got == expected


def run_in_parallel(steps: list[Step], store: NumbaShardStore, twin: PyShard) -> None:
    for cols, watermarks in steps:
        records, effects = store.apply(cols)
        twin_records, twin_effects = twin_apply(twin, cols)
        assert_same_stalls(records, twin_records)
        assert_same_effects(effects, twin_effects)
        for watermark in watermarks:
            assert_same_stalls(store.expire(watermark), twin_expire(twin, watermark))
        assert_same_state(store, twin)


@SETTINGS
@given(steps=scenarios(), capacity=st.sampled_from([1, 2, 1024]))
def test_store_matches_twin(steps: list[Step], capacity: int) -> None:
    """Records, counters and open instances agree after every batch and expiry."""
    run_in_parallel(steps, NumbaShardStore(CATALOG, capacity), new_twin())


@SETTINGS
@given(steps=scenarios(), chunk=st.sampled_from([1, 3]))
def test_store_applying_in_small_chunks_matches_twin(steps: list[Step], chunk: int) -> None:
    """A call's events applied a few at a time, room made (and ids stored, the id arena
    repacked) between chunks: the same records, effects and state."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shard_store, "APPLY_CHUNK", chunk)
        run_in_parallel(steps, NumbaShardStore(CATALOG, 1), new_twin())


def test_a_huge_call_of_few_clients_makes_room_for_a_chunk_only() -> None:
    """Room is made for a new client per event of a chunk, not of the whole call: a resumed
    run's first flush of millions of events grew every store for millions of clients."""
    view = CATALOG.type_codes["page_view"]
    n = 3 * shard_store.APPLY_CHUNK + 5
    rows = [(f"c{i % 50}", T0 + i, 0, view, *decode(view, -1)) for i in range(n)]
    store, twin = NumbaShardStore(CATALOG), new_twin()
    run_in_parallel([(columns(rows), [])], store, twin)
    assert store.sizes()["clients"] == 50
    assert store.client_cap < 2 * shard_store.APPLY_CHUNK
    assert len(store.c_ht) <= shard_store.table_size(shard_store.APPLY_CHUNK + 50)


def test_scenario_reaches_every_outcome() -> None:
    """A fixed run through completion, abandon signals, stalls at an event and at the
    watermark exactly on the deadline, closing and forgetting clients."""
    j = CATALOG.journey_codes["large_transfer"]
    codes = CATALOG.type_codes
    start, payee, otp = codes["transfer_start"], codes["payee_added"], codes["otp_sent"]
    done, hangup = codes["transfer_completed"], codes["ivr_hangup"]
    acct, away, view = codes["acct_open_start"], codes["app_backgrounded"], codes["page_view"]
    rows = [
        ("a", T0, 0, start, *decode(start, -1)),
        ("a", T0 + 1_000, 1, hangup, *decode(hangup, -1)),  # abandon: deadline T0 + 61s
        ("b", T0, 0, start, *decode(start, -1)),
        ("b", T0 + 10, 0, payee, *decode(payee, j)),
        ("b", T0 + 2_000, 2, otp, *decode(otp, -1)),  # deadline T0 + 62s
        ("b", T0 + 2_030, 2, done, *decode(done, -1)),
        ("c", T0, 0, start, *decode(start, -1)),
        ("d", T0, 0, acct, *decode(acct, -1)),
        ("d", T0 + 1_000, 0, away, *decode(away, -1)),  # abandon: deadline T0 + 121s
        ("d", T0 + 121_000, 0, view, *decode(view, -1)),  # stalls d before it counts
    ]
    store, twin = NumbaShardStore(CATALOG, 1), new_twin()
    run_in_parallel([(columns(rows), [T0 + 61_000, T0 + 3 * DAY])], store, twin)
    counts = store.counters()
    assert (counts["started"], counts["completed"], counts["abandon_signals"]) == (4, 1, 2)
    assert (counts["stalled"], counts["closed"]) == (3, 2)  # d closes only after 3 days
    assert store.known_clients() == set(hash_client_ids(np.array(["a", "c", "d"])).tolist())


def test_growth_from_capacity_one() -> None:
    """Many clients in a store created with room for one; state survives every regrowth."""
    start = CATALOG.type_codes["acct_open_start"]
    upload = CATALOG.type_codes["id_card_uploaded"]
    store, twin = NumbaShardStore(CATALOG, capacity=1), new_twin()
    steps = []
    for wave in range(5):
        t = T0 + wave * 60_000
        rows = [(f"w{wave}-{i}", t, i % 4, start, *decode(start, -1)) for i in range(3**wave + 50)]
        rows += [(f"w0-{i}", t + 1, 1, upload, *decode(upload, -1)) for i in range(0, 50, 3)]
        steps.append((columns(rows), [t + 30_000]))
    run_in_parallel(steps, store, twin)
    n_clients = sum(3**wave + 50 for wave in range(5))
    assert store.sizes()["clients"] == n_clients == len(twin.clients)
    assert store.client_cap >= n_clients
    assert len(store.c_ht) * shard_store.MAX_LOAD >= n_clients
    assert store.sizes()["instances"] == len(twin.instances) == n_clients
    run_in_parallel([(columns([]), [T0 + 20 * DAY, T0 + 30 * DAY])], store, twin)
    assert store.sizes()["instances"] == store.sizes()["clients"] == 0


def test_expire_in_chunks() -> None:
    """More stalls at once than one expire kernel call holds: every one is reported once."""
    start = CATALOG.type_codes["acct_open_start"]
    n = shard_store.EXPIRE_CHUNK + 7
    rows = [(f"x{i}", T0 + i % 3, 0, start, *decode(start, -1)) for i in range(n)]
    store, twin = NumbaShardStore(CATALOG), new_twin()
    run_in_parallel([(columns(rows), [])], store, twin)
    stalls = store.expire(T0 + DAY)
    assert_same_stalls(stalls, twin_expire(twin, T0 + DAY))
    assert len(set(stalls.client_key.tolist())) == len(stalls) == n
    assert_same_state(store, twin)


def test_batch_with_more_stalls_than_events() -> None:
    """One late event per client settles all its journeys: the apply kernel works in chunks."""
    firsts = [(j.index, CATALOG.type_codes[j.steps[0].on[0]]) for j in CATALOG.journeys]
    page_view = CATALOG.type_codes["page_view"]
    opened = [(f"m{c}", T0, 0, t, *decode(t, -1)) for c in range(5) for _, t in firsts]
    late = [(f"m{c}", T0 + 3_600_000, 1, page_view, *decode(page_view, -1)) for c in range(5)]
    store, twin = NumbaShardStore(CATALOG), new_twin()
    run_in_parallel([(columns(opened), []), (columns(late), [])], store, twin)
    overdue = sum(j.steps[0].timeout_ms <= 3_600_000 for j in CATALOG.journeys)
    assert store.counters()["stalled"] == 5 * overdue > len(late) + len(CATALOG.journeys)


def test_closed_instance_slot_reused_by_another_client() -> None:
    """A client's event after its instance closed does not touch the slot's next owner."""
    codes = CATALOG.type_codes
    start, opened = codes["acct_open_start"], codes["account_opened"]
    transfer, page_view = codes["transfer_start"], codes["page_view"]
    rows = [
        ("a", T0, 0, start, *decode(start, -1)),
        ("a", T0 + 1, 0, opened, *decode(opened, -1)),  # completes; slot freed
        ("b", T0 + 2, 0, transfer, *decode(transfer, -1)),  # takes the freed slot
        ("a", T0 + 3, 1, page_view, *decode(page_view, -1)),  # a has nothing open
    ]
    store, twin = NumbaShardStore(CATALOG, capacity=1), new_twin()
    run_in_parallel([(columns(rows), [])], store, twin)
    (b,) = store.open_instances().values()
    assert (b["events"], b["switches"], b["last_type"]) == (1, 0, transfer)


def _outputs(store: NumbaShardStore, steps: list[Step]) -> list[Records]:
    out = []
    for cols, watermarks in steps:
        out.append(store.apply(cols)[0])
        out.extend(store.expire(w) for w in watermarks)
    return out


@SETTINGS
@given(steps=scenarios(), split=st.integers(0, 6))
def test_snapshot_restore_continues_identically(steps: list[Step], split: int) -> None:
    """A restored (pickled) snapshot continues exactly like the store it was taken from."""
    split = min(split, len(steps))
    live = NumbaShardStore(CATALOG, capacity=2)
    _outputs(live, steps[:split])
    snap = pickle.dumps(live.snapshot())
    live_out = _outputs(live, steps[split:])  # mutates live after the snapshot was taken
    restored = NumbaShardStore.restore(CATALOG, pickle.loads(snap))
    restored_out = _outputs(restored, steps[split:])
    for a, b in zip(live_out, restored_out, strict=True):
        np.testing.assert_array_equal(a.client_id, b.client_id)
        np.testing.assert_array_equal(a.client_key, b.client_key)
        np.testing.assert_array_equal(a.ints, b.ints)
        np.testing.assert_array_equal(a.floats, b.floats)
    assert restored.counters() == live.counters()
    assert restored.open_instances() == live.open_instances()
    assert restored.sizes() == live.sizes()


# ---------------------------------------------------------------- the hash index

KEY_POOL = [*range(24), 2**63, 2**64 - 1, 0xAF63DC4C8601EC8C, *(mix64_py(k) for k in range(13))]


def assert_index_matches(
    table: np.ndarray, slot_keys: np.ndarray, ref: dict[int, int], probe: list[int]
) -> None:
    assert sorted(table[table >= 0].tolist()) == sorted(ref.values())
    for key in probe:
        assert kernels.ht_find(table, slot_keys, np.uint64(key)) == ref.get(key, -1), key


@settings(deadline=None, max_examples=200)
@given(
    size=st.sampled_from([8, 16]),
    ops=st.lists(st.tuples(st.booleans(), st.sampled_from(KEY_POOL)), max_size=120),
)
def test_hash_index_matches_dict(size: int, ops: list[tuple[bool, int]]) -> None:
    """Random inserts and deletes on a tiny table, where probe runs collide and wrap."""
    table, slot_keys = np.full(size, -1, np.int32), np.zeros(len(ops), np.uint64)
    ref: dict[int, int] = {}
    for n, (insert, key) in enumerate(ops):
        if insert and key not in ref and len(ref) < size - 1:
            slot_keys[n] = key
            kernels.ht_insert(table, slot_keys, n)
            ref[key] = n
        elif not insert and key in ref:
            kernels.ht_delete(table, slot_keys, ref.pop(key))
        assert_index_matches(table, slot_keys, ref, KEY_POOL)


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_delete_inside_wrapping_probe_run(order: tuple[int, ...]) -> None:
    """Every deletion from a probe run that wraps past the end of the table, whichever order
    filled it (keys at their own home bucket, keys displaced across the end)."""
    size = 8
    home = {k: mix64_py(k) & (size - 1) for k in range(10_000)}
    at_end = [k for k in home if home[k] == size - 1][:3]
    at_zero = [k for k in home if home[k] == 0][:1]
    pool = [(at_end + at_zero)[i] for i in order]
    slot_keys = np.array(pool, np.uint64)
    for victim in range(len(pool)):
        table = np.full(size, -1, np.int32)
        for n in range(len(pool)):
            kernels.ht_insert(table, slot_keys, n)
        assert sorted(np.flatnonzero(table >= 0).tolist()) == [0, 1, 2, 7]
        kernels.ht_delete(table, slot_keys, victim)
        ref = {key: n for n, key in enumerate(pool) if n != victim}
        assert_index_matches(table, slot_keys, ref, pool)


def test_rebuild_indexes_used_slots_only() -> None:
    slot_keys = np.array([7, 8, 9, 10], np.uint64)
    table = np.zeros(8, np.int32)  # not empty yet: the rebuild clears it
    kernels.ht_rebuild(table, slot_keys, np.array([True, False, True]))
    assert_index_matches(table, slot_keys, {7: 0, 9: 2}, [7, 8, 9, 10])


def instance_list(store: NumbaShardStore, client_key: int) -> list[int]:
    """Journeys of a client's instance list, walked from ``C_FIRST``."""
    from state.layout import C_FIRST, H_JOURNEY, I_CLIENT, I_NEXT

    cs = kernels.ht_find(store.c_ht, store.ckey, np.uint64(client_key))
    journeys, slot = [], int(store.ci[cs, C_FIRST])
    while slot >= 0:
        assert store.ii[slot, I_CLIENT] == cs
        journeys.append(int(store.ih[slot, H_JOURNEY]))
        slot = int(store.ii[slot, I_NEXT])
    return journeys


def test_instance_lists_stay_in_journey_order() -> None:
    """Instances opened in any order are listed by journey; closing one keeps the rest."""
    names = ("large_transfer", "open_account", "loan_application", "card_activation")
    firsts = [CATALOG.type_codes[CATALOG.journey(n).steps[0].on[0]] for n in names]
    rows = [("a", T0 + k, 0, t, *decode(t, -1)) for k, t in enumerate(firsts)]
    done = CATALOG.type_codes["account_opened"]
    store, twin = NumbaShardStore(CATALOG, capacity=1), new_twin()
    run_in_parallel([(columns(rows), [])], store, twin)
    key = hash_client_id_py("a")
    assert instance_list(store, key) == sorted(CATALOG.journey_codes[n] for n in names)
    run_in_parallel([(columns([("a", T0 + 9, 0, done, *decode(done, -1))]), [])], store, twin)
    rest = sorted(CATALOG.journey_codes[n] for n in names if n != "open_account")
    assert instance_list(store, key) == rest


def test_outcomes_and_effects_of_stalled_instances() -> None:
    """Progress, completion and a lapsed window each end a stall with one outcome record."""
    from state.layout import (
        EFFECT_ADVANCED,
        EFFECT_COMPLETED,
        EFFECT_NONE,
        EFFECT_STARTED,
        O_DEADLINE,
        O_OUTCOME,
        O_RESOLVE_CHANNEL,
        O_RESOLVED_AT,
        O_SEGMENT,
        O_STEP,
        OUTCOME_COMPLETED,
        OUTCOME_LAPSED,
        OUTCOME_PROGRESSED,
    )

    j = CATALOG.journey_codes["large_transfer"]
    codes = CATALOG.type_codes
    start, payee, done = codes["transfer_start"], codes["payee_added"], codes["transfer_completed"]
    five_min = 300_000
    rows = [
        ("p", T0, 0, start, *decode(start, -1), 3),  # stalls at start, then progresses
        ("c", T0, 0, start, *decode(start, -1), 4),  # stalls at start, then completes
        ("l", T0, 0, start, *decode(start, -1), -1),  # stalls at start, lapses
        ("z", T0 + 1, 1, codes["page_view"], *decode(codes["page_view"], -1)),  # no journey
    ]
    store, twin = NumbaShardStore(CATALOG), new_twin()
    records, effects = store.apply(columns(rows))
    assert sorted(zip(effects.effect.tolist(), effects.journey.tolist(), strict=True)) == sorted(
        [(EFFECT_STARTED, j)] * 3 + [(EFFECT_NONE, -1)]
    )
    twin_apply(twin, columns(rows))
    assert_same_stalls(store.expire(T0 + five_min), twin_expire(twin, T0 + five_min))
    later = [
        ("p", T0 + 2 * five_min, 1, payee, *decode(payee, j)),
        ("c", T0 + 2 * five_min, 2, done, *decode(done, -1)),
    ]
    records, effects = store.apply(columns(later))
    assert_same_stalls(records, twin_apply(twin, columns(later))[0])
    by_client = dict(zip(records.client_texts(), records.ints.T.tolist(), strict=True))
    assert by_client["p"][O_OUTCOME] == OUTCOME_PROGRESSED
    assert by_client["c"][O_OUTCOME] == OUTCOME_COMPLETED
    for client, channel, segment in (("p", 1, 3), ("c", 2, 4)):
        rec = by_client[client]
        assert (rec[O_STEP], rec[O_DEADLINE]) == (0, T0 + five_min)  # the stall's step and time
        assert (rec[O_RESOLVED_AT], rec[O_RESOLVE_CHANNEL]) == (T0 + 2 * five_min, channel)
        assert rec[O_SEGMENT] == segment
    assert sorted(effects.effect.tolist()) == sorted([EFFECT_ADVANCED, EFFECT_COMPLETED])
    close = T0 + five_min + CATALOG.journey("large_transfer").close_after_ms
    lapsed = store.expire(close)
    assert_same_stalls(lapsed, twin_expire(twin, close))
    outcomes = lapsed.outcomes()  # and "p" stalls again, at payee
    ((rec, client),) = list(zip(outcomes.ints.T.tolist(), outcomes.client_texts(), strict=True))
    assert client == "l"
    assert (rec[O_OUTCOME], rec[O_RESOLVED_AT], rec[O_RESOLVE_CHANNEL]) == (
        OUTCOME_LAPSED,
        close,
        -1,
    )
    assert_same_state(store, twin)


def test_idle_client_is_forgotten_whether_or_not_it_was_freed() -> None:
    """A client idle for the TTL with nothing open starts afresh at its next event: the
    stall it then causes is the same with or without an expiry pass freeing it between."""
    ttl = CATALOG.client_idle_ttl_ms
    call, start = CATALOG.type_codes["call_started"], CATALOG.type_codes["acct_open_start"]
    first = columns([("a", T0, 1, call, *decode(call, -1))])
    # idle clients are freed at sweep times: the first one after the TTL ran out
    back = -(-(T0 + ttl) // CLIENT_SWEEP_MS) * CLIENT_SWEEP_MS
    later = columns([("a", back, 0, start, *decode(start, -1))])
    stalls = []
    for expire_between in (False, True):
        store, twin = NumbaShardStore(CATALOG), new_twin()
        run_in_parallel([(first, [T0 + ttl, back] if expire_between else [T0])], store, twin)
        assert store.sizes()["clients"] == (0 if expire_between else 1)
        store.apply(later)
        twin_apply(twin, later)
        found = store.expire(back + DAY)
        assert_same_stalls(found, twin_expire(twin, back + DAY))
        stalls.append(store_records(found))
    assert stalls[0] == stalls[1] != []
    assert stalls[0][0][-2] == 0.0  # no recent calls: the call before the idle time is gone


def test_client_whose_last_instance_lapses_is_forgotten_however_the_watermark_moved() -> None:
    """The client's only instance stalls and lapses (``close_after``) at C, past the client
    TTL; the client returns at C + 200 ms and stalls again. Its second stall is the same
    whether the watermark stopped between C and its return (the expiry pass closed the
    instance) or jumped over both (the event closes it first): before, the jump kept the
    old calls (0.99 instead of 0)."""
    call, start = CATALOG.type_codes["call_started"], CATALOG.type_codes["acct_open_start"]
    journey = CATALOG.journey("open_account")
    first = columns(
        [("a", T0, 1, call, *decode(call, -1))] * 8 + [("a", T0 + 1, 0, start, *decode(start, -1))]
    )
    stalled = T0 + 1 + journey.steps[0].timeout_ms
    closed = stalled + journey.close_after_ms
    back = closed + 200
    assert T0 + 1 + CATALOG.client_idle_ttl_ms <= back
    later = columns([("a", back, 0, start, *decode(start, -1))])
    stalls = []
    for between in ([closed], []):
        store, twin = NumbaShardStore(CATALOG), new_twin()
        run_in_parallel([(first, [stalled, *between]), (later, [])], store, twin)
        found = store.expire(back + DAY)
        assert_same_stalls(found, twin_expire(twin, back + DAY))
        stalls.append(store_records(found))
    assert stalls[0] == stalls[1] != []
    assert stalls[1][0][-2] == 0.0  # the calls before the idle time are gone


def test_an_event_naming_no_journey_reaches_the_open_instance_after_the_last_one_closed() -> None:
    """A card activation and a transfer are open; the transfer (which progressed last)
    completes; then an OTP failure naming no journey arrives. It shortens the card
    activation's deadline (its 2-minute grace): before, the role of "last progressed" died
    with the completed transfer and the signal counted nowhere."""
    codes = CATALOG.type_codes
    rows = [
        ("a", T0, 0, codes["card_activation_start"]),
        ("a", T0 + 1_000, 0, codes["transfer_start"]),
        ("a", T0 + 2_000, 0, codes["transfer_completed"]),
        ("a", T0 + 3_000, 0, codes["otp_failed"]),
    ]
    cols = columns([(*row, *decode(row[3], -1)) for row in rows])
    store, twin = NumbaShardStore(CATALOG), new_twin()
    run_in_parallel([(cols, [])], store, twin)
    found = store.expire(T0 + DAY)
    assert_same_stalls(found, twin_expire(twin, T0 + DAY))
    card = CATALOG.journey_codes["card_activation"]
    [stall] = [r for r in store_records(found) if r[O_JOURNEY] == card]
    grace = CATALOG.journey("card_activation").abandon_ms["otp_failed"]
    assert stall[O_DEADLINE] == T0 + 3_000 + grace
