"""ClickHouseStore on a real chDB: round trips, duplicates, rollups, URLs and chDB's limits."""

import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from sinks.clickhouse import ClickHouseStore, MetricBlock, _message
from sinks.exceptions import ClickHouseError
from tests.clickhouse.conftest import BLOCKS, T0, funnel_block, health_block, outcome_block


def _ms(value: datetime) -> int:
    return int(value.replace(tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize("table", sorted(BLOCKS))
def test_every_table_round_trips_its_columns(store: ClickHouseStore, table: str) -> None:
    block = BLOCKS[table](300, seed=1)
    assert store.insert(block) == 300
    names = list(block.columns)
    columns, rows = store.query(f"SELECT {', '.join(names)} FROM {table}")
    assert columns == names
    kinds = [store.columns(table)[name] for name in names]

    def norm(value: object, kind: str) -> object:
        if "DateTime64" in kind:
            return value if isinstance(value, int) else _ms(value)  # type: ignore[arg-type]
        if "Nullable" in kind and value == -1:
            return None
        if "Float" in kind:
            return round(float(value), 9)  # type: ignore[arg-type]
        return value

    want = zip(*(block.columns[name].tolist() for name in names), strict=True)
    expected = sorted(tuple(norm(v, k) for v, k in zip(row, kinds, strict=True)) for row in want)
    got = sorted(tuple(norm(v, k) for v, k in zip(row, kinds, strict=True)) for row in rows)
    assert got == expected


def test_minus_one_is_null_only_in_nullable_columns(store: ClickHouseStore) -> None:
    store.insert(outcome_block(8))
    store.insert(health_block(6))
    _, rows = store.query(
        "SELECT outcome, recovered, time_to_recovery_ms IS NULL, recovery_channel"
        " FROM outcomes ORDER BY intervention_id LIMIT 4"
    )
    assert rows == [("progressed", 1, 0, "app"), ("completed", 1, 0, "app"),
                    ("failed", 0, 1, ""), ("lapsed", 0, 1, "")]  # fmt: skip
    _, [(nulls, lags)] = store.query(
        "SELECT countIf(kafka_lag IS NULL), countIf(kafka_lag >= 0) FROM flow_health"
    )
    assert (nulls, lags) == (2, 4)


def test_timestamps_are_utc_milliseconds(store: ClickHouseStore) -> None:
    block = funnel_block(1)
    block.columns["minute"][:] = T0 + 123  # an odd millisecond survives
    store.insert(block)
    _, [(ms, text)] = store.query(
        "SELECT toUnixTimestamp64Milli(minute), toString(minute) FROM funnel_minute"
    )
    assert ms == T0 + 123
    assert text == "2026-01-05 08:00:00.123"


def test_datetime64_columns_are_accepted_too(store: ClickHouseStore) -> None:
    block = funnel_block(3)
    block.columns["minute"] = block.columns["minute"].astype("datetime64[ms]")
    store.insert(block)
    _, [(low,)] = store.query("SELECT min(toUnixTimestamp64Milli(minute)) FROM funnel_minute")
    assert low == T0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("segment"), r"missing \['segment'\]"),
        (lambda c: c.update(extra=np.zeros(4)), r"unknown \['extra'\]"),
        (lambda c: c.update(events=np.zeros(3, np.int64)), "different lengths"),
        (lambda c: c.update(events=np.array(["x"] * 4, object)), r"events \(Int64\) got object"),
        (lambda c: c.update(journey=np.arange(4)), r"journey \(LowCard.*got int64"),
    ],
)
def test_malformed_blocks_are_refused_with_the_reason(
    store: ClickHouseStore, change: object, message: str
) -> None:
    block = funnel_block(4)
    change(block.columns)  # type: ignore[operator]
    with pytest.raises(ClickHouseError, match=message):
        store.insert(block)
    with pytest.raises(ClickHouseError, match="no table"):
        store.insert(MetricBlock("nope", {}))


def test_replayed_rows_collapse_and_hour_rollups_count_them_once(store: ClickHouseStore) -> None:
    blocks = {table: make(120, seed=3) for table, make in BLOCKS.items()}
    for block in blocks.values():
        store.insert(block)
    store.refresh_rollups()
    first = _rollups(store)
    for block in blocks.values():  # a replay: the same rows again, in other block shapes
        for half in (slice(0, 50), slice(50, None)):
            store.insert(MetricBlock(block.table, {k: v[half] for k, v in block.columns.items()}))
    store.refresh_rollups()
    _, [(raw,)] = store.query("SELECT count() FROM stalls", settings={"final": 0})
    assert raw == 240  # stored twice until a merge ...
    _, [(seen,)] = store.query("SELECT count() FROM stalls", settings={"final": 1})
    assert seen == 120  # ... counted once
    assert _rollups(store) == first
    f = blocks["funnel_minute"].columns
    assert first["funnel_hour"] == (int(f["events"].sum()), int(f["completed"].sum()))
    assert first["stalls_hour"][0] == 120
    assert first["decisions_hour"][0] == 120
    o = blocks["outcomes"].columns
    recovered = o["time_to_recovery_ms"][o["time_to_recovery_ms"] >= 0]
    assert first["outcomes_hour"] == (120, int(recovered.sum()))
    assert first["flow_health_hour"] == (120, int(blocks["flow_health"].columns["events_in"].sum()))
    h = blocks["flow_health"].columns
    _, [redis_row] = store.query(
        "SELECT sum(redis_outages), max(decisions_waiting_max) FROM flow_health_hour"
    )
    assert redis_row == (int(h["redis_outages"].sum()), int(h["decisions_waiting"].max()))


def test_an_embedded_read_refreshes_the_hour_tables_only_when_a_row_table_changed(
    store: ClickHouseStore,
) -> None:
    store.insert(funnel_block(30, seed=1))
    assert store.rollups_stale()
    _, [(events,)] = store.query("SELECT sum(events) FROM funnel_hour")
    assert events == funnel_block(30, seed=1).columns["events"].sum()
    time.sleep(1.1)  # parts carry their time in seconds: a later second tells them apart
    store.refresh_stale_rollups()  # if the read refreshed in the insert's second
    assert not store.rollups_stale()
    assert not store.refresh_stale_rollups()
    store.insert(funnel_block(30, seed=2, first_minute=600))
    assert store.rollups_stale()
    _, [(events,)] = store.query("SELECT sum(events) FROM funnel_hour")
    expected = sum(funnel_block(30, seed=s).columns["events"].sum() for s in (1, 2))
    assert events == expected


_REOPEN_AND_PAUSE = """
import sys
from sinks.clickhouse import ClickHouseStore
from tests.clickhouse.conftest import funnel_block
url = sys.argv[1]
with ClickHouseStore(url, "ato") as store:
    store.migrate()
    store.insert(funnel_block(1_000, seed=3))
with ClickHouseStore(url, "ato") as store:  # reopened: chDB starts a refresh of every view
    store.pause_rollups()
    rows = store._rows("SELECT DISTINCT status FROM system.view_refreshes WHERE database = 'ato'")
    print(sorted(status for (status,) in rows))
"""


def test_pausing_the_rollups_waits_for_refreshes_under_way(tmp_path: Path) -> None:
    """A process that opens an embedded database refreshes every view at once, and stopping
    a view does not stop that refresh: a sink's pause waits for it. (A process of its own:
    this one holds the package's chDB directory, so its stores never reopen one.)"""
    done = subprocess.run(
        [sys.executable, "-c", _REOPEN_AND_PAUSE, f"chdb://{tmp_path / 'db'}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['Disabled']"


def _rollups(store: ClickHouseStore) -> dict[str, tuple[int, int]]:
    sums = {
        "funnel_hour": "sum(events), sum(completed)",
        "stalls_hour": "sum(stalls), sum(errors)",
        "decisions_hour": "sum(decisions), sum(clients)",
        "outcomes_hour": "sum(outcomes), sum(time_to_recovery_ms_sum)",
        "flow_health_hour": "sum(intervals), sum(events_in)",
    }
    out = {}
    for table, expr in sums.items():
        _, [row] = store.query(f"SELECT {expr} FROM {table}", settings={"final": 0})
        out[table] = (int(row[0]), int(row[1]))
    return out


def test_a_bad_server_url_fails_at_open_with_the_password_masked() -> None:
    with pytest.raises(ClickHouseError) as info:
        ClickHouseStore("http://analyst:s3cret@127.0.0.1:1/metrics", "ato")
    text = str(info.value)
    assert "cannot connect to ClickHouse at http://analyst:***@127.0.0.1:1/metrics" in text
    assert "s3cret" not in text and "check clickhouse.url" in text


def test_a_url_that_does_not_parse_is_a_clear_error_with_the_password_masked() -> None:
    """It was a Python traceback (``ato query --url``)."""
    with pytest.raises(ClickHouseError, match="Invalid IPv6 URL") as info:
        ClickHouseStore("http://u:S3cret@[::1/x", "ato")
    assert "S3cret" not in str(info.value) and "u:***@" in str(info.value)


def test_a_password_with_an_unencoded_slash_is_a_clear_error_that_does_not_show_it() -> None:
    """``ato query --url`` named a piece of the password as the port."""
    with pytest.raises(ClickHouseError, match="percent-encoded") as info:
        ClickHouseStore("https://analyst:Tr0ub4dor/xyz@127.0.0.1:1", "ato")
    assert "Tr0ub4dor" not in str(info.value) and "analyst:***@" in str(info.value)


def test_a_server_that_never_answers_fails_after_the_request_timeout() -> None:
    """It takes the connection and says nothing: clickhouse-connect's own read timeout
    (300 s) held a run's start that long."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # connections wait in the backlog, never answered
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ClickHouseError, match="cannot connect to ClickHouse"):
            ClickHouseStore(f"http://127.0.0.1:{port}", "ato", timeout_s=1.0)
        assert time.monotonic() - started < 10


def test_query_on_a_memory_database_does_not_advise_a_migration() -> None:
    """`ato db migrate` on chdb://memory is lost when it exits: the advice could not work."""
    done = subprocess.run(
        [sys.executable, "-m", "ato.cli", "query", "SELECT 1", "--url", "chdb://memory"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "lives only in the process that made it" in done.stderr
    assert "migrate" not in done.stderr


def test_a_chdb_url_without_a_directory_is_refused() -> None:
    """chDB opened it in memory: a path from an unset variable lost every row."""
    with pytest.raises(ClickHouseError, match="names no directory"):
        ClickHouseStore("chdb://", "ato")


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ClickHouseError, match="expected chdb:///abs/path"):
        ClickHouseStore("clickhouse://host:9000", "ato")


def test_one_process_cannot_open_a_second_chdb_directory(url: str, tmp_path: Path) -> None:
    with pytest.raises(ClickHouseError, match="already has another chDB directory open"):
        ClickHouseStore(f"chdb://{tmp_path / 'other'}", "ato")


def test_another_process_cannot_open_a_directory_this_one_holds(store: ClickHouseStore) -> None:
    """What `ato query` says while a flow (here: this test process) writes the database."""
    env = {**os.environ, "ATO_CLICKHOUSE_DATABASE": store.database}
    done = subprocess.run(
        [sys.executable, "-m", "ato.cli", "query", "SELECT 1", "--url", store.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert f"in use by process {os.getpid()}" in done.stderr
    assert "Traceback" not in done.stderr
    # the one line: chDB's own "Cannot lock file" message came before it
    assert done.stderr.startswith("ato: error: cannot open the embedded"), done.stderr


def test_this_process_may_open_a_directory_it_holds_again(store: ClickHouseStore) -> None:
    with ClickHouseStore(store.url, store.database) as again:
        assert again.query("SELECT 1")[1] == [(1,)]


def test_error_messages_leave_out_chdbs_stack_trace() -> None:
    error = RuntimeError(
        'Code: 1001. DB::Exception: create_directories: No such file or directory ["/proc/x"].'
        " Stack trace (when copying this message, always include the lines below):\n\n"
        "0. arrow::acero::TableSinkNodeConsumer::Finish() @ 0x000000000b5d1b7c\n" * 3
    )
    text = _message(error, None)
    assert text.endswith('No such file or directory ["/proc/x"].')
    assert "Stack trace" not in text and "arrow::" not in text


def test_query_blocks_stream_a_select_block_by_block(store: ClickHouseStore) -> None:
    sql = "SELECT number AS n, toString(number) AS s FROM numbers(300000) ORDER BY n"
    with store.query_blocks(sql, streamable=True) as (names, blocks):
        got = list(blocks)
    assert names == ["n", "s"]
    assert len(got) > 1  # not one result held whole
    assert [tuple(row) for block in got for row in block] == store.query(sql)[1]


def test_query_blocks_of_empty_results_and_statements_that_do_not_stream(
    store: ClickHouseStore,
) -> None:
    with store.query_blocks("SELECT 1 AS x WHERE 0", streamable=True) as (names, blocks):
        assert names == ["x"]  # chDB leaves the names out of an empty stream
        assert list(blocks) == []
    with store.query_blocks("SHOW TABLES") as (names, blocks):  # chDB streams only SELECT, WITH
        tables = [row[0] for block in blocks for row in block]
    assert {"stalls", "funnel_minute"} <= set(tables)
    with (
        pytest.raises(ClickHouseError, match="query failed: .*`nope`"),
        store.query_blocks("SELECT nope FROM stalls", streamable=True),
    ):
        pass
