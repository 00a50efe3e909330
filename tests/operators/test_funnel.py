"""Per-minute funnel windows: packing, counting by effect, closing by watermark, snapshots."""

import pickle
from typing import Any
from unittest import mock

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ato.catalog import MAX_JOURNEYS, MAX_STEPS
from operators import funnel
from operators.funnel import (
    MEASURES,
    MINUTE_MS,
    FunnelLogic,
    FunnelRows,
    FunnelUpdate,
    FunnelWindows,
    event_rows,
    event_rows_twin,
    outcome_rows,
    pack,
    sum_by_key,
    sum_by_key_twin,
    unpack,
)
from state.base import Effects, Records
from state.layout import (
    EFFECT_ADVANCED,
    EFFECT_COMPLETED,
    EFFECT_COUNTED,
    EFFECT_FAILED,
    EFFECT_NONE,
    EFFECT_STARTED,
    KIND_OUTCOME,
    N_OUT,
    N_OUT_F,
    O_JOURNEY,
    O_KIND,
    O_LAST_CHANNEL,
    O_OUTCOME,
    O_RESOLVED_AT,
    O_SEGMENT,
    O_STEP,
    OUTCOME_LAPSED,
    OUTCOME_PROGRESSED,
)

T0 = 1_767_600_000_000 - 1_767_600_000_000 % MINUTE_MS


@given(
    st.lists(
        st.tuples(
            st.integers(0, 40_000_000),
            st.integers(-1, MAX_JOURNEYS - 1),
            st.integers(-1, MAX_STEPS - 1),
            st.integers(0, 15),
            st.integers(-1, 14),
        ),
        max_size=50,
    )
)
def test_pack_round_trips(rows: list[tuple[int, int, int, int, int]]) -> None:
    cols = [np.array([r[k] for r in rows], np.int64) for k in range(5)]
    back = unpack(pack(*cols))
    for a, b in zip(cols, back, strict=True):
        np.testing.assert_array_equal(a, b)


def effects(*rows: tuple[int, int, int]) -> Effects:
    return Effects(
        np.array([r[0] for r in rows], np.int8),
        np.array([r[1] for r in rows], np.int16),
        np.array([r[2] for r in rows], np.int16),
    )


def counts_of(windows: FunnelWindows) -> dict[tuple[int, ...], list[int]]:
    rows = windows.close(0, final=True)
    keys = zip(*(k.tolist() for k in unpack(rows.keys)), strict=True)
    return dict(zip(keys, rows.counts.tolist(), strict=True))


def test_counts_by_effect_minute_channel_segment() -> None:
    w = FunnelWindows()
    ts = np.array([T0, T0 + 10, T0 + 20, T0 + 30, T0 + 40, T0 + 50, T0 + MINUTE_MS])
    channel = np.array([0, 0, 1, 0, 0, 0, 0], np.int8)
    segment = np.array([2, 2, 2, 2, -1, 2, 2], np.int8)
    eff = effects(
        (EFFECT_STARTED, 3, 0),
        (EFFECT_ADVANCED, 3, 1),
        (EFFECT_COUNTED, 3, 1),  # another channel
        (EFFECT_COMPLETED, 3, 4),
        (EFFECT_NONE, -1, -1),  # unknown segment, no journey
        (EFFECT_FAILED, 3, 5),
        (EFFECT_ADVANCED, 3, 1),  # the next minute
    )
    w.add_rows(event_rows(ts, channel, segment, eff))
    m = T0 // MINUTE_MS
    assert MEASURES == ("events", "started", "advanced", "completed", "abandoned")
    assert counts_of(w) == {
        (m, 3, 0, 0, 2): [1, 1, 0, 0, 0],
        (m, 3, 1, 0, 2): [1, 0, 1, 0, 0],
        (m, 3, 1, 1, 2): [1, 0, 0, 0, 0],
        (m, 3, 4, 0, 2): [1, 0, 0, 1, 0],
        (m, -1, -1, 0, -1): [1, 0, 0, 0, 0],
        (m, 3, 5, 0, 2): [1, 0, 0, 0, 1],
        (m + 1, 3, 1, 0, 2): [1, 0, 1, 0, 0],
    }


def outcome_records(*rows: tuple[int, int, int, int, int, int]) -> Records:
    ints = np.zeros((N_OUT, len(rows)), np.int64)
    for k, (kind, resolved_at, journey, step, channel, segment) in enumerate(rows):
        ints[O_KIND, k], ints[O_OUTCOME, k] = KIND_OUTCOME, kind
        ints[O_RESOLVED_AT, k], ints[O_JOURNEY, k], ints[O_STEP, k] = resolved_at, journey, step
        ints[O_LAST_CHANNEL, k], ints[O_SEGMENT, k] = channel, segment
    return Records(
        np.zeros(len(rows), np.uint64), ["c"] * len(rows), ints, np.zeros((N_OUT_F, len(rows)))
    )


def test_lapsed_outcomes_count_as_abandoned_at_their_close_time() -> None:
    w = FunnelWindows()
    w.add_rows(
        outcome_rows(
            outcome_records(
                (OUTCOME_LAPSED, T0 + 5, 1, 2, 3, 4),
                (OUTCOME_PROGRESSED, T0 + 6, 1, 2, 3, 4),  # recovered: not abandoned
            )
        )
    )
    assert counts_of(w) == {(T0 // MINUTE_MS, 1, 2, 3, 4): [0, 0, 0, 0, 1]}


def test_merges_across_batches_and_closes_only_ended_minutes() -> None:
    w = FunnelWindows()
    one = effects((EFFECT_STARTED, 0, 0))
    for ts in (T0, T0 + 1, T0 + MINUTE_MS, T0 + 2 * MINUTE_MS - 1):
        w.add_rows(event_rows(np.array([ts]), np.zeros(1, np.int8), np.zeros(1, np.int8), one))
    assert len(w.close(T0 + MINUTE_MS - 1)) == 0  # the first minute has not ended
    closed = w.close(T0 + MINUTE_MS)
    assert (
        closed.keys.tolist()
        == pack(*(np.array([v]) for v in (T0 // MINUTE_MS, 0, 0, 0, 0))).tolist()
    )
    assert closed.counts.tolist() == [[2, 2, 0, 0, 0]]
    assert len(w.close(T0 + MINUTE_MS)) == 0  # emitted once
    rest = w.close(T0 + 2 * MINUTE_MS)
    assert rest.counts.tolist() == [[2, 2, 0, 0, 0]]
    assert len(w.keys) == 0


def test_rows_closed_by_the_call_that_adds_them_are_not_summed_there() -> None:
    """The funnel step hands closed rows on unsummed (the sink sums them off the flow's
    thread); only rows left open are summed once they outgrow the summed ones."""
    keys = pack(
        np.array([T0 // MINUTE_MS] * 6 + [T0 // MINUTE_MS + 5] * 4), *[np.zeros(10, np.int64)] * 4
    )
    counts = np.ones((10, len(MEASURES)), np.int64)
    with mock.patch.multiple(funnel, SUM_FACTOR=1, SUM_MIN_ROWS=2):
        step = FunnelLogic(["a"], None, sum_closed=False)
        rows = FunnelRows(keys, counts)
        (closed,), _ = step.on_batch([FunnelUpdate("a", T0 + 2 * MINUTE_MS, rows)])
        assert len(closed) == 6  # the first minute, unsummed
        assert len(step.windows.keys) == 1  # the open minute, summed after the close
        assert step.windows.counts.tolist() == [[4] * len(MEASURES)]


def test_snapshot_restore_is_an_independent_copy() -> None:
    w = FunnelWindows()
    one = effects((EFFECT_ADVANCED, 2, 1))
    w.add_rows(event_rows(np.array([T0]), np.zeros(1, np.int8), np.zeros(1, np.int8), one))
    back = FunnelWindows.restore(pickle.loads(pickle.dumps(w.snapshot())))
    w.add_rows(event_rows(np.array([T0]), np.zeros(1, np.int8), np.zeros(1, np.int8), one))
    assert back.close(0, final=True).counts.tolist() == [[1, 0, 1, 0, 0]]
    assert w.close(0, final=True).counts.tolist() == [[2, 0, 2, 0, 0]]


def _rows(*minutes_events: tuple[int, int]) -> FunnelRows:
    """Funnel rows of journey 0, step 1, channel 0, segment 0: (minute offset, events)."""
    minutes = np.array([m for m, _ in minutes_events], np.int64) + T0 // MINUTE_MS
    zeros = np.zeros(len(minutes), np.int64)
    keys = pack(minutes, zeros, zeros + 1, zeros, zeros)
    counts = np.zeros((len(minutes), len(MEASURES)), np.int64)
    counts[:, 0] = [e for _, e in minutes_events]
    return FunnelRows(keys, counts)


def _events(rows: list[FunnelRows]) -> dict[int, int]:
    """Events per minute offset of emitted rows."""
    out: dict[int, int] = {}
    for r in rows:
        for key, count in zip(unpack(r.keys)[0].tolist(), r.counts[:, 0].tolist(), strict=True):
            out[key - T0 // MINUTE_MS] = out.get(key - T0 // MINUTE_MS, 0) + count
    return out


def test_a_minute_closes_when_every_shard_has_passed_it_summed_over_shards() -> None:
    logic = FunnelLogic(["a", "b"], None)
    out, _ = logic.on_batch([FunnelUpdate("a", T0 + 2 * MINUTE_MS, _rows((0, 3), (1, 1)))])
    assert out == []  # shard b not heard from: it may still count minute 0
    out, _ = logic.on_batch([FunnelUpdate("b", T0 + MINUTE_MS - 1, _rows((0, 4)))])
    assert out == []  # b has not passed the end of minute 0
    out, _ = logic.on_batch([FunnelUpdate("b", T0 + MINUTE_MS, _rows())])
    assert _events(out) == {0: 7}  # one row for both shards
    out, _ = logic.on_batch([FunnelUpdate("b", T0 + 5 * MINUTE_MS, _rows((1, 2)))])
    assert _events(out) == {1: 3}
    out, _ = logic.on_batch([FunnelUpdate("a", T0 + 3 * MINUTE_MS, _rows((2, 5)), final=True)])
    assert _events(out) == {2: 5}  # a ended: only b's watermark holds minutes now
    out, _ = logic.on_eof()
    assert out == []


def test_a_paused_end_of_input_keeps_open_minutes_for_the_resumed_run() -> None:
    """A run cut short with recovery keeps its open minutes in the snapshot: closing them
    now would write a partial row that the resumed run's row of the same minute replaces."""
    logic = FunnelLogic(["a"], None)
    logic.on_batch([FunnelUpdate("a", T0 + 30_000, _rows((0, 3)))])
    logic.on_batch([FunnelUpdate("a", T0 + 30_000, paused=True)])  # the shard's last output
    out, keep = logic.on_eof()
    assert out == [] and keep == FunnelLogic.RETAIN
    resumed = FunnelLogic(["a"], pickle.loads(pickle.dumps(logic.snapshot())))
    resumed.on_batch([FunnelUpdate("a", T0 + 40_000, _rows((0, 2)))])
    out, _ = resumed.on_eof()
    assert _events(out) == {0: 5}


def test_counts_arriving_with_a_watermark_count_before_it_closes() -> None:
    """Within one batch, counts are added before any watermark moves."""
    logic = FunnelLogic(["a", "b"], None)
    out, _ = logic.on_batch(
        [
            FunnelUpdate("b", T0 + MINUTE_MS, _rows()),
            FunnelUpdate("a", T0 + MINUTE_MS, _rows()),
            FunnelUpdate("b", T0 + MINUTE_MS, _rows((0, 2))),
        ]
    )
    assert _events(out) == {0: 2}


def test_a_restored_funnel_step_emits_what_the_first_would_have() -> None:
    first = FunnelLogic(["a", "b"], None)
    first.on_batch([FunnelUpdate("a", T0, _rows((0, 1), (3, 1))), FunnelUpdate("b", T0, _rows())])
    snap = pickle.loads(pickle.dumps(first.snapshot()))
    rest = [
        FunnelUpdate("a", T0 + 9 * MINUTE_MS, _rows((4, 2))),
        FunnelUpdate("b", T0 + 4 * MINUTE_MS, _rows()),
    ]
    expected, _ = first.on_batch(rest)
    again, _ = FunnelLogic(["a", "b"], snap).on_batch(rest)
    assert _events(again) == _events(expected) == {0: 1, 3: 1}
    assert [(r.keys.tolist(), r.counts.tolist()) for r in again] == [
        (r.keys.tolist(), r.counts.tolist()) for r in expected
    ]


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)))),
            st.tuples(st.just("close"), st.integers(0, 7)),
            st.tuples(st.just("snapshot"), st.just(0)),
        ),
        max_size=30,
    )
)
def test_windows_match_a_dict_of_counts(ops: list[tuple[str, Any]]) -> None:
    """However adds, closes and snapshots interleave, rows equal a plain dict's sums; also
    when added rows are summed into the open ones after every few rows."""
    check_windows(ops)
    with mock.patch.multiple(funnel, SUM_FACTOR=1, SUM_MIN_ROWS=2):
        check_windows(ops)


def check_windows(ops: list[tuple[str, Any]]) -> None:
    w = FunnelWindows()
    reference: dict[int, list[int]] = {}
    base = T0 // MINUTE_MS
    for op, arg in ops:
        if op == "add":
            if not arg:
                continue
            minutes = np.array([base + m for m, _ in arg], np.int64)
            steps = np.array([s for _, s in arg], np.int64)
            zeros = np.zeros(len(arg), np.int64)
            keys = pack(minutes, zeros, steps, zeros, zeros)
            counts = np.ones((len(arg), len(MEASURES)), np.int64)
            w.add_rows(FunnelRows(keys, counts))
            w.compact()
            for key in keys.tolist():
                reference.setdefault(key, [0] * len(MEASURES))
                reference[key] = [c + 1 for c in reference[key]]
        elif op == "close":
            watermark = (base + arg) * MINUTE_MS
            got = w.close(watermark, summed=arg % 2 == 0).summed()  # both kinds of close
            done = {k for k in reference if ((k >> 24) + 1) * MINUTE_MS <= watermark}
            assert len(got.keys) == len(done)  # each key once
            assert _as_dict(got) == {k: reference.pop(k) for k in done}
        else:
            w = FunnelWindows.restore(pickle.loads(pickle.dumps(w.snapshot())))
    final = w.close(0, final=True)
    assert len(final.keys) == len(reference)
    assert _as_dict(final) == reference


def _as_dict(rows: FunnelRows) -> dict[int, list[int]]:
    return dict(zip(rows.keys.tolist(), rows.counts.tolist(), strict=True))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-(2**40), 2**40), st.integers(0, 3)), max_size=300),
    st.integers(1, 6),
)
def test_sum_by_key_equals_its_twin(rows: list[tuple[int, int]], width: int) -> None:
    """The numba kernel and its plain-Python twin give the same keys, order and sums,
    with repeated keys and keys whose slots are taken (linear probing)."""
    half = rows[: len(rows) // 2]
    keys = np.array([k for k, _ in rows] + [k * 1024 for k, _ in half], np.int64)
    values = [v for _, v in rows + half]
    counts = np.array([[(v + c) % 3 for c in range(width)] for v in values], np.int64)
    counts = counts.reshape(len(keys), width)
    got, want = sum_by_key(keys, counts), sum_by_key_twin(keys, counts)
    assert got[0].tolist() == want[0].tolist()
    assert got[1].tolist() == want[1].tolist()
    assert got[1].shape == (len(set(keys.tolist())), width)
    small = sum_by_key(keys, counts.astype(np.int8))  # single events' rows count in int8
    assert small[0].tolist() == want[0].tolist() and small[1].tolist() == want[1].tolist()
    assert small[1].dtype == np.int64


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**42),
            st.integers(-1, 1021),
            st.integers(-1, 61),
            st.integers(0, 3),
            st.integers(-1, 7),
            st.integers(0, 5),
        ),
        max_size=300,
    )
)
def test_event_rows_kernel_equals_its_twin(rows: list[tuple[int, ...]]) -> None:
    """Keys and counts of the numba kernel equal the numpy twin's, for every effect, journey
    and step -1 (an event in no instance), and the widest codes."""
    columns = [np.array([row[c] for row in rows], np.int64) for c in range(6)]
    ts, journey, step, channel, segment, effect = columns
    effects = Effects(effect.astype(np.int8), journey.astype(np.int16), step.astype(np.int16))
    got = event_rows(ts, channel.astype(np.int8), segment.astype(np.int8), effects)
    want = event_rows_twin(ts, channel.astype(np.int8), segment.astype(np.int8), effects)
    assert got.keys.tolist() == want.keys.tolist()
    assert got.counts.tolist() == want.counts.tolist()
