"""The least CPU live metrics take on this machine, against what a 10 % cost leaves them.

    python -m load_tests.bench_metrics_floor [--clients 1000000] [--repeat 3] [--span-s S]

Issue 4 asks that writing live metrics cost at most 10 % of the in-process benchmark's
throughput (``load_tests/bench_inprocess.py``, the same traffic and catch-up settings). On a
machine whose cores also run the ClickHouse that takes the rows (chDB in the process, or a
server beside it), this benchmark measures, each ``--repeat`` times (medians reported):

* ``budget_cpu_s``: the CPU a 10 % cost leaves the metrics. A round of the flow without
  metrics takes ``T`` s and ``C`` s of CPU; at a cost of 10 % a round may take ``T / 0.9`` s,
  in which the machine's cores offer ``cores * T / 0.9`` s of CPU, so the metrics may use
  ``cores * T / 0.9 - C``. Generous: it assumes the metrics use every idle cycle and never
  delay the flow's own thread. Load from outside the benchmark inflates it (a slower ``T``).
* ``ingest_cpu_s``: the process's CPU while it hands only the rows the issue asks for (the
  funnel minutes, stalls, decisions and outcomes of one metrics run of the same traffic,
  read back from that run's database) to chDB the way the sink does (clickhouse-connect's
  Arrow inserts of 500,000 rows, dictionary columns) into fresh tables of the same schema,
  already in each table's sorting-key order, with merges stopped and nothing else running.
  It includes clickhouse-connect writing the Arrow stream, which stays on the flow's machine
  whatever ClickHouse takes the rows.
* ``aggregate_cpu_s``: one add per event into the funnel step's hash table
  (``operators.funnel.sum_by_key`` over a key per event, in the traffic's minute order, in
  calls of 400,000 keys as the step sums a batch's rows). The run does more: it makes
  those rows, sums the open minutes again at each close, hashes the outcome ids and makes,
  orders and writes the columns.

* ``beside_cost``: what ClickHouse's own work on those rows costs the flow, measured as the
  target is. The rows wait in chDB ``Memory`` tables; in each round a thread has chDB copy
  them into fresh tables of the same schema (``INSERT ... SELECT`` of 500,000 rows at a time,
  no parsing and no Python work), its inserts spread evenly over 85 % of that iteration's
  round without metrics, while the flow runs without metrics. A round lasts until both end,
  and the cost is ``1 - T / beside_round_s``. Nothing the flow could do for its metrics
  costs less than chDB writing their rows, so a ``beside_cost`` over 10 % puts the target out
  of reach of this machine and traffic.

``floor_share`` is ``(ingest_cpu_s + aggregate_cpu_s) / budget_cpu_s``, and
``floor_share_range`` the same from the lowest floor and the highest budget of the run, then
the highest floor and the lowest budget: near 1, meeting the target would need the flow's
own metrics work to cost nothing and chDB to cost, beside the flow, what it costs alone.
It is an estimate from noisy measurements, not a proof. ``floor_cost`` is the cost that
floor alone would have with the same optimism (a round of ``(C + floor) / cores`` s when that
exceeds ``T``). ``metrics_cost`` is the cost the same run measured (as ``bench_inprocess``
does). The last line printed is JSON.
"""

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from ato.catalog import load_catalog
from ato.config import Settings
from ato.process import tune_gc
from load_tests.bench_inprocess import (
    CATCH_UP_BATCH_SIZE,
    CATCH_UP_LANES,
    DEFAULT_SPAN_S,
    drop_database,
    load_messages,
    raw_batches,
    run_full,
)
from operators.funnel import MEASURES, sum_by_key
from sinks.clickhouse import INSERT_SETTINGS, ClickHouseStore

TARGET_COST = 0.10
TABLES = ("funnel_minute", "stalls", "decisions", "outcomes")  # the rows issue 4 asks for
TEXT_COLUMNS = ("intervention_id", "client_id", "rm_id")  # String; the rest LowCardinality
INSERT_ROWS = 500_000
AGGREGATE_ROWS = 400_000  # the funnel step sums rows in sets of about this many
BESIDE_SPREAD = 0.85  # share of a round without metrics the beside inserts are spread over


def cpu_s() -> float:
    """CPU seconds of this process so far (all its threads, chDB's included)."""
    t = os.times()
    return t.user + t.system


def cpu_of(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process) ``fn`` takes."""
    w0, c0 = time.perf_counter(), cpu_s()
    fn()
    return time.perf_counter() - w0, cpu_s() - c0


def as_sink_sends(table: pa.Table) -> pa.Table:
    """``table`` read back from ClickHouse with its text columns as the sink sends them:
    plain strings for the ids, one Arrow dictionary per LowCardinality column."""
    columns = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        values = column.combine_chunks()
        if pa.types.is_dictionary(values.type):
            values = values.cast(pa.string())
        if pa.types.is_string(values.type) or pa.types.is_binary(values.type):
            values = values.cast(pa.string())
            if name not in TEXT_COLUMNS:
                values = values.dictionary_encode()
        columns[name] = values
    return pa.table(columns)


def read_rows(url: str, database: str) -> dict[str, pa.Table]:
    """Each table's rows of a metrics run, in its sorting-key order."""
    with ClickHouseStore(url, database) as store:
        out = {}
        for table in TABLES:
            key = ", ".join(store.sorting_key(table))
            sql = f"SELECT * FROM {database}.{table} ORDER BY {key}"
            out[table] = as_sink_sends(store.client.query_arrow(sql, settings={"final": 1}))
        store.client.command(f"DROP DATABASE {database} SYNC")
    return out


def ingest_round(url: str, source: str, rows: dict[str, pa.Table], n: int) -> dict[str, float]:
    """CPU chDB uses to insert ``rows`` into fresh tables shaped like ``source``'s."""
    database = f"floor_{n}"
    spent = {}
    with ClickHouseStore(url, source) as store:
        client = store.client
        client.command(f"CREATE DATABASE {database}")
        client.command(f"SYSTEM STOP MERGES {database}")  # merges come later, not in a round
        for table, block in rows.items():
            client.command(f"CREATE TABLE {database}.{table} AS {source}.{table}")
            gc.collect()

            def insert(table: str = table, block: pa.Table = block) -> None:
                for start in range(0, block.num_rows, INSERT_ROWS):
                    part = block.slice(start, INSERT_ROWS)
                    client.insert_arrow(table, part, database=database, settings=INSERT_SETTINGS)

            spent[table] = cpu_of(insert)[1]
        client.command(f"DROP DATABASE {database} SYNC")
    return spent


def load_memory_tables(client: Any, source: str, rows: dict[str, pa.Table]) -> list[str]:
    """``rows`` into chDB ``Memory`` tables shaped like ``source``'s (database ``held``), one
    table per ``INSERT_ROWS`` rows of a table (a ``LIMIT ... OFFSET`` read of one large table
    does not keep the rows' order); returns the ``INSERT ... SELECT`` statements (``{db}`` to
    fill) that copy them out, one per held table."""
    client.command("CREATE DATABASE held")
    copies = []
    for table, block in rows.items():
        for k, start in enumerate(range(0, block.num_rows, INSERT_ROWS)):
            held = f"{table}_{k}"
            client.command(f"CREATE TABLE held.{held} AS {source}.{table} ENGINE = Memory")
            part = block.slice(start, INSERT_ROWS)
            client.insert_arrow(held, part, database="held", settings=INSERT_SETTINGS)
            copies.append(f"INSERT INTO {{db}}.{table} SELECT * FROM held.{held}")
    return copies


def written_blocks(client: Any) -> tuple[int, int]:
    """MergeTree blocks chDB has written in this process, and how many of them came sorted."""
    rows = client.query(
        "SELECT event, value FROM system.events"
        " WHERE event IN ('MergeTreeDataWriterBlocks', 'MergeTreeDataWriterBlocksAlreadySorted')"
    ).result_rows
    found = dict(rows)
    return (
        int(found.get("MergeTreeDataWriterBlocks", 0)),
        int(found.get("MergeTreeDataWriterBlocksAlreadySorted", 0)),
    )


def beside_round(
    client: Any,
    source: str,
    copies: list[str],
    counts: dict[str, int],
    spread_s: float,
    run: Callable[[], Any],
    n: int,
) -> float:
    """Seconds until both ``run`` (the flow without metrics) and chDB's copies of the held
    rows into fresh tables, spread evenly over ``spread_s`` s, have ended. The copies must
    come out with ``counts`` rows per table, each in its table's key order (as the sink's
    inserts come)."""
    database = f"beside_{n}"
    client.command(f"CREATE DATABASE {database}")
    for table in TABLES:
        client.command(f"CREATE TABLE {database}.{table} AS {source}.{table}")
    failed: list[BaseException] = []

    def copy_rows() -> None:
        start = time.perf_counter()
        try:
            for k, sql in enumerate(copies):
                wait = start + spread_s * k / len(copies) - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                client.command(sql.format(db=database))
        except BaseException as exc:  # re-raised below, on the benchmark's thread
            failed.append(exc)

    gc.collect()
    blocks_before, sorted_before = written_blocks(client)
    copier = threading.Thread(target=copy_rows, name="beside-copies")
    t0 = time.perf_counter()
    copier.start()
    run()
    copier.join()
    seconds = time.perf_counter() - t0
    if failed:
        raise failed[0]
    copied = {t: int(client.command(f"SELECT count() FROM {database}.{t}")) for t in TABLES}
    if copied != counts:
        msg = f"the beside inserts copied {copied} rows, not {counts}"
        raise RuntimeError(msg)
    blocks_after, sorted_after = written_blocks(client)
    if blocks_after - blocks_before != sorted_after - sorted_before:
        msg = "the beside inserts did not all come in their tables' key order"
        raise RuntimeError(msg)
    print(f"  flow beside chDB's inserts: {seconds:.2f}s", file=sys.stderr)
    client.command(f"DROP DATABASE {database} SYNC")
    return seconds


def event_keys(funnel: pa.Table, seed: int) -> np.ndarray:
    """A key per event of the run's funnel rows (a row of ``events`` e appears e times, a row
    of outcomes alone once), in minute order, equal minutes shuffled."""
    events = np.maximum(funnel.column("events").to_numpy(), 1)
    minute = funnel.column("minute").cast(pa.int64()).to_numpy()
    keys = np.repeat(np.arange(len(events), dtype=np.int64), events)
    minutes = np.repeat(minute, events)
    tiebreak = np.random.default_rng(seed).random(len(keys))
    return keys[np.lexsort((tiebreak, minutes))]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print and return its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--span-s",
        type=int,
        default=DEFAULT_SPAN_S,
        help="event-time span of the traffic: funnel rows per event grow as it gets sparser",
    )
    args = parser.parse_args(argv)

    catalog = load_catalog()
    settings = Settings().with_overrides(
        "engine", batch_size=CATCH_UP_BATCH_SIZE, lanes=CATCH_UP_LANES
    )
    parts, clients = load_messages(args.clients, args.seed, span_s=args.span_s)
    partitions = list(parts)
    batches = raw_batches(parts, CATCH_UP_BATCH_SIZE)
    n = sum(len(b.messages) for b in batches)
    cores = len(os.sched_getaffinity(0))
    print(f"{n:,} events, {clients:,} clients, {cores} cores", file=sys.stderr)
    gc.collect()
    gc.freeze()
    tune_gc()
    run_full(batches[: len(partitions) * 2], partitions, settings, catalog)  # warm the JIT

    chdb_dir = tempfile.mkdtemp(prefix="ato-floor-chdb-")
    url = f"chdb://{chdb_dir}"
    with_rows = replace(settings, clickhouse=replace(settings.clickhouse, database="rows"))
    print("the rows of one metrics run", file=sys.stderr)
    run_full(batches, partitions, with_rows, catalog, metrics_url=url)
    rows = read_rows(url, "rows")
    counts = {table: block.num_rows for table, block in rows.items()}
    print(f"  rows: {counts}", file=sys.stderr)

    def without_metrics() -> float:
        return run_full(batches, partitions, settings, catalog)

    off: list[tuple[float, float]] = []
    on: list[float] = []
    beside: list[float] = []
    with ClickHouseStore(url, "shape") as store:  # an empty schema for the fresh tables
        store.migrate()
        copies = load_memory_tables(store.client, "shape", rows)
        for i in range(args.repeat):
            print(f"round {i + 1}/{args.repeat}", file=sys.stderr)
            off.append(cpu_of(without_metrics))
            db = replace(settings, clickhouse=replace(settings.clickhouse, database=f"run_{i}"))
            on.append(run_full(batches, partitions, db, catalog, metrics_url=url))
            drop_database(url, db.clickhouse.database)
            spread = BESIDE_SPREAD * off[-1][0]
            beside.append(
                beside_round(store.client, "shape", copies, counts, spread, without_metrics, i)
            )
        store.client.command("DROP DATABASE held SYNC")  # the held rows' memory
    ingest = []
    for i in range(args.repeat):
        spent = ingest_round(url, "shape", rows, i)
        ingest.append(sum(spent.values()))
        tables = ", ".join(f"{t} {s:.2f}" for t, s in spent.items())
        print(f"  ingest {ingest[-1]:.2f} s of CPU ({tables})", file=sys.stderr)
    shutil.rmtree(chdb_dir, ignore_errors=True)

    keys = event_keys(rows["funnel_minute"], args.seed)
    counts_per_event = np.zeros((len(keys), len(MEASURES)), np.int8)
    counts_per_event[:, 0] = 1
    sum_by_key(keys[:1000], counts_per_event[:1000])  # compiled before it is timed

    def aggregate_all() -> None:
        for start in range(0, len(keys), AGGREGATE_ROWS):
            end = start + AGGREGATE_ROWS
            sum_by_key(keys[start:end], counts_per_event[start:end])

    aggregate = [cpu_of(aggregate_all)[1] for _ in range(args.repeat)]

    budgets = [cores * wall / (1 - TARGET_COST) - cpu for wall, cpu in off]
    budget = statistics.median(budgets)
    floor = statistics.median(ingest) + statistics.median(aggregate)
    off_wall = statistics.median(w for w, _ in off)
    off_cpu = statistics.median(c for _, c in off)
    floor_round = max(off_wall, (off_cpu + floor) / cores)
    result = {
        "events": n,
        "clients": clients,
        "cores": cores,
        "rows": counts,
        "round_s": round(off_wall, 2),
        "round_cpu_s": round(off_cpu, 2),
        "metrics_round_s": round(statistics.median(on), 2),
        "metrics_cost": round(1 - off_wall / statistics.median(on), 3),
        "beside_round_s": round(statistics.median(beside), 2),
        "beside_cost": round(1 - off_wall / statistics.median(beside), 3),
        "beside_cost_all": [round(1 - w / b, 3) for (w, _), b in zip(off, beside, strict=True)],
        "budget_cpu_s": round(budget, 2),
        "budget_cpu_s_all": [round(b, 2) for b in budgets],
        "ingest_cpu_s": round(statistics.median(ingest), 2),
        "ingest_cpu_s_all": [round(s, 2) for s in ingest],
        "aggregate_cpu_s": round(statistics.median(aggregate), 2),
        "event_keys": len(keys),
        "floor_share": round(floor / budget, 2),
        "floor_share_range": [
            round((min(ingest) + min(aggregate)) / max(budgets), 2),
            round((max(ingest) + max(aggregate)) / min(budgets), 2),
        ],
        "floor_cost": round(1 - off_wall / floor_round, 3),
        "repeats": args.repeat,
        "span_s": args.span_s,
    }
    print(orjson.dumps(result).decode())
    return result


if __name__ == "__main__":
    main()
