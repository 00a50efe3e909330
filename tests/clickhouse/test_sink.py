"""The ClickHouse sink partition on a real chDB: flush triggers, retries, loud failure."""

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from operators.metrics import Names
from sinks.clickhouse import (
    ClickHouseSink,
    ClickHouseSinkPartition,
    ClickHouseStore,
    MetricBlock,
)
from sinks.exceptions import ClickHouseError
from tests.clickhouse.conftest import funnel_block, health_block, settings, stall_block


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=[True, False], ids=["background", "inline"])
def part(
    url: str, database: str, clock: Clock, request: pytest.FixtureRequest
) -> Iterator[ClickHouseSinkPartition]:
    """A sink partition with flush_rows 100 and a 60 s interval on the test clock.

    Both insert modes; tests call ``wait_for_inserts`` before looking at what landed.
    """
    config = settings(
        database,
        flush_rows=100,
        flush_interval_s=60.0,
        retry_timeout_s=30.0,
        background_inserts=request.param,
    )
    built = ClickHouseSink(config, url, clock=clock).build_part("metrics", "clickhouse", None)
    yield built
    built.store.close()  # idempotent; tests that close the partition closed it already


def count(store: ClickHouseStore, table: str, final: bool = False) -> int:
    """Rows of ``table``; without ``final`` every stored copy counts."""
    _, [(n,)] = store.query(f"SELECT count() FROM {table}", settings={"final": int(final)})
    return int(n)


def split(block: MetricBlock, *sizes: int) -> list[MetricBlock]:
    """``block`` cut into consecutive blocks of ``sizes`` rows."""
    out, start = [], 0
    for size in sizes:
        cols = {k: v[start : start + size] for k, v in block.columns.items()}
        out.append(MetricBlock(block.table, cols))
        start += size
    return out


def test_a_full_table_is_inserted_as_one_block(part: ClickHouseSinkPartition) -> None:
    a, b, c = split(funnel_block(150), 60, 60, 30)
    part.write_batch([a, stall_block(10)])
    part.wait_for_inserts()
    assert count(part.store, "funnel_minute") == 0  # 60 < flush_rows
    part.write_batch([b])
    part.wait_for_inserts()
    assert count(part.store, "funnel_minute") == 120  # 120 >= 100: both blocks, one insert
    assert count(part.store, "stalls") == 0  # not full, not due
    part.write_batch([c])
    part.wait_for_inserts()
    stats = part.stats()
    assert (stats["funnel_minute"].inserts, stats["funnel_minute"].inserted_rows) == (1, 120)
    assert stats["funnel_minute"].pending_rows == 30
    assert stats["stalls"].pending_rows == 10


def test_the_interval_flushes_every_table_on_the_next_write(
    part: ClickHouseSinkPartition, clock: Clock
) -> None:
    part.write_batch([funnel_block(5), stall_block(7)])
    part.wait_for_inserts()
    clock.now += 59.0
    part.write_batch([health_block(2)])
    part.wait_for_inserts()
    assert count(part.store, "stalls") == 0
    clock.now += 1.0
    part.write_batch([])  # an empty batch still checks the interval
    part.wait_for_inserts()
    assert (count(part.store, "funnel_minute"), count(part.store, "stalls")) == (5, 7)
    assert count(part.store, "flow_health") == 2
    assert all(s.pending_rows == 0 for s in part.stats().values())


def test_snapshot_makes_everything_durable(part: ClickHouseSinkPartition) -> None:
    part.write_batch([funnel_block(5), stall_block(7), health_block(3)])
    assert part.snapshot() is None
    assert [count(part.store, t) for t in ("funnel_minute", "stalls", "flow_health")] == [5, 7, 3]
    assert {t: s.inserts for t, s in part.stats().items()} == {
        "funnel_minute": 1, "stalls": 1, "flow_health": 1
    }  # fmt: skip


def test_without_recovery_an_epoch_end_waits_for_nothing_and_close_writes_all(
    url: str, database: str, clock: Clock
) -> None:
    config = settings(database, flush_rows=100, flush_interval_s=60.0, retry_timeout_s=30.0)
    sink = ClickHouseSink(config, url, clock=clock, epoch_flush=False)
    part = sink.build_part("metrics", "clickhouse", None)
    part.write_batch([funnel_block(5), stall_block(7)])
    part.snapshot()
    part.wait_for_inserts()
    assert count(part.store, "funnel_minute") == 0  # neither full nor due: still buffered
    assert part.stats()["funnel_minute"].pending_rows == 5
    part.close()
    with ClickHouseStore(url, database) as store:
        assert (count(store, "funnel_minute"), count(store, "stalls")) == (5, 7)


def test_close_writes_the_rest_and_a_read_finds_the_hour_tables_current(
    part: ClickHouseSinkPartition, url: str, database: str
) -> None:
    block = funnel_block(40)
    part.write_batch([block])
    status = part.store._rows(  # not query(): that would refresh them
        f"SELECT DISTINCT status FROM system.view_refreshes WHERE database = '{database}'"
    )
    assert status == [("Disabled",)]  # no scheduled refresh while a run writes
    part.close()
    with ClickHouseStore(url, database) as store:
        assert store.rollups_stale()  # close wrote rows and refreshed nothing
        assert count(store, "funnel_minute") == 40
        _, [(events,)] = store.query("SELECT sum(events) FROM funnel_hour")
        assert events == block.columns["events"].sum()


def test_a_malformed_block_fails_the_write_at_once(part: ClickHouseSinkPartition) -> None:
    bad = funnel_block(3)
    del bad.columns["events"]
    with pytest.raises(ClickHouseError, match=r"missing \['events'\]"):
        part.write_batch([bad])


def test_an_insert_failing_other_than_by_clickhouse_fails_loudly_naming_its_rows(
    part: ClickHouseSinkPartition, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug below the sink (not a ClickHouse error, so not retried) stops the run with a
    message naming the table and the rows not written, which stay buffered."""

    def broken(block: object, validated: bool = False) -> int:
        msg = "converter bug"
        raise RuntimeError(msg)

    monkeypatch.setattr(part.store, "insert", broken)
    with pytest.raises(ClickHouseError, match=r"insert of 120 rows into funnel_minute failed"):
        part.write_batch([funnel_block(120)])
        part.wait_for_inserts()
    assert sum(len(b) for b in part.buffers["funnel_minute"]) == 120


def test_inserts_into_a_detached_table_are_retried_and_land_once(
    part: ClickHouseSinkPartition, url: str, database: str, clock: Clock
) -> None:
    block = funnel_block(250)
    first, second, third = split(block, 120, 80, 50)
    with ClickHouseStore(url, database) as admin:
        admin.client.command(f"DETACH TABLE {database}.funnel_minute")
        part.write_batch([first])  # full: the insert fails, the rows stay
        part.wait_for_inserts()
        stats = part.stats()["funnel_minute"]
        assert (stats.failed_inserts, stats.pending_rows) == (1, 120)
        assert "funnel_minute" in stats.last_error
        part.write_batch([second])  # within the backoff: no new attempt
        part.wait_for_inserts()
        assert part.stats()["funnel_minute"].failed_inserts == 1
        clock.now += 1.0
        part.write_batch([third])  # past the backoff: retried, fails again
        part.wait_for_inserts()
        assert part.stats()["funnel_minute"].failed_inserts == 2
        admin.client.command(f"ATTACH TABLE {database}.funnel_minute")
        part.snapshot()
        stats = part.stats()["funnel_minute"]
        assert (stats.inserted_rows, stats.pending_rows, stats.inserts) == (250, 0, 1)
        assert count(admin, "funnel_minute") == 250  # every row, and none twice
        _, [(events,)] = admin.query("SELECT sum(events) FROM funnel_minute")
        assert events == block.columns["events"].sum()


def test_a_failed_table_is_retried_at_its_retry_time_not_only_at_the_interval(
    url: str, database: str, clock: Clock
) -> None:
    """With ``flush_interval_s`` (60 s) above ``retry_timeout_s`` (10 s), a failed table waited
    for the interval and the run failed at the timeout after one attempt, though the table
    had come back at once."""
    config = settings(database, flush_rows=100, flush_interval_s=60.0, retry_timeout_s=10.0)
    part = ClickHouseSink(config, url, clock=clock).build_part("metrics", "clickhouse", None)
    with ClickHouseStore(url, database) as admin:
        admin.client.command(f"DETACH TABLE {database}.funnel_minute")
        part.write_batch([funnel_block(50)])  # not full: waits for the interval
        clock.now += 60.0
        part.write_batch([])  # the interval: the insert fails
        part.wait_for_inserts()
        assert part.stats()["funnel_minute"].failed_inserts == 1
        admin.client.command(f"ATTACH TABLE {database}.funnel_minute")
        clock.now += 1.0  # past the backoff, long before the next interval
        part.write_batch([])
        part.wait_for_inserts()
        assert part.stats()["funnel_minute"].inserted_rows == 50
        assert count(admin, "funnel_minute") == 50
    part.close()


def test_the_retry_timeout_counts_from_the_start_of_the_first_failed_attempt(
    part: ClickHouseSinkPartition, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt that takes 8 s to fail counts those 8 s: with a 30 s timeout the run fails
    30 s after it began, not 30 s after its failure was noticed."""
    attempts = []

    def slow_failure(block: object, validated: bool = False) -> int:
        if not attempts:
            clock.now += 8.0  # the first attempt takes 8 s; the retries fail at once
        attempts.append(clock.now)
        msg = "server went away"
        raise ClickHouseError(msg)

    monkeypatch.setattr(part.store, "insert", slow_failure)
    started = clock.now
    part.write_batch([funnel_block(120)])
    part.wait_for_inserts()
    assert clock.now == started + 8.0
    clock.now = started + 29.9
    part.write_batch([])  # retried: fails again
    part.wait_for_inserts()
    assert len(attempts) == 2
    clock.now = started + 30.0
    with pytest.raises(ClickHouseError, match="funnel_minute have failed for 30.0s"):
        part.write_batch([])


def test_an_epoch_end_waits_for_a_short_outage(url: str, database: str) -> None:
    config = settings(database, flush_rows=1000, retry_timeout_s=20.0)
    part = ClickHouseSink(config, url).build_part("metrics", "clickhouse", None)
    with ClickHouseStore(url, database) as admin:
        admin.client.command(f"DETACH TABLE {database}.stalls")
        part.write_batch([stall_block(30)])
        timer = threading.Timer(0.6, admin.client.command, [f"ATTACH TABLE {database}.stalls"])
        started = time.monotonic()
        timer.start()
        part.snapshot()  # blocks, retrying, until the table is back
        timer.join()
        assert 0.5 < time.monotonic() - started < 10
        assert part.stats()["stalls"].failed_inserts >= 2
        assert count(admin, "stalls") == 30
    part.close()


def test_an_outage_longer_than_the_retry_timeout_fails_loudly(url: str, database: str) -> None:
    config = settings(database, flush_rows=1000, retry_timeout_s=0.5)
    part = ClickHouseSink(config, url).build_part("metrics", "clickhouse", None)
    with ClickHouseStore(url, database) as admin:
        admin.client.command(f"DETACH TABLE {database}.stalls")
        part.write_batch([stall_block(30)])
        started = time.monotonic()
        with pytest.raises(ClickHouseError, match=r"stalls have failed for .*30 rows not written"):
            part.snapshot()
        assert time.monotonic() - started < 5
        assert part.stats()["stalls"].pending_rows == 30  # kept, never dropped
        admin.client.command(f"ATTACH TABLE {database}.stalls")
    part.store.close()


def test_more_rows_waiting_than_max_buffer_rows_fail_loudly(
    url: str, database: str, clock: Clock
) -> None:
    config = settings(database, flush_rows=100, max_buffer_rows=250)
    part = ClickHouseSink(config, url, clock=clock).build_part("metrics", "clickhouse", None)
    with ClickHouseStore(url, database) as admin:
        admin.client.command(f"DETACH TABLE {database}.funnel_minute")
        part.write_batch([funnel_block(200)])
        with pytest.raises(ClickHouseError, match="exceed clickhouse.max_buffer_rows = 250"):
            part.write_batch([funnel_block(100, seed=1)])
        admin.client.command(f"ATTACH TABLE {database}.funnel_minute")
    part.store.close()


def test_over_max_buffer_rows_the_flow_waits_only_until_within_it(
    url: str, database: str, clock: Clock
) -> None:
    """Over the bound the flow waits for inserts only until the rows waiting are within it,
    not for every insert in flight (here a held funnel insert)."""
    config = settings(database, flush_rows=100, max_buffer_rows=250)
    part = ClickHouseSink(config, url, clock=clock).build_part("metrics", "clickhouse", None)
    held = {"stalls": threading.Event(), "funnel_minute": threading.Event()}
    insert = part._insert

    def held_insert(block: MetricBlock) -> int:
        held[block.table].wait(30)
        return insert(block)

    part._insert = held_insert  # type: ignore[method-assign]
    timers = [
        threading.Timer(0.5, held["stalls"].set),
        threading.Timer(15, held["funnel_minute"].set),
    ]
    for timer in timers:
        timer.start()
    try:
        part.write_batch([stall_block(200)])  # in flight, held for 0.5 s
        started = time.monotonic()
        part.write_batch([funnel_block(100)])  # 300 waiting: once the stalls are in, 100
        assert time.monotonic() - started < 10
        assert sum(s.pending_rows for s in part.stats().values()) == 100  # still in flight
        held["funnel_minute"].set()
        part.close()
        assert part.failure is None
        with ClickHouseStore(url, database) as store:
            assert count(store, "stalls") == 200
            assert count(store, "funnel_minute") == 100
    finally:
        for event in held.values():
            event.set()
        for timer in timers:
            timer.cancel()


def test_a_flow_writes_keyed_blocks_through_one_partition(url: str, database: str) -> None:
    from bytewax import operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSource, cluster_main

    blocks = [funnel_block(50, seed=s, first_minute=10 * s) for s in range(6)] + [stall_block(20)]
    flow = Dataflow("metrics_test")
    items = op.input("in", flow, TestingSource(blocks))
    keyed = op.key_on("key", items, lambda block: block.table)
    op.output("out", keyed, ClickHouseSink(settings(database), url))
    cluster_main(flow, [], 0, worker_count_per_proc=2)
    with ClickHouseStore(url, database) as store:
        assert count(store, "funnel_minute") == 300
        assert count(store, "stalls") == 20
        _, [(hours,)] = store.query("SELECT count() FROM funnel_hour")
        assert hours > 0  # the read refreshed the rollups


def test_blocks_of_both_string_kinds_concatenate(part: ClickHouseSinkPartition) -> None:
    a = funnel_block(3)
    b = funnel_block(3, seed=1, first_minute=1)
    b.columns["journey"] = b.columns["journey"].astype(str)  # numpy unicode, not objects
    part.write_batch([a, b])
    part.snapshot()
    _, rows = part.store.query("SELECT DISTINCT minute FROM funnel_minute ORDER BY minute")
    assert len(rows) == 2
    assert (
        np.sum(a.columns["events"]) + np.sum(b.columns["events"])
        == part.store.query("SELECT sum(events) FROM funnel_minute")[1][0][0]
    )


def as_dictionary(values: np.ndarray, names: list[str]) -> pa.DictionaryArray:
    """``values`` as codes into the dictionary ``names``."""
    index = {name: k for k, name in enumerate(names)}
    codes = np.array([index[v] for v in values], np.int32)
    return pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(names, pa.string()))


def test_arrow_text_columns_with_different_dictionaries_insert_as_one_block(
    part: ClickHouseSinkPartition,
) -> None:
    """Dictionary columns of several blocks (different dictionaries) plus plain strings mix."""
    whole = funnel_block(150)
    plain, first, second = split(whole, 50, 50, 50)
    names = sorted(set(whole.columns["journey"]))
    first.columns["journey"] = as_dictionary(first.columns["journey"], [*names, "unused"])
    second.columns["journey"] = as_dictionary(second.columns["journey"], names[::-1])
    second.columns["step"] = Names(second.columns["step"])[np.arange(len(second))]
    part.write_batch([plain, first, second])
    part.wait_for_inserts()
    assert part.stats()["funnel_minute"].inserts == 1
    _, rows = part.store.query(
        "SELECT journey, step, count() FROM funnel_minute GROUP BY ALL ORDER BY ALL"
    )
    expected = Counter(zip(whole.columns["journey"], whole.columns["step"], strict=True))
    assert {(j, s): n for j, s, n in rows} == dict(expected)


def test_an_arrow_column_must_hold_text(part: ClickHouseSinkPartition) -> None:
    block = funnel_block(3)
    block.columns["journey"] = pa.array([1, 2, 3])
    with pytest.raises(ClickHouseError, match=r"column journey .* got Arrow int64"):
        part.write_batch([block])


def test_blocks_with_different_numpy_dtypes_for_a_column_concatenate(
    part: ClickHouseSinkPartition,
) -> None:
    a = funnel_block(3)
    b = funnel_block(3, first_minute=1)
    b.columns["minute"] = b.columns["minute"].astype("datetime64[ms]")  # valid, other dtype
    part.write_batch([a, b])
    part.snapshot()
    _, [(n, first)] = part.store.query("SELECT count(), min(minute) FROM funnel_minute")
    assert n == 6
    assert int(first.timestamp() * 1000) == int(a.columns["minute"].min())


def test_after_a_failure_close_neither_retries_nor_raises(url: str, database: str) -> None:
    """Bytewax closes the partition while it unwinds from the failure: a second exception
    there aborted the process (no message; chDB then hung it)."""
    config = settings(database, flush_rows=1000, retry_timeout_s=0.3)
    sink = ClickHouseSink(config, url)
    part = sink.build_part("metrics", "clickhouse", None)
    with ClickHouseStore(url, database) as admin:
        admin.client.command(f"DETACH TABLE {database}.stalls")
        part.write_batch([stall_block(30)])
        with pytest.raises(ClickHouseError, match="stalls have failed") as failed:
            part.snapshot()
        started = time.monotonic()
        part.close()
        assert time.monotonic() - started < 0.3  # no second round of retries
        with pytest.raises(ClickHouseError) as again:
            sink.raise_failure()
        assert again.value is failed.value
        admin.client.command(f"ATTACH TABLE {database}.stalls")


def test_a_final_write_that_fails_at_close_is_raised_after_the_flow(
    url: str, database: str
) -> None:
    config = settings(database, flush_rows=1000, retry_timeout_s=0.3)
    sink = ClickHouseSink(config, url, epoch_flush=False)
    part = sink.build_part("metrics", "clickhouse", None)
    sink.raise_failure()  # nothing failed yet
    with ClickHouseStore(url, database) as admin:
        admin.client.command(f"DETACH TABLE {database}.stalls")
        part.write_batch([stall_block(30)])
        part.close()  # the rows cannot be written: logged, kept, not raised here
        with pytest.raises(ClickHouseError, match=r"stalls have failed .*30 rows not written"):
            sink.raise_failure()
        admin.client.command(f"ATTACH TABLE {database}.stalls")


FAILING_FLOW = """
import sys
import time
from datetime import timedelta
import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from sinks.clickhouse import ClickHouseSink
from tests.clickhouse.conftest import settings, stall_block

url = f"chdb://{sys.argv[1]}"
config = settings("ato", flush_rows=1000, retry_timeout_s=0.5)
sink = ClickHouseSink(config, url)


def slow(item):
    # spreads the blocks over many epochs; the table goes away after the third
    number, block = item
    if number == 3:
        sink.built[0].store.client.command("DETACH TABLE ato.stalls")
    time.sleep(0.05)
    return block


flow = Dataflow("failing_metrics")
items = op.input("in", flow, TestingSource([(s, stall_block(30, seed=s)) for s in range(40)]))
blocks = op.map("slow", items, slow)
op.output("out", op.key_on("key", blocks, lambda b: b.table), sink)
try:
    run_main(flow, epoch_interval=timedelta(seconds=0.1))
    sink.raise_failure()
except Exception as exc:
    print("raised:", exc, exc.__cause__)
    sys.exit(1)
"""


def test_a_flow_whose_metrics_fail_raises_the_error_instead_of_aborting(tmp_path: Path) -> None:
    """The writer fails mid-flow (a table gone): the error reaches the caller. Before, the
    partition's close raised it again as Bytewax unwound, which aborted the process, and
    chDB's signal handler then hung it."""
    done = subprocess.run(
        [sys.executable, "-c", FAILING_FLOW, str(tmp_path / "clickhouse")],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2], check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert "stalls have failed" in done.stdout
