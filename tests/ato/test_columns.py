"""EventColumns: the segment column defaults to -1 and follows the rows everywhere."""

import dataclasses
import pickle

import numpy as np
import pytest

from ato.columns import EventColumns, RawBytes


def columns(n: int, segment: np.ndarray | None = None, offset: int = 0) -> EventColumns:
    """``n`` rows in the positional order of the fields, ``segment`` last (optional)."""
    rows = np.arange(n)
    return EventColumns(
        rows.astype(np.uint64),
        np.array([f"c{i}" for i in rows], dtype="U8"),
        (rows + offset).astype(np.int64),
        np.zeros(n, np.int8),
        np.zeros(n, np.int32),
        np.full(n, -1, np.int16),
        np.full(n, -1, np.int16),
        np.zeros(n, np.int8),
        np.array([b"x"] * n + [None], object)[:n],
        (rows + offset).astype(np.int64),
        segment,
    )


def test_segment_defaults_to_minus_one() -> None:
    """Callers that do not pass a segment (or pass None) get -1 on every row, as int8."""
    cols = columns(3)
    assert cols.segment.dtype == np.int8
    assert cols.segment.tolist() == [-1, -1, -1]
    positional = EventColumns(*[getattr(cols, f.name) for f in dataclasses.fields(cols)][:10])
    assert positional.segment.tolist() == [-1, -1, -1]
    assert [f.name for f in dataclasses.fields(EventColumns)][-1] == "segment"


def test_segment_follows_take_concat_and_without_raw() -> None:
    a = columns(3, np.array([0, 5, -1], np.int8))
    b = columns(2, np.array([7, 2], np.int8), offset=3)
    assert a.take(np.array([2, 0])).segment.tolist() == [-1, 0]
    assert a.take(np.array([False, True, True])).segment.tolist() == [5, -1]
    assert a.take(slice(1, None)).segment.tolist() == [5, -1]
    both = EventColumns.concat([a, EventColumns.empty(), b])
    assert both.segment.tolist() == [0, 5, -1, 7, 2]
    assert both.segment.dtype == np.int8
    assert a.without_raw().segment.tolist() == [0, 5, -1]
    assert a.without_raw().raw is None
    assert EventColumns.empty().segment.dtype == np.int8
    assert len(EventColumns.empty().segment) == 0


def test_still_frozen() -> None:
    cols = columns(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cols.segment = np.zeros(1, np.int8)  # type: ignore[misc]


def test_raw_bytes_index_like_an_array_without_copying() -> None:
    messages = [b"m0", b"m1", b"m2", b"m3", b"m4"]
    raw = RawBytes(messages, np.array([4, 2, 0, 3]))
    assert len(raw) == 4 and raw[1] == b"m2" and raw[np.int64(-1)] == b"m3"
    assert raw[np.array([3, 0])].tolist() == [b"m3", b"m4"]
    assert list(raw[np.array([True, False, True, False])]) == [b"m4", b"m0"]
    assert raw[1:3].tolist() == [b"m2", b"m0"]
    assert raw[1:3].messages is messages  # the same list, positions only


def test_raw_bytes_concatenate_and_pickle_their_own_rows_only() -> None:
    messages = [b"a", b"b", b"c"]
    one, two = RawBytes(messages, np.array([2])), RawBytes(messages, np.array([0, 1]))
    shared = RawBytes.concat([one, two])
    assert shared.messages is messages and shared.tolist() == [b"c", b"a", b"b"]
    mixed = RawBytes.concat([one, RawBytes([b"x"]), np.array([b"y"], object)])
    assert mixed.tolist() == [b"c", b"x", b"y"]
    copy = pickle.loads(pickle.dumps(one))
    assert copy.messages == [b"c"] and copy.tolist() == [b"c"]


def test_events_with_raw_bytes_take_and_concat() -> None:
    messages = [b"e0", b"e1", b"e2"]
    a = dataclasses.replace(columns(2), raw=RawBytes(messages, np.array([0, 1])))
    b = dataclasses.replace(columns(1, offset=2), raw=RawBytes(messages, np.array([2])))
    both = EventColumns.concat([a, b])
    assert isinstance(both.raw, RawBytes) and both.raw.messages is messages
    assert both.take(np.array([2, 0])).raw.tolist() == [b"e2", b"e0"]  # type: ignore[union-attr]
    with_array = EventColumns.concat([a, columns(1)])
    assert with_array.raw.tolist() == [b"e0", b"e1", b"x"]  # type: ignore[union-attr]
