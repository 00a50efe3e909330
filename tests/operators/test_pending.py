"""Events waiting for the watermark: what is handed on, what stays, and what is copied."""

import numpy as np

from ato.columns import EventColumns
from operators.pending import MAX_PARTS, PendingEvents


def events(ts: list[int], first_offset: int = 0) -> EventColumns:
    """Events at ``ts``; ``offset`` numbers them so that their order can be checked."""
    n = len(ts)
    return EventColumns(
        client_key=np.arange(n, dtype=np.uint64),
        client_id=np.array([f"c{i}" for i in range(n)], dtype="S"),
        ts=np.array(ts, np.int64),
        channel=np.zeros(n, np.int8),
        type_code=np.zeros(n, np.int32),
        journey=np.zeros(n, np.int16),
        step=np.zeros(n, np.int16),
        flags=np.zeros(n, np.int8),
        raw=None,
        offset=np.arange(first_offset, first_offset + n, dtype=np.int64),
    )


def test_ready_events_keep_arrival_order_and_the_rest_stays() -> None:
    pending = PendingEvents()
    pending.add(events([5, 30, 10], first_offset=0))
    pending.add(events([], first_offset=100))  # ignored
    pending.add(events([40, 50], first_offset=3))
    pending.add(events([1, 2], first_offset=5))
    assert len(pending) == 7
    ready = pending.pop_ready(20)
    assert ready.offset.tolist() == [0, 2, 5, 6]
    assert ready.ts.tolist() == [5, 10, 1, 2]
    assert len(pending) == 3
    assert pending.all().offset.tolist() == [1, 3, 4]  # still in arrival order
    assert len(pending.pop_ready(20)) == 0  # nothing new before the watermark
    assert pending.pop_ready(41).offset.tolist() == [1, 3]
    assert pending.pop_all().offset.tolist() == [4]
    assert len(pending) == 0 and len(pending.pop_ready(10**12)) == 0


def test_parts_wholly_on_one_side_are_not_copied() -> None:
    pending = PendingEvents()
    early, late = events([1, 2, 3]), events([50, 60])
    pending.add(early)
    pending.add(late)
    assert pending.pop_ready(10) is early
    assert pending.parts[0][0] is late
    assert pending.parts[0][1:] == (50, 60)


def test_event_at_the_watermark_waits() -> None:
    pending = PendingEvents()
    pending.add(events([9, 10, 11]))
    assert pending.pop_ready(10).ts.tolist() == [9]
    assert pending.parts[0][1:] == (10, 11)  # the split part's range is its own


def test_many_parts_left_pending_are_merged_in_order() -> None:
    pending = PendingEvents()
    for i in range(MAX_PARTS + 5):
        pending.add(events([1_000 + i, 1], first_offset=2 * i))
    ready = pending.pop_ready(500)
    assert ready.offset.tolist() == [2 * i + 1 for i in range(MAX_PARTS + 5)]
    assert len(pending.parts) == 1
    assert pending.parts[0][1:] == (1_000, 1_000 + MAX_PARTS + 4)
    assert pending.all().offset.tolist() == [2 * i for i in range(MAX_PARTS + 5)]
