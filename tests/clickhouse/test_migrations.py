"""Schema migrations: from empty, re-applied, and the errors that protect applied ones."""

import shutil
from pathlib import Path

import pytest

from sinks.clickhouse import SCHEMA_DIR, SCHEMA_TABLES, ClickHouseStore, migrations
from sinks.exceptions import ClickHouseError

ROW_TABLES = {"funnel_minute", "stalls", "decisions", "outcomes", "flow_health"}
HOUR_TABLES = {"funnel_hour", "stalls_hour", "decisions_hour", "outcomes_hour", "flow_health_hour"}


def test_migrate_from_empty_creates_every_table_then_is_a_no_op(url: str, database: str) -> None:
    with ClickHouseStore(url, database) as store:
        assert store.migrate() == [
            "0001_tables",
            "0002_rollups",
            "0003_funnel_over_shards",
            "0004_decision_channel",
            "0005_health_redis",
            "0006_funnel_advanced_comment",
            "0007_decision_channel_comment",
        ]
        bookkeeping = {"schema_migrations", "schema_migration_steps"}
        assert set(store.tables()) == bookkeeping | ROW_TABLES | HOUR_TABLES | {
            f"{t}_mv" for t in HOUR_TABLES
        }
        assert set(store.tables()) == SCHEMA_TABLES
        assert store.rollup_views() == sorted(f"{t}_mv" for t in HOUR_TABLES)
        applied = store.applied()
        assert [(v, c) for v, c, _at in applied] == [(m.version, m.checksum) for m in migrations()]
    with ClickHouseStore(url, database) as again:  # start-up of the next run
        assert again.migrate() == []
        assert len(again.applied()) == 7


def test_engines_and_keys_collapse_duplicates(store: ClickHouseStore) -> None:
    _, rows = store.query(
        "SELECT name, engine, sorting_key, partition_key FROM system.tables"
        f" WHERE database = '{store.database}' AND name IN ({', '.join(map(repr, ROW_TABLES))})"
    )
    found = {name: (engine, key, part) for name, engine, key, part in rows}
    assert {engine for engine, _, _ in found.values()} == {"ReplacingMergeTree"}
    assert found["funnel_minute"][1] == "journey, step, minute, channel, segment"
    assert found["flow_health"][1] == "run_id, worker, interval_start"
    assert found["decisions"][1].endswith("decision, reason, step, intervention_id")


def test_a_changed_applied_migration_is_a_clear_error(
    url: str, database: str, tmp_path: Path
) -> None:
    schema = tmp_path / "schema"
    shutil.copytree(SCHEMA_DIR, schema)
    with ClickHouseStore(url, database, schema_dir=schema) as store:
        store.migrate()
        path = schema / "0002_rollups.sql"
        path.write_text(path.read_text() + "\n-- an edit\n")
        with pytest.raises(ClickHouseError, match=r"migration 0002_rollups.sql changed after"):
            store.migrate()


def test_a_table_dropped_by_hand_is_an_error_not_up_to_date(url: str, database: str) -> None:
    with ClickHouseStore(url, database) as store:
        store.migrate()
        store.client.command(f"DROP TABLE {database}.outcomes_hour_mv")
        store.client.command(f"DROP TABLE {database}.outcomes")
    with (
        ClickHouseStore(url, database) as store,
        pytest.raises(ClickHouseError, match="lacks outcomes, outcomes_hour_mv, which its"),
    ):
        store.migrate()


def test_a_new_migration_is_applied_once(url: str, database: str, tmp_path: Path) -> None:
    schema = tmp_path / "schema"
    shutil.copytree(SCHEMA_DIR, schema)
    with ClickHouseStore(url, database, schema_dir=schema) as store:
        store.migrate()
        (schema / "0099_extra.sql").write_text(
            "-- a later migration\nCREATE TABLE IF NOT EXISTS {db}.extra (a Int8)\n"
            "ENGINE = MergeTree ORDER BY a;\n"
        )
        assert store.migrate() == ["0099_extra"]
        assert store.migrate() == []
        assert "extra" in store.tables()
    (schema / "0099_extra.sql").unlink()  # the database is now newer than this code
    with (
        ClickHouseStore(url, database, schema_dir=schema) as store,
        pytest.raises(ClickHouseError, match="does not know: 0099_extra"),
    ):
        store.migrate()


def test_badly_named_migration_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "1_x.sql").write_text("SELECT 1;\n")
    with pytest.raises(ClickHouseError, match="NNNN_lower_case_name.sql"):
        migrations(tmp_path)


def test_statements_split_at_line_ends_and_name_the_database() -> None:
    [first, *_] = migrations()
    statements = first.statements("analytics")
    assert len(statements) == 5
    assert all(s.startswith("CREATE TABLE IF NOT EXISTS analytics.") for s in statements)
    assert not any(s.rstrip().endswith(";") or "--" in s.split("\n")[0] for s in statements)


KEY = "'2026-01-05 09:00:00', 'open_account', 'kyc', 'app', 'seniors'"  # a funnel row's


def _database_before_0003(url: str, database: str, tmp_path: Path, rows: str) -> None:
    """A database migrated to 0002 (funnel counts per shard), its funnel_minute holding
    ``rows`` (SQL VALUES)."""
    schema = tmp_path / "schema"
    schema.mkdir()
    for name in ("0001_tables.sql", "0002_rollups.sql"):
        shutil.copy(SCHEMA_DIR / name, schema / name)
    with ClickHouseStore(url, database, schema_dir=schema) as store:
        store.migrate()
        store.client.command(f"INSERT INTO {database}.funnel_minute VALUES {rows}")


def test_funnel_rows_of_the_per_shard_table_are_summed_over_shards(
    url: str, database: str, tmp_path: Path
) -> None:
    """A database made before 0003 keeps its funnel counts, summed over shards."""
    rows = f"({KEY}, 's00', 3, 1, 2, 0, 0), ({KEY}, 's01', 4, 0, 4, 0, 1)"
    rows += f", ({KEY}, 's01', 4, 0, 4, 0, 1)"  # a replayed duplicate
    _database_before_0003(url, database, tmp_path, rows)
    with ClickHouseStore(url, database) as store:
        assert store.migrate() == [
            "0003_funnel_over_shards",
            "0004_decision_channel",
            "0005_health_redis",
            "0006_funnel_advanced_comment",
            "0007_decision_channel_comment",
        ]
        assert "shard" not in store.columns("funnel_minute")
        _, rows = store.query(
            "SELECT journey, events, started, advanced, abandoned FROM funnel_minute"
        )
        assert rows == [("open_account", 7, 1, 6, 1)]
        assert "funnel_minute_by_shard" not in store.tables()


def test_a_migration_stopped_half_way_goes_on_from_the_statement_that_failed(
    url: str, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0003 renames funnel_minute, creates the new one, copies and drops. Stopped after the
    rename, it was run again whole: the rename failed (the name was taken) at every start."""
    rows = f"({KEY}, 's00', 3, 1, 2, 0, 0), ({KEY}, 's01', 4, 0, 4, 0, 1)"
    _database_before_0003(url, database, tmp_path, rows)
    with ClickHouseStore(url, database) as store:
        command = store._command

        def server_gone_at_the_create(sql: str) -> object:
            if sql.startswith(f"CREATE TABLE {database}.funnel_minute"):
                msg = "server gone"
                raise ClickHouseError(msg)
            return command(sql)

        monkeypatch.setattr(store, "_command", server_gone_at_the_create)
        with pytest.raises(ClickHouseError, match="server gone"):
            store.migrate()
        monkeypatch.undo()
        assert "funnel_minute" not in store.tables()  # renamed, not created yet
        assert store.migrate()[0] == "0003_funnel_over_shards"
        _, rows = store.query("SELECT journey, events, started, advanced FROM funnel_minute")
        assert rows == [("open_account", 7, 1, 6)]
        assert "funnel_minute_by_shard" not in store.tables()


def test_flow_health_rows_of_an_older_database_keep_their_counts_and_roll_up(
    url: str, database: str, tmp_path: Path
) -> None:
    """A database made before 0005: its flow_health rows read 0 Redis outages, and the hour
    table, whose view 0005 makes again, rolls up old and new rows."""
    schema = tmp_path / "schema"
    schema.mkdir()
    for migration in migrations()[:4]:
        shutil.copy(migration.path, schema / migration.path.name)
    old_row = "'2026-01-05 09:00:00', 'run-1', 'h:1:w0', 100, 2, 0, 0, 5, NULL, 1, 2, 3, 7, 99"
    with ClickHouseStore(url, database, schema_dir=schema) as store:
        store.migrate()
        store.client.command(f"INSERT INTO {database}.flow_health VALUES ({old_row})")
    with ClickHouseStore(url, database) as store:
        assert store.migrate() == [
            "0005_health_redis",
            "0006_funnel_advanced_comment",
            "0007_decision_channel_comment",
        ]
        store.client.command(
            f"INSERT INTO {database}.flow_health (interval_start, run_id, worker, events_in,"
            " redis_outages, decisions_waiting)"
            " VALUES ('2026-01-05 09:00:10', 'run-1', 'h:1:w0', 50, 1, 12)"
        )
        assert store.rollup_views() == sorted(f"{t}_mv" for t in HOUR_TABLES)
        store.refresh_rollups()
        _, rows = store.query(
            "SELECT intervals, events_in, redis_outages, decisions_waiting_max"
            " FROM flow_health_hour"
        )
        assert rows == [(2, 150, 1, 12)]


def test_the_funnel_columns_say_what_they_count(store: ClickHouseStore) -> None:
    """Analysts read column comments in ClickHouse: advanced counts back-steps and repeats."""
    _, [(comment,)] = store.query(
        "SELECT comment FROM system.columns"
        f" WHERE database = '{store.database}' AND table = 'funnel_minute' AND name = 'advanced'"
    )
    assert "back-steps" in comment and "already on" in comment


def test_the_decision_channel_says_deferred_and_suppressed_ones_carry_it(
    store: ClickHouseStore,
) -> None:
    _, [(comment,)] = store.query(
        "SELECT comment FROM system.columns"
        f" WHERE database = '{store.database}' AND table = 'decisions' AND name = 'channel'"
    )
    assert "would have gone" in comment
