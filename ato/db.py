"""The metrics database from the command line: ``ato db migrate`` and ``ato query``.

Both open the database the settings name (``clickhouse.url``, default the embedded chDB
directory ``<out_dir>/clickhouse``) through :class:`sinks.clickhouse.ClickHouseStore`.
``ato query`` reads every table as with ``FINAL`` (setting ``final = 1``), so rows a replay
wrote twice count once, and prints an aligned table, CSV, or one JSON object per line.
"""

import csv
import io
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson

from ato.config import Settings, clickhouse_url, mask_url
from sinks.clickhouse import ClickHouseStore, chdb_path
from sinks.exceptions import ClickHouseError

FORMATS = ("table", "csv", "json")
QUERY_SETTINGS = {"final": 1}  # every ReplacingMergeTree read as FINAL: duplicates count once


def open_store(settings: Settings, must_exist: bool = False) -> ClickHouseStore:
    """The store of ``settings``; ``must_exist``: an absent chDB directory is an error, not
    a new empty database."""
    url = clickhouse_url(settings)
    path = chdb_path(url)
    if must_exist and path is not None and not path.is_dir():
        msg = (
            f"no embedded ClickHouse at {path} (clickhouse.url {mask_url(url)}): run `ato run`"
            " or `ato db migrate` first, or pass --url / --config"
        )
        raise ClickHouseError(msg)
    return ClickHouseStore(url, settings.clickhouse.database)


def migrate(settings: Settings) -> tuple[ClickHouseStore, list[str], list[str]]:
    """Apply pending migrations; return the (closed) store, the versions applied now and
    every version the database has."""
    store = open_store(settings)
    try:
        new = store.migrate()
        every = [version for version, _checksum, _at in store.applied()]
    finally:
        store.close()
    return store, new, every


def query(settings: Settings, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of ``sql`` run in the settings' database."""
    store = open_store(settings, must_exist=True)
    try:
        return store.query(sql, settings=QUERY_SETTINGS)
    finally:
        store.close()


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """``rows`` as ``table`` (aligned, numbers right), ``csv`` or ``json`` (object per line)."""
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else _text(v) for v in row] for row in rows])
        return out.getvalue()
    if fmt == "json":
        option = orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS
        lines = [
            orjson.dumps(dict(zip(columns, row, strict=True)), default=str, option=option)
            for row in rows
        ]
        return b"".join(line + b"\n" for line in lines).decode()
    return format_table(columns, rows)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An aligned text table: a header, a rule, the rows (numbers right-aligned), a count."""
    cells = [[_text(v) for v in row] for row in rows]
    numeric = [
        all(_is_number(row[i]) for row in rows if row[i] is not None) for i in range(len(columns))
    ]
    widths = [max([len(name), *(len(line[i]) for line in cells)]) for i, name in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = (
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        )
        return "  ".join(parts).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out.extend(line(values) for values in cells)
    out.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(out) + "\n"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return repr(round(value, 6))
    if isinstance(value, datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
        return text + f".{value.microsecond // 1000:03d}" if value.microsecond else text
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return value.replace("\n", "\\n")
    return str(value)
