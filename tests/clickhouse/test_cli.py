"""`ato db migrate` and `ato query` through ato.cli.main."""

import csv
import io
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from ato import db
from ato.cli import main
from sinks.clickhouse import ClickHouseStore
from tests.clickhouse.conftest import funnel_block, outcome_block


@pytest.fixture
def env(database: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test's database for every command (as an operator would set it)."""
    monkeypatch.setenv("ATO_CLICKHOUSE_DATABASE", database)
    return database


def test_db_migrate_prints_the_versions_it_applied(url: str, env: str, capsys) -> None:
    assert main(["db", "migrate", "--url", url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "applied 0001_tables",
        "applied 0002_rollups",
        "applied 0003_funnel_over_shards",
        "applied 0004_decision_channel",
        "applied 0005_health_redis",
        "applied 0006_funnel_advanced_comment",
        "applied 0007_decision_channel_comment",
        f"database {env} at {url}: 7 migrations applied, schema at 0007_decision_channel_comment",
    ]
    assert main(["db", "migrate", "--url", url]) == 0
    up_to_date = f"database {env} at {url}: up to date, schema at 0007_decision_channel_comment\n"
    assert capsys.readouterr().out == up_to_date


def test_the_default_url_is_the_out_dir_database(
    chdb_dir: Path, env: str, tmp_path: Path, capsys
) -> None:
    config = tmp_path / "ato.toml"
    config.write_text(f'out_dir = "{chdb_dir.parent}"\n')
    assert main(["db", "migrate", "--config", str(config)]) == 0
    assert f"database {env} at chdb://{chdb_dir}: 7 migrations" in capsys.readouterr().out


def test_query_prints_an_aligned_table(url: str, env: str, capsys) -> None:
    with ClickHouseStore(url, env) as store:
        store.migrate()
        store.insert(funnel_block(6))
        store.insert(funnel_block(6))  # a replay: `ato query` reads FINAL
    sql = (
        "SELECT journey, sum(events) AS events, round(avg(started), 2) AS mean, min(minute) AS t"
        " FROM funnel_minute GROUP BY journey ORDER BY journey"
    )
    assert main(["query", sql, "--url", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["journey", "events", "mean", "t"]
    assert set(lines[1]) == {"-", " "}
    assert lines[-1] == "(3 rows)"
    rows = lines[2:-1]
    assert [r.split()[0] for r in rows] == ["loan_application", "open_account", "wealth_purchase"]
    assert all(r.endswith("2026-01-05 08:00:00") for r in rows)
    spans = [m.span() for m in re.finditer(r"-+", lines[1])]
    (j0, _), (e0, e1) = spans[0], spans[1]
    assert all(r[j0] != " " for r in rows)  # text left-aligned
    assert all(r[e1 - 1] != " " and r[e0:e1].strip().isdigit() for r in rows)  # numbers right
    assert lines[0][e0:e1] == "events".rjust(e1 - e0)
    block = funnel_block(6)
    events = sum(int(v) for v in block.columns["events"])
    assert sum(int(r.split()[1]) for r in rows) == events  # once, not twice


def test_query_formats_csv_and_json_with_nulls(url: str, env: str, capsys) -> None:
    with ClickHouseStore(url, env) as store:
        store.migrate()
        store.insert(outcome_block(4))
    sql = "SELECT outcome, time_to_recovery_ms FROM outcomes ORDER BY intervention_id"
    assert main(["query", sql, "--url", url, "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["outcome", "time_to_recovery_ms"]
    assert [r[0] for r in rows[1:]] == ["progressed", "completed", "failed", "lapsed"]
    assert rows[3][1] == rows[4][1] == ""
    assert main(["query", sql, "--url", url, "--format", "json"]) == 0
    docs = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert docs[2] == {"outcome": "failed", "time_to_recovery_ms": None}
    assert isinstance(docs[0]["time_to_recovery_ms"], int)


def test_an_empty_result_still_names_its_columns(url: str, env: str, capsys) -> None:
    """chDB gives an empty result without column names; a CSV with no header would break the
    analyst's pipeline, so the names come from the query itself."""
    with ClickHouseStore(url, env) as store:
        store.migrate()
    sql = "SELECT journey, count() AS stalls FROM stalls GROUP BY journey;"
    assert main(["query", sql, "--url", url, "--format", "csv"]) == 0
    assert capsys.readouterr().out == "journey,stalls\n"
    assert main(["query", sql, "--url", url]) == 0
    table = capsys.readouterr().out
    assert "journey" in table and "stalls" in table and "(0 rows)" in table
    assert main(["query", "SYSTEM FLUSH LOGS", "--write", "--url", url]) == 0  # no columns


def test_sql_errors_exit_2_with_the_message_and_no_traceback(url: str, env: str, capsys) -> None:
    with ClickHouseStore(url, env) as store:
        store.migrate()
    assert main(["query", "SELECT nope FROM funnel_minute", "--url", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ato: error: ClickHouse {url}: query failed: ")
    assert "Unknown expression identifier `nope`" in err and "Traceback" not in err
    assert main(["query", "SELECT , 1", "--url", url]) == 2
    err = capsys.readouterr().err
    assert "Syntax error" in err and "FORMAT" not in err  # the driver's own clause is not quoted
    assert main(["query", "SELECT ((1", "--url", url]) == 2  # it ends in the driver's clause
    assert "the SQL seems to end early" in capsys.readouterr().err


def test_query_before_any_migration_says_what_to_do(url: str, env: str, tmp_path: Path, capsys):
    assert main(["query", "SELECT 1", "--url", url]) == 2
    assert f"has no database {env} (run `ato db migrate`" in capsys.readouterr().err
    absent = tmp_path / "absent"
    assert main(["query", "SELECT 1", "--url", f"chdb://{absent}"]) == 2
    assert f"{absent} does not exist" in capsys.readouterr().err
    assert not absent.exists()
    other = tmp_path / "other"  # a directory, but not a database: nothing is written into it
    other.mkdir()
    assert main(["query", "SELECT 1", "--url", f"chdb://{other}"]) == 2
    assert f"{other} is not an embedded ClickHouse directory" in capsys.readouterr().err
    assert list(other.iterdir()) == []


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("", "no SQL to run"),
        (" ; -- nothing", "no SQL to run"),
        ("SELECT 1; SELECT 2", "one statement at a time: this SQL holds 2"),
        ("DROP TABLE outcomes", "runs read-only statements"),
        ("INSERT INTO outcomes SELECT * FROM outcomes", "pass --write"),
        ("SELEC 1", "'SELEC' does not start a ClickHouse statement (a typo?)"),  # not --write
    ],
)
def test_what_ato_query_refuses(url: str, env: str, capsys, sql: str, message: str) -> None:
    """No SQL, several statements (chDB ran them all and printed their rows as one result),
    and statements that change the database without --write (a dropped table broke every
    later query, and `ato db migrate` called the database up to date)."""
    with ClickHouseStore(url, env) as store:
        store.migrate()
    assert main(["query", sql, "--url", url]) == 2
    assert message in capsys.readouterr().err
    assert main(["query", "SELECT count() FROM outcomes", "--url", url]) == 0
    assert main(["query", "SELECT ';' AS semi -- ; a comment", "--url", url]) == 0


def test_csv_and_json_keep_values_exact(url: str, env: str, capsys) -> None:
    with ClickHouseStore(url, env) as store:
        store.migrate()
    sql = (
        "SELECT 'a\nb' AS s, 1e-7 AS f, 123456789.123456789 AS g,"
        " toDateTime64('2026-01-01 00:00:00.123456', 6, 'UTC') AS t"
    )
    assert main(["query", sql, "--url", url, "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[1][:4] == [
        "a\nb",
        "1e-07",
        "123456789.12345679",
        "2026-01-01 00:00:00.123456",
    ]
    sql = "SELECT toUInt256('1000000000000000000000000000000') AS big, 1 AS n"
    assert main(["query", sql, "--url", url, "--format", "json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == {"big": "1" + "0" * 30, "n": 1}
    assert (
        main(["query", "SELECT number, number FROM numbers(1)", "--url", url, "--format", "json"])
        == 2
    )
    assert "column name(s) 'number' repeat" in capsys.readouterr().err


def test_a_bad_url_is_a_config_error(capsys) -> None:
    assert main(["query", "SELECT 1", "--url", "mysql://x"]) == 2
    assert "clickhouse.url: expected chdb://PATH" in capsys.readouterr().err


def test_a_reader_that_stops_early_is_not_an_error(tmp_path: Path) -> None:
    """`ato query --format csv ... | head`: the rows stream out, and the closed pipe ends
    the command quietly."""
    url = f"chdb://{tmp_path / 'clickhouse'}"
    cli = [sys.executable, "-m", "ato.cli"]
    root = Path(__file__).parents[2]
    migrated = subprocess.run(
        [*cli, "db", "migrate", "--url", url], capture_output=True, cwd=root, check=False
    )
    assert migrated.returncode == 0, migrated.stderr
    sql = "SELECT number AS n FROM numbers(2000000)"
    query = subprocess.Popen(
        [*cli, "query", sql, "--format", "csv", "--url", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=root,
    )  # fmt: skip
    assert query.stdout is not None and query.stderr is not None
    assert query.stdout.readline() == b"n\n"
    assert query.stdout.readline() == b"0\n"
    query.stdout.close()
    assert query.wait(60) == 0
    with query.stderr:
        err = query.stderr.read().decode()
    assert "Traceback" not in err and "Error" not in err, err


@pytest.mark.parametrize(
    ("sql", "streamed"),
    [
        ("SELECT 1", True),
        ("select 1", True),
        ("-- an export\nSELECT 1", True),
        ("/* c */ (SELECT 1) UNION ALL (SELECT 2)", True),
        ("WITH 1 AS x SELECT x", True),
        ("SELECT 1 INTO OUTFILE '/tmp/x.csv'", False),  # a stream would drop the file
        ("SHOW TABLES", False),
        ("DESCRIBE TABLE stalls", False),
        ("EXPLAIN SELECT 1", False),
    ],
)
def test_what_streams(sql: str, streamed: bool) -> None:
    assert db.streams(db.statements(sql)[0]) is streamed


def test_into_outfile_writes_the_whole_result(url: str, env: str, tmp_path: Path, capsys) -> None:
    """Streamed, the file came out empty (the stream drops INTO OUTFILE)."""
    with ClickHouseStore(url, env) as store:
        store.migrate()
    out = tmp_path / "numbers.bin"
    sql = f"SELECT number FROM numbers(100000) INTO OUTFILE '{out}'"
    assert main(["query", sql, "--url", url]) == 0
    assert out.stat().st_size >= 100000 * 8  # the driver's format (Native): 8 bytes a number


def test_a_query_failing_partway_exits_2_after_the_rows_before_it(
    url: str, env: str, capsys
) -> None:
    with ClickHouseStore(url, env) as store:
        store.migrate()
    sql = "SELECT number AS n, throwIf(number = 300000) AS t FROM numbers(1000000)"
    assert main(["query", sql, "--format", "csv", "--url", url]) == 2
    out, err = capsys.readouterr()
    rows = out.splitlines()
    assert rows[0] == "n,t"
    assert 1 < len(rows) <= 300001  # streamed before the failure: never a row past it
    assert err.startswith(f"ato: error: ClickHouse {url}: query failed: ")
    assert main(["query", sql, "--url", url]) == 2  # a table: nothing printed
    assert capsys.readouterr().out == ""
