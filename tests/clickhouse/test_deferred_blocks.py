"""Deferred metric blocks: made by the sink at insert, equal to the blocks made at once."""

import pickle
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from ato.catalog import CHANNELS, SEGMENTS, load_catalog
from operators.batches import ShardOutput
from operators.funnel import MINUTE_MS, FunnelLogic, FunnelRows, FunnelUpdate, pack
from operators.interventions import InterventionBatch
from operators.metrics import MetricRows
from sinks.clickhouse import (
    ClickHouseSink,
    ClickHouseStore,
    DeferredBlock,
    MetricBlock,
    _arrow_column,
    _concat,
)
from sinks.exceptions import ClickHouseError
from state.base import Records
from state.layout import (
    KIND_OUTCOME,
    KIND_STALL,
    N_OUT,
    N_OUT_F,
    O_ATTEMPT,
    O_DEADLINE,
    O_ENTERED,
    O_JOURNEY,
    O_KIND,
    O_LAST_CHANNEL,
    O_LAST_TYPE,
    O_OUTCOME,
    O_PROGRESS,
    O_RESOLVE_CHANNEL,
    O_RESOLVED_AT,
    O_SEGMENT,
    O_START,
    O_STEP,
    OUTCOME_NAMES,
)
from tests.clickhouse.conftest import T0, settings

CATALOG = load_catalog()


def records(n: int, seed: int, kind: int) -> Records:
    """``n`` stall (or outcome) records with valid codes of the default catalog."""
    rng = np.random.default_rng(seed)
    ints = np.zeros((N_OUT, n), np.int64)
    journeys = rng.integers(0, len(CATALOG.journeys), n)
    ints[O_JOURNEY] = journeys
    ints[O_STEP] = [rng.integers(0, len(CATALOG.journeys[j].steps)) for j in journeys]
    ints[O_START] = T0 + rng.integers(0, 10**6, n)
    ints[O_ENTERED] = ints[O_START] + rng.integers(0, 10**5, n)
    ints[O_PROGRESS] = ints[O_ENTERED]
    ints[O_DEADLINE] = ints[O_ENTERED] + rng.integers(1, 10**5, n)
    ints[O_LAST_TYPE] = rng.integers(0, len(CATALOG.type_names), n)
    ints[O_LAST_CHANNEL] = rng.integers(0, len(CHANNELS), n)
    ints[O_ATTEMPT] = rng.integers(1, 4, n)
    ints[O_SEGMENT] = rng.integers(-1, len(SEGMENTS), n)
    ints[O_KIND] = kind
    if kind == KIND_OUTCOME:
        ints[O_OUTCOME] = rng.integers(1, len(OUTCOME_NAMES), n)
        ints[O_RESOLVED_AT] = ints[O_DEADLINE] + rng.integers(0, 10**5, n)
        ints[O_RESOLVE_CHANNEL] = rng.integers(-1, len(CHANNELS), n)
    else:
        ints[O_RESOLVED_AT] = ints[O_RESOLVE_CHANNEL] = -1
    floats = rng.random((N_OUT_F, n)) * 3
    clients = [f"client-{seed}-{i}" for i in range(n)]
    return Records(np.arange(n, dtype=np.uint64), clients, ints, floats)


def output(seed: int, stalls: int, outcomes: int) -> ShardOutput:
    """A shard output with ``stalls`` stalls and ``outcomes`` outcomes (ids left to hash)."""
    return ShardOutput(
        shard="0",
        interventions=InterventionBatch.empty(),
        late=None,
        late_count=0,
        applied=0,
        watermark=T0,
        pending=0,
        open_instances=0,
        state_bytes=0,
        stalls=records(stalls, seed, KIND_STALL),
        outcomes=records(outcomes, seed + 1000, KIND_OUTCOME),
        emitted_at_ms=T0 + seed,
    )


def eager(rows: MetricRows, out: ShardOutput) -> dict[str, MetricBlock]:
    """The blocks of ``out`` made at once, one output at a time."""
    ids = rows.builder.ids(out.stalls)
    common = rows._common(out.stalls, ids)
    return {
        "stalls": rows.stalls(out.stalls, out.emitted_at_ms, common),
        "decisions": rows.decisions(out.stalls, out.emitted_at_ms, common),
        "outcomes": rows.outcome_rows(out.outcomes),
    }


def as_lists(block: MetricBlock, types: dict[str, str]) -> dict[str, list[Any]]:
    out = {}
    for name, values in block.columns.items():
        column = _arrow_column(values, types[name])
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        out[name] = column.to_pylist()
    return out


def test_deferred_blocks_of_many_outputs_equal_the_blocks_made_at_once(
    url: str, database: str
) -> None:
    rows = MetricRows(CATALOG)
    outs = [
        output(seed, stalls, outcomes)
        for seed, stalls, outcomes in [(1, 5, 3), (2, 7, 0), (3, 1, 4)]
    ]
    sink = ClickHouseSink(settings(database, flush_rows=10**6), url)
    sink.bind(rows)
    part = sink.build_part("metrics", "clickhouse", None)
    try:
        written = [block for out in outs for block in rows(out)]
        assert {type(b) for b in written} == {DeferredBlock}
        part.write_batch(written)
        part.flush()
        stats = part.stats()
        assert {t: (s.inserts, s.inserted_rows) for t, s in stats.items()} == {
            "stalls": (1, 13),
            "decisions": (1, 13),
            "outcomes": (1, 7),
        }  # fmt: skip: one insert per table, of every output's rows
        for table in ("stalls", "decisions", "outcomes"):
            types = part.store.columns(table)
            blocks = [b for b in written if b.table == table]
            joined = part._joined(table, blocks)
            assert isinstance(joined, DeferredBlock) and len(joined) == sum(map(len, blocks))
            made = part._made(joined)
            once = _concat(table, [eager(rows, out)[table] for out in outs], types)
            assert as_lists(made, types) == as_lists(once, types)
            _, [(n,)] = part.store.query(f"SELECT count() FROM {table}")
            assert n == len(made)
    finally:
        part.close()


def test_deferred_blocks_survive_pickling_between_processes() -> None:
    rows = MetricRows(CATALOG)
    [stalls, decisions, outcomes] = rows(output(5, 4, 2))
    for block in (stalls, decisions, outcomes):
        assert isinstance(block, DeferredBlock)
        copy = pickle.loads(pickle.dumps(block))
        mine = rows.block(block.kind, list(block.parts))
        theirs = rows.block(copy.kind, list(copy.parts))
        assert mine.columns.keys() == theirs.columns.keys()
        for name, a in mine.columns.items():
            b = theirs.columns[name]
            assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a.equals(b)


def test_a_sink_without_a_builder_refuses_deferred_blocks(url: str, database: str) -> None:
    [block, *_] = MetricRows(CATALOG)(output(1, 2, 0))
    part = ClickHouseSink(settings(database), url).build_part("metrics", "clickhouse", None)
    try:
        with pytest.raises(ClickHouseError, match="stalls from 'ato.metrics/.*builder is 'none'"):
            part.write_batch([block])
    finally:
        part.close()


def test_a_sink_refuses_a_second_builder_of_another_catalog() -> None:
    sink = ClickHouseSink(settings("x"), "chdb:///nowhere")
    rows = MetricRows(CATALOG)
    sink.bind(rows)
    sink.bind(MetricRows(CATALOG))  # the same catalog: the same codes
    other = MetricRows(CATALOG)
    other.source = "ato.metrics/another"
    with pytest.raises(ClickHouseError, match="not 'ato.metrics/another'"):
        sink.bind(other)


class BrokenRows(MetricRows):
    """Makes stall blocks without their priority column."""

    def block(self, kind: str, parts: list[Any]) -> MetricBlock:
        made = super().block(kind, parts)
        columns = {k: v for k, v in made.columns.items() if k != "priority"}
        return replace(made, columns=columns)


@pytest.mark.parametrize("background", [True, False], ids=["background", "inline"])
def test_a_deferred_block_that_makes_a_bad_block_fails_loudly_not_retried(
    url: str, database: str, background: bool
) -> None:
    rows = BrokenRows(CATALOG)
    sink = ClickHouseSink(settings(database, background_inserts=background), url)
    sink.bind(rows)
    part = sink.build_part("metrics", "clickhouse", None)
    try:
        [block, *_] = rows(output(1, 3, 0))
        part.write_batch([block])  # taken: its block is made when it is inserted
        with pytest.raises(
            ClickHouseError, match=r"insert of 3 rows into stalls failed: .*priority"
        ):
            part.flush()
        assert part.stats()["stalls"].failed_inserts == 0  # a bug: not retried as an outage
    finally:
        part.store.close()


def funnel_updates(seed: int) -> list[FunnelUpdate]:
    """Two shards' unsummed funnel rows over a few minutes, keys repeating across them."""
    rng = np.random.default_rng(seed)
    out = []
    for shard in ("0", "1"):
        n = 300
        keys = pack(
            T0 // MINUTE_MS + rng.integers(0, 4, n), rng.integers(0, 3, n), rng.integers(0, 3, n),
            rng.integers(0, 2, n), rng.integers(-1, 2, n),
        )  # fmt: skip
        counts = rng.integers(0, 3, (n, 5)).astype(np.int64)
        out.append(FunnelUpdate(shard, T0 + 2 * MINUTE_MS, FunnelRows(keys, counts)))
    out.append(FunnelUpdate("0", 0, final=True))
    out.append(FunnelUpdate("1", 0, final=True))
    return out


def test_deferred_funnel_minutes_are_summed_by_the_sink(url: str, database: str) -> None:
    """The funnel step may leave a closed minute's rows unsummed; the sink adds them up when
    it inserts them, into the rows the summing step would have made, and its row accounting
    still ends at nothing pending."""
    rows = MetricRows(CATALOG)
    summing, leaving = FunnelLogic(["0", "1"], None), FunnelLogic(["0", "1"], None, False)
    updates = funnel_updates(3)
    once = [*summing.on_batch(updates[:2])[0], *summing.on_eof()[0]]
    later = [*leaving.on_batch(updates[:2])[0], *leaving.on_eof()[0]]
    assert sum(map(len, later)) > sum(map(len, once))  # keys repeat in the unsummed rows
    sink = ClickHouseSink(settings(database, flush_rows=10**6), url)
    sink.bind(rows)
    part = sink.build_part("metrics", "clickhouse", None)
    try:
        part.write_batch([rows.funnel_later(r) for r in later])
        part.flush()
        stats = part.stats()["funnel_minute"]
        assert (stats.inserts, stats.pending_rows) == (1, 0)
        assert stats.inserted_rows == sum(map(len, once))
        types = part.store.columns("funnel_minute")
        want = _concat("funnel_minute", [rows.funnel(r) for r in once], types)
        got = part._made(part._joined("funnel_minute", [rows.funnel_later(r) for r in later]))
        key = ("minute", "journey", "step", "channel", "segment")
        assert sorted(zip(*as_lists(got, types).values(), strict=True)) == sorted(
            zip(*as_lists(want, types).values(), strict=True)
        )
        assert list(as_lists(got, types))[: len(key)] == list(key)
    finally:
        part.close()


def test_mixed_funnel_blocks_retried_after_a_failure_leave_nothing_pending(
    url: str, database: str
) -> None:
    """A deferred funnel block makes fewer rows than it was buffered as (they are summed);
    joined with an eager block, failed and retried, the rows waiting still end at none."""
    rows = MetricRows(CATALOG)
    updates = funnel_updates(4)
    summing, leaving = FunnelLogic(["0", "1"], None), FunnelLogic(["0", "1"], None, False)
    once = [*summing.on_batch(updates[:2])[0], *summing.on_eof()[0]]
    later = [*leaving.on_batch(updates[:2])[0], *leaving.on_eof()[0]]
    far = pack(*(np.array([v]) for v in (T0 // MINUTE_MS + 99, 0, 0, 0, 0)))  # a key of its own
    eager = rows.funnel(FunnelRows(far, np.ones((1, 5), np.int64)))
    sink = ClickHouseSink(settings(database, flush_rows=10**6, retry_timeout_s=60.0), url)
    sink.bind(rows)
    part = sink.build_part("metrics", "clickhouse", None)
    try:
        part.write_batch([eager, *(rows.funnel_later(r) for r in later)])
        with ClickHouseStore(url, database) as admin:
            admin.client.command(f"DETACH TABLE {database}.funnel_minute")
            part._try_insert("funnel_minute", part.clock(), force=True)
            part.wait_for_inserts()
            stats = part.stats()["funnel_minute"]
            assert stats.failed_inserts == 1 and stats.pending_rows == 1 + sum(map(len, once))
            admin.client.command(f"ATTACH TABLE {database}.funnel_minute")
        part.flush()
        stats = part.stats()["funnel_minute"]
        assert (stats.inserts, stats.pending_rows) == (1, 0)
        assert stats.inserted_rows == 1 + sum(map(len, once))
    finally:
        part.close()
