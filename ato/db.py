"""The metrics database from the command line: ``ato db migrate`` and ``ato query``.

Both open the database the settings name (``clickhouse.url``, default the embedded chDB
directory ``<out_dir>/clickhouse``) through :class:`sinks.clickhouse.ClickHouseStore`.
``ato query`` reads every table as with ``FINAL`` (setting ``final = 1``), so rows a replay
wrote twice count once, and prints an aligned table, CSV, or one JSON object per line (CSV
and JSON as the rows stream in, so a large result need not fit in memory).
"""

import csv
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TextIO

import orjson

from ato.config import Settings, clickhouse_url, mask_url
from sinks.clickhouse import ClickHouseStore, chdb_path
from sinks.exceptions import ClickHouseError

FORMATS = ("table", "csv", "json")
QUERY_SETTINGS = {"final": 1}  # every ReplacingMergeTree read as FINAL: duplicates count once
STREAMED = re.compile(r"(SELECT|WITH)\b", re.IGNORECASE)  # what chDB streams
INTO_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.IGNORECASE)  # what a stream drops
# statements that read only: what `ato query` runs unless told it may write
READ_ONLY_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")
# the first words of ClickHouse's other statements; any other first word is refused as a typo
WRITE_STATEMENTS = frozenset(
    "INSERT CREATE ALTER DELETE UPDATE DROP UNDROP TRUNCATE RENAME EXCHANGE OPTIMIZE SYSTEM"
    " ATTACH DETACH MOVE GRANT REVOKE SET USE KILL CHECK WATCH BACKUP RESTORE BEGIN COMMIT"
    " ROLLBACK FROM VALUES".split()
)


def statements(sql: str) -> list[str]:
    """The statements of ``sql`` split at semicolons outside quotes and comments, each
    stripped of its comments and white space (empty statements left out)."""
    found: list[str] = []
    current: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            end = i + 1
            while end < n and sql[end] != c:
                end += 2 if sql[end] == "\\" else 1
            current.append(sql[i : end + 1])
            i = end + 1
        elif sql.startswith("--", i) or c == "#":
            end = sql.find("\n", i)
            i = n if end < 0 else end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
            current.append(" ")
        elif c == ";":
            found.append("".join(current).strip())
            current = []
            i += 1
        else:
            current.append(c)
            i += 1
    found.append("".join(current).strip())
    return [statement for statement in found if statement]


def check_sql(sql: str, write: bool = False) -> None:
    """Refuse what ``ato query`` does not run: no statement, several, or (without ``write``)
    one that is not read-only."""
    found = statements(sql)
    if not found:
        msg = "no SQL to run (the statement is empty)"
        raise ClickHouseError(msg)
    if len(found) > 1:
        msg = f"one statement at a time: this SQL holds {len(found)} (split at ';')"
        raise ClickHouseError(msg)
    words = found[0].lstrip("( \t\r\n").split(None, 1)
    first = words[0].upper() if words else ""
    if first not in READ_ONLY_STATEMENTS and first not in WRITE_STATEMENTS:
        msg = (
            f"{first or found[0]!r} does not start a ClickHouse statement (a typo?); ato query"
            f" runs read-only statements ({', '.join(READ_ONLY_STATEMENTS)})"
        )
        raise ClickHouseError(msg)
    if not write and first not in READ_ONLY_STATEMENTS:
        msg = (
            f"ato query runs read-only statements ({', '.join(READ_ONLY_STATEMENTS)}), not"
            f" {first or found[0]!r}: pass --write to change the database (the tables and"
            " views of the schema belong to `ato db migrate`)"
        )
        raise ClickHouseError(msg)


def streams(statement: str) -> bool:
    """Whether ``statement`` (stripped of comments) can stream its rows: a ``SELECT`` or
    ``WITH`` (all chDB streams) not writing them ``INTO OUTFILE`` (a stream drops that)."""
    return bool(STREAMED.match(statement.lstrip("( \t\r\n"))) and not INTO_OUTFILE.search(statement)


def open_store(settings: Settings, must_exist: bool = False) -> ClickHouseStore:
    """The store of ``settings``; ``must_exist``: an absent chDB directory is an error, not
    a new empty database."""
    url = clickhouse_url(settings)
    path = chdb_path(url)
    if must_exist and path is not None and not (path / "metadata").is_dir():
        what = "is not an embedded ClickHouse directory" if path.exists() else "does not exist"
        msg = (
            f"{path} {what} (clickhouse.url {mask_url(url)}): run `ato run` or `ato db"
            " migrate` first, or pass --url / --config"
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


@contextmanager
def query(
    settings: Settings, sql: str, write: bool = False
) -> Iterator[tuple[list[str], Iterator[Sequence[Sequence[Any]]]]]:
    """Column names and blocks of rows of ``sql`` run in the settings' database (one
    statement; a read-only one unless ``write``: :func:`check_sql`). ``SELECT`` and ``WITH``
    rows stream as ClickHouse sends them."""
    check_sql(sql, write)
    store = open_store(settings, must_exist=True)
    try:
        stream = streams(statements(sql)[0])
        with store.query_blocks(sql, QUERY_SETTINGS, stream) as (columns, blocks):
            yield columns, blocks
    finally:
        store.close()


def write_result(
    columns: Sequence[str], blocks: Iterable[Sequence[Sequence[Any]]], fmt: str, out: TextIO
) -> None:
    """Write rows to ``out`` as ``table`` (aligned, numbers right, floats to 6 decimals,
    after the last row), ``csv`` (values exact, quoted where CSV needs it) or ``json`` (an
    object per line, values exact); CSV and JSON block by block, as the rows come."""
    if fmt == "table":
        out.write(format_table(columns, [row for block in blocks for row in block]))
        return
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for block in blocks:
            writer.writerows([[_exact(v) for v in row] for row in block])
        return
    twice = sorted({name for name in columns if list(columns).count(name) > 1})
    if twice:
        msg = (
            f"--format json: column name(s) {', '.join(map(repr, twice))} repeat, and a JSON"
            " object keeps one of each: name each column (AS ...)"
        )
        raise ClickHouseError(msg)
    option = orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS
    for block in blocks:
        lines = [
            orjson.dumps(
                {name: _json_value(v) for name, v in zip(columns, row, strict=True)},
                default=str,
                option=option,
            )
            for row in block
        ]
        out.write(b"".join(line + b"\n" for line in lines).decode())


INT_RANGE = (-(2**63), 2**64 - 1)  # what a JSON number of orjson holds


def _json_value(value: Any) -> Any:
    """``value`` as orjson can write it: integers past 64 bits as decimal strings (as
    ClickHouse's own JSON output quotes 128- and 256-bit integers)."""
    if isinstance(value, int) and not INT_RANGE[0] <= value <= INT_RANGE[1]:
        return str(value)
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


def _exact(value: Any) -> str:
    """A CSV cell: the value as it is (empty for NULL), floats in full, times to the
    microsecond with their zone offset when they have one, text unescaped."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


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
