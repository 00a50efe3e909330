"""Rows put in a table's sorting-key order before insert: the order, and ClickHouse's view."""

import re
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.clickhouse import ClickHouseStore, MetricBlock
from sinks.insert_order import (
    in_key_order,
    key_ranks,
    parse_uuids,
    parse_uuids_twin,
    radix_argsort,
    radix_argsort_twin,
    sorted_order,
    uuid_halves,
)
from tests.clickhouse.conftest import BLOCKS

NAMES = ["kyc", "confirm", "Zeta", "", "é-step", "ä", "z", "confirm2", "日本"]


def _expected(columns: list[list[object]]) -> list[int]:
    """Stable order by the keys, strings compared by their UTF-8 bytes."""

    def key(i: int) -> tuple[object, ...]:
        return tuple(v.encode() if isinstance(v, str) else v for v in (c[i] for c in columns))

    return sorted(range(len(columns[0])), key=key)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(NAMES),
            st.sampled_from(NAMES),
            st.integers(-(2**40), 2**40),
            st.text(max_size=4),
        ),
        max_size=40,
    )
)
def test_order_is_a_stable_sort_by_utf8_bytes(rows: list[tuple[str, str, int, str]]) -> None:
    if not rows:
        rows = [("a", "b", 1, "c")]
    first, second, number, text = (list(c) for c in zip(*rows, strict=True))
    table = pa.table(
        {
            "first": pa.array(first).dictionary_encode(),
            "second": pa.array(second),
            "number": pa.array(number, pa.int64()),
            "ts": pa.array(number, pa.timestamp("ms", tz="UTC")),
            "text": pa.array(text),
        }
    )
    for keys in (["first", "second"], ["first", "number", "text"], ["ts", "second", "first"]):
        got = sorted_order(table, keys)
        assert got is not None
        columns: list[list[object]] = [table[k].to_pylist() for k in keys]
        if "ts" in keys:
            columns[0] = number
        assert got.tolist() == _expected(columns)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 64), st.lists(st.integers(0, 2**64 - 1), max_size=300))
def test_radix_argsort_equals_its_twin(bits: int, values: list[int]) -> None:
    """The numba radix sort and numpy's stable sort give the same order, with repeats (kept in
    row order), keys of every width up to 64 bits, and several passes."""
    keys = np.array([v % (1 << bits) for v in values + values[:5]], np.uint64)  # repeats
    got = radix_argsort(keys, bits)
    assert got.tolist() == radix_argsort_twin(keys, bits).tolist()


UUID_TEXT = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _uuid_rows(values: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(values), np.uint8).reshape(len(values), 36)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=30),
    st.integers(0, 35),
    st.sampled_from([None, *b"-0af9gAFz "]),
)
def test_parse_uuids_equals_its_twin(raw: list[bytes], at: int, char: int | None) -> None:
    """The numba parse and its twin agree on UUID text, and on text with one byte changed
    (upper case, a non-hex letter, a dash moved or missing: not UUID text)."""
    texts = [str(uuid.UUID(bytes=b)).encode() for b in raw]
    if char is not None:
        last = bytearray(texts[-1])
        last[at] = char
        texts[-1] = bytes(last)
    rows = _uuid_rows(texts)
    hi, lo = np.zeros(len(texts), np.uint64), np.zeros(len(texts), np.uint64)
    twin_hi, twin_lo = hi.copy(), lo.copy()
    ok = parse_uuids(rows, hi, lo)
    assert ok == parse_uuids_twin(rows, twin_hi, twin_lo)
    valid = all(UUID_TEXT.fullmatch(t) for t in texts)
    assert ok == valid
    if ok:
        assert hi.tolist() == twin_hi.tolist() and lo.tolist() == twin_lo.tolist()
        assert [(h << 64) | lw for h, lw in zip(hi.tolist(), lo.tolist(), strict=True)] == [
            uuid.UUID(t.decode()).int for t in texts
        ]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=40), st.integers(0, 5))
def test_uuid_text_ranks_as_text_does(raw: list[bytes], start: int) -> None:
    """Lower-case UUID text (repeats and an array that starts inside its buffer among the
    cases) ranks from its numbers as it ranks compared as bytes; other text is not parsed."""
    values = [str(uuid.UUID(bytes=b)) for b in raw + raw[:3]]
    array = pa.array(["x" * 36] * start + values).slice(start)
    assert uuid_halves(array) is not None
    ranks = key_ranks(array)
    assert ranks is not None
    as_text = np.asarray(pc.rank(array, sort_keys="ascending", tiebreaker="dense").to_numpy())
    assert (ranks - ranks.min()).tolist() == (as_text - as_text.min()).tolist()
    for other in ([v[:-1] + "A" for v in values], [v + "0" for v in values], [*values, "x"]):
        assert uuid_halves(pa.array(other)) is None


def test_keys_too_wide_to_pack_are_sorted_all_the_same() -> None:
    wide = np.array([2**62, -(2**62), 0, 2**62, 5], np.int64)
    other = np.array([3, 1, 2, 0, 4], np.int64)
    table = pa.table({"a": wide, "b": wide, "c": other})
    order = sorted_order(table, ["a", "b", "c"])
    assert order is not None
    assert order.tolist() == _expected([wide.tolist(), wide.tolist(), other.tolist()])


def test_columns_it_cannot_rank_leave_the_rows_as_they_are() -> None:
    table = pa.table({"f": [2.0, 1.0], "s": pa.array(["b", None]), "t": ["b", "a"]})
    assert key_ranks(table["f"]) is None
    assert key_ranks(table["s"]) is None
    assert sorted_order(table, ["t", "f"]) is None
    assert sorted_order(table, []) is None
    assert in_key_order(table, ["f"]) is table
    assert in_key_order(table, ["t"])["t"].to_pylist() == ["a", "b"]


def _sorted_blocks(store: ClickHouseStore) -> tuple[int, int]:
    # the client's own query: the store's would refresh the hour tables first, which writes
    rows = store.client.query(
        "SELECT event, value FROM system.events"
        " WHERE event IN ('MergeTreeDataWriterBlocks', 'MergeTreeDataWriterBlocksAlreadySorted')"
    ).result_rows
    found = dict(rows)
    return found.get("MergeTreeDataWriterBlocks", 0), found.get(
        "MergeTreeDataWriterBlocksAlreadySorted", 0
    )


def _shuffled(block: MetricBlock, seed: int) -> MetricBlock:
    order = np.random.default_rng(seed).permutation(len(block))
    return MetricBlock(block.table, {k: np.asarray(v)[order] for k, v in block.columns.items()})


@pytest.mark.parametrize("table", sorted(BLOCKS))
def test_clickhouse_finds_every_inserted_block_sorted(store: ClickHouseStore, table: str) -> None:
    """Shuffled rows of every table (names with non-ASCII letters among them) reach
    ClickHouse in its own order: it counts each written block as already sorted."""
    block = _shuffled(BLOCKS[table](500, seed=3), seed=4)
    for name in ("journey", "step", "client_id", "worker"):
        if name in block.columns:  # bytes order is not code point order for every pair
            values = np.asarray(block.columns[name], dtype=object)
            values[::7] = [f"é{v}" for v in values[::7]]
            values[::11] = [f"Ω{v}" for v in values[::11]]
            block.columns[name] = values
    assert store.sorting_key(table)
    blocks, already = _sorted_blocks(store)
    assert store.insert(block) == 500
    blocks_after, already_after = _sorted_blocks(store)
    assert blocks_after > blocks
    assert already_after - already == blocks_after - blocks
    assert blocks_after - blocks == 1  # one partition: one block
    _, [(count,)] = store.query(f"SELECT count() FROM {table}")
    assert count == 500


@pytest.mark.parametrize("table", ["stalls", "decisions", "outcomes"])
def test_blocks_keyed_by_uuid_text_reach_clickhouse_sorted(
    store: ClickHouseStore, table: str
) -> None:
    """Intervention ids as the flow makes them (UUID text), some repeated, ranked from
    their numbers: ClickHouse still finds the shuffled block sorted."""
    block = _shuffled(BLOCKS[table](500, seed=5), seed=6)
    rng = np.random.default_rng(7)
    ids = [str(uuid.UUID(bytes=rng.bytes(16))) for _ in range(500)]
    ids[::9] = ids[1::9][: len(ids[::9])]
    block.columns["intervention_id"] = np.array(ids, object)
    blocks, already = _sorted_blocks(store)
    assert store.insert(block) == 500
    blocks_after, already_after = _sorted_blocks(store)
    assert blocks_after - blocks == 1
    assert already_after - already == 1
    _, [(count,)] = store.query(f"SELECT count() FROM {table} SETTINGS final = 0")
    assert count == 500


def test_a_key_of_expressions_is_not_sorted_here(store: ClickHouseStore) -> None:
    store.client.command(
        f"CREATE TABLE {store.database}.by_expression (a String, b Int64)"
        " ENGINE = MergeTree ORDER BY (lower(a), b)"
    )
    store.migrate()  # forgets the columns it read, so the new table is seen
    assert store.sorting_key("by_expression") == []
    block = MetricBlock("by_expression", {"a": np.array(["B", "a"], object), "b": np.arange(2)})
    assert store.insert(block) == 2
