"""ClickHouse metrics: the project's schema, a store for one database, and the flow's sink.

Install: nothing beyond ato-stream (clickhouse-connect, chdb; pyarrow comes with chdb).

Use: ``ClickHouseStore(url, database)`` opens ``chdb:///abs/path`` (embedded chDB, the default
under the run's ``out_dir``), ``chdb://relative/path`` or ``http(s)://user:pass@host:port[/db]``
through the one clickhouse-connect code path; ``migrate()`` applies the numbered files of
``sinks/clickhouse_schema`` that the database has not seen. ``ClickHouseSink(settings, url)``
takes ``(key, MetricBlock)`` items, any key: a block is one table's rows as equal-length numpy
columns (timestamps as int64 epoch ms; ``-1`` in a ``Nullable`` integer column is NULL); a
``String`` column may also be an Arrow string array, or a dictionary array (codes into a few
names: built without a Python object per row, and inserted into ``LowCardinality`` columns
three times faster than plain strings). It also takes ``(key, DeferredBlock)`` items: the
flow's own data for a table (stall and outcome records), which the builder the flow gave the
sink (:meth:`ClickHouseSink.bind`) turns into a block only when it is inserted, so the blocks
of many shard outputs become columns at once, on the insert thread.

How it works: the sink has ONE partition, so exactly one worker of a cluster opens the
database (chDB is in-process: one database directory per process, and a directory can be
open in one process at a time). The partition buffers blocks per table, concatenates them and
makes one Arrow insert per table per flush (deferred blocks of a table are made into one
block first, and checked then): when a table holds ``flush_rows`` rows, when
``flush_interval_s`` has passed (checked on each write), at every epoch end (``snapshot``)
and at close. Inserts run on a background thread (``background_inserts``, one insert per
table in flight), so the flow keeps working while ClickHouse takes a block. A failed insert
keeps its rows and is retried with backoff on later writes; an epoch end waits (retrying)
until everything buffered is written, because rows emitted before a snapshot must be durable
before it. A flow without recovery takes no snapshots, and its sink (``epoch_flush=False``)
lets epoch ends pass without waiting; close still writes everything. More than
``max_buffer_rows`` rows waiting make the flow wait for inserts until they are within it.
Inserts failing for longer than ``retry_timeout_s``, or more than ``max_buffer_rows`` rows
waiting with no insert in flight, fail the flow with :class:`ClickHouseError`: nothing is
dropped silently.

Delivery guarantee: at least once into the row tables, exactly once for readers. Every row
table is a ReplacingMergeTree keyed by its duplicate key, so rows a replay, a restart or a
retried insert writes again collapse: a query with ``FINAL`` (``ato query`` sets
``final = 1``) counts each key once, at any time and with no window. The hour tables are
recomputed from the row tables read with ``FINAL`` by refreshable materialized views, so
they never double count either. A server refreshes them every minute (they lag the row
tables by at most a minute plus one refresh). An embedded database is refreshed by the read
that finds a row table changed since the last refresh (:meth:`ClickHouseStore.query`), and
not on a schedule while a run writes it (nothing else can read it then).
"""

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeAlias
from urllib.parse import unquote, urlsplit, urlunsplit

import clickhouse_connect
import numpy as np
import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from clickhouse_connect.driver.exceptions import Error as DriverError

from ato.config import (
    ClickHouseSettings,
    chdb_location,
    clickhouse_url,
    mask_url,
    url_address_problem,
)
from sinks.exceptions import ClickHouseError
from sinks.insert_order import in_key_order

__all__ = [
    "SCHEMA_DIR",
    "ClickHouseError",
    "ClickHouseSink",
    "ClickHouseSinkPartition",
    "ClickHouseStore",
    "DeferredBlock",
    "MetricBlock",
    "Migration",
    "TableStats",
    "chdb_path",
    "clickhouse_url",
    "mask_url",
    "migrations",
]

SCHEMA_DIR = Path(__file__).with_name("clickhouse_schema")
QUERY_FAILED = "query failed"
INSERT_SETTINGS = {"optimize_on_insert": 0}  # duplicates collapse at merge / FINAL: 1.7x faster
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
# a server request's longest wait (clickhouse-connect's default, 300 s, held a run that long
# on a server that took connections and never answered); the sink uses retry_timeout_s
SERVER_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
# what clickhouse-connect (and chDB's backend) append to a query's SQL; server errors quote it
_DRIVER_FORMAT = re.compile(r"\s*FORMAT Native")
# the tables and views the migrations leave (a test checks a fresh database has exactly these)
SCHEMA_TABLES = frozenset({
    "decisions", "decisions_hour", "decisions_hour_mv", "flow_health", "flow_health_hour",
    "flow_health_hour_mv", "funnel_hour", "funnel_hour_mv", "funnel_minute", "outcomes",
    "outcomes_hour", "outcomes_hour_mv", "schema_migration_steps", "schema_migrations",
    "stalls", "stalls_hour", "stalls_hour_mv",
})  # fmt: skip
_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_TERMINATOR = re.compile(r";[ \t]*$", re.MULTILINE)
_DTYPE_KINDS = {  # numpy dtype kinds a block may hold for each column type
    **{f"{sign}Int{bits}": "iub" for sign in ("", "U") for bits in (8, 16, 32, 64)},
    "Float32": "iuf",
    "Float64": "iuf",
    "DateTime64": "iuM",
    "String": "OUS",
}

# clickhouse-connect logs failed requests itself; without a handler Python's last-resort
# handler would print them beside our own error. Handlers the application sets still get them.
logging.getLogger("clickhouse_connect").addHandler(logging.NullHandler())
log = logging.getLogger(__name__)


Column: TypeAlias = np.ndarray | pa.Array | pa.ChunkedArray


@dataclass(frozen=True)
class MetricBlock:
    """Rows of one table as equal-length columns named like the table's columns.

    A column is a numpy array, or for ``String`` columns an Arrow (dictionary) string array.
    """

    table: str
    columns: dict[str, Column]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


@dataclass(frozen=True)
class DeferredBlock:
    """Rows of one table as the flow made them, turned into a :class:`MetricBlock` by the
    sink's :class:`BlockBuilder` only when they are inserted (on the insert thread, with
    ``background_inserts``): the blocks of many shard outputs become columns at once, not one
    output at a time on the flow's thread.

    ``kind`` names what the builder makes of ``parts`` (picklable data, in order);
    ``source`` is the builder's :attr:`BlockBuilder.source`, checked when the sink takes the
    block (the codes in ``parts`` mean nothing to a builder of another catalog).
    """

    table: str
    kind: str
    rows: int
    parts: tuple[Any, ...]
    source: str

    def __len__(self) -> int:
        return self.rows


class BlockBuilder(Protocol):
    """Makes the :class:`MetricBlock` of deferred parts (``operators.metrics.MetricRows``)."""

    source: str

    def block(self, kind: str, parts: list[Any]) -> MetricBlock:
        """The rows of ``parts``, in order, as one block."""
        ...


SinkBlock: TypeAlias = MetricBlock | DeferredBlock


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file of the schema; ``{db}`` in it stands for the database."""

    version: str
    path: Path
    checksum: str

    def statements(self, database: str) -> list[str]:
        """The file's statements (split at a ``;`` ending a line), for ``database``."""
        lines = self.path.read_text(encoding="utf-8").splitlines()
        text = "\n".join(line for line in lines if not line.lstrip().startswith("--"))
        parts = (part.strip() for part in _TERMINATOR.split(text))
        return [part.replace("{db}", database) for part in parts if part]


def migrations(directory: Path = SCHEMA_DIR) -> list[Migration]:
    """The migrations in ``directory``, in version order; ``NNNN_name.sql`` files only."""
    found: list[Migration] = []
    numbers: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            msg = f"{path}: migration files are named NNNN_lower_case_name.sql"
            raise ClickHouseError(msg)
        if match.group(1) in numbers:
            msg = f"{path}: migration number {match.group(1)} is also {numbers[match.group(1)]}"
            raise ClickHouseError(msg)
        numbers[match.group(1)] = path.name
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        found.append(Migration(path.stem, path, checksum))
    return found


def chdb_path(url: str) -> Path | None:
    """The directory of a ``chdb://`` URL (absolute), None for ``chdb://memory`` or a server."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "chdb":
        return None
    location = chdb_location(url)
    if not location:  # chDB would take it for memory: a mistyped path would lose the rows
        msg = f"ClickHouse url {url!r} names no directory (chdb://memory for a database in memory)"
        raise ClickHouseError(msg)
    if location in ("memory", ":memory:"):
        return None
    return Path(location).resolve()  # chdb:///abs/path keeps its leading slash


def _lock_holder(path: Path) -> str | None:
    """Who holds chDB's lock on ``path`` (its status file), if another process does (this
    one may open a directory it has open again)."""
    status = path / "status"
    try:
        with open(status, "rb") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                text = file.read(200).decode(errors="replace")
                pid = re.search(r"PID:\s*(\d+)", text)
                if pid and int(pid.group(1)) == os.getpid():
                    return None
                return f"process {pid.group(1)}" if pid else "another process"
            fcntl.flock(file, fcntl.LOCK_UN)
    except OSError:
        return None
    return None


def _message(exc: BaseException, password: str | None) -> str:
    text = " ".join(str(exc).split())
    text = text.partition(" Stack trace")[0]  # chDB appends its C++ frames: kilobytes
    head, expected, tail = text.partition(" Expected one of: ")  # a syntax error's long list
    if expected:
        text = f"{head} ({tail.rpartition('(')[2]}"
    for secret in {password, unquote(password)} if password else ():
        text = text.replace(secret, "***")
    return text


class ClickHouseStore:
    """One ClickHouse database: migrations, columnar inserts and queries.

    ``database`` is the settings' ``clickhouse.database``; an ``http(s)://`` URL naming a
    database in its path (``/analytics``) overrides it.
    """

    def __init__(
        self,
        url: str,
        database: str = "ato",
        schema_dir: Path = SCHEMA_DIR,
        timeout_s: float = SERVER_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.display_url = mask_url(url)
        self.schema_dir = schema_dir
        self.timeout_s = timeout_s
        problem = url_address_problem(url)
        if problem:
            msg = f"ClickHouse url {self.display_url!r}: {problem}"
            raise ClickHouseError(msg)
        parts = urlsplit(url)
        self._password = parts.password
        scheme = parts.scheme.lower()
        if scheme == "chdb":
            self.database = database
            self.client = self._open_chdb()
        elif scheme in ("http", "https"):
            self.database = parts.path.strip("/") or database
            self.client = self._open_server(scheme, urlunsplit(parts._replace(path="")))
        else:
            msg = (
                f"ClickHouse url {self.display_url!r}: expected chdb:///abs/path,"
                " chdb://relative/path or http(s)://user:password@host:port[/database]"
            )
            raise ClickHouseError(msg)
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", self.database):
            self.client.close()
            msg = f"ClickHouse database {self.database!r}: expected a plain identifier"
            raise ClickHouseError(msg)
        self._columns: dict[str, dict[str, str]] = {}
        self._sorting_keys: dict[str, list[str]] = {}
        self._in_database = False

    @property
    def embedded(self) -> bool:
        """Whether this is an in-process chDB database (no server refreshes it meanwhile)."""
        return self.url.lower().startswith("chdb:")

    def _open_chdb(self) -> Any:
        path = chdb_path(self.url)
        query = urlsplit(self.url).query
        dsn = f"chdb://{path if path is not None else 'memory'}" + (f"?{query}" if query else "")
        holder = _lock_holder(path) if path is not None else None
        if holder is not None:  # asked first: chDB would print its own error to stderr
            raise ClickHouseError(self._in_use(holder))
        try:
            return clickhouse_connect.get_client(dsn=dsn)
        except (DriverError, OSError) as exc:
            text = _message(exc, None)
            holder = _lock_holder(path) if path is not None else None
            if holder is not None:  # taken since
                raise ClickHouseError(self._in_use(holder)) from exc
            if "already initialized with path" in text:
                hint = (
                    "this process already has another chDB directory open (chDB runs one"
                    f" directory per process): close it first ({text})"
                )
            else:
                hint = f"{text}; check clickhouse.url and that the directory is writable"
            msg = f"cannot open the embedded ClickHouse {self.display_url}: {hint}"
            raise ClickHouseError(msg) from exc

    def _in_use(self, holder: str) -> str:
        return (
            f"cannot open the embedded ClickHouse {self.display_url}: the directory is in use"
            f" by {holder} (a running `ato run`?); chDB lets one process open a database"
            " directory at a time: wait until it ends, or point clickhouse.url at a"
            " ClickHouse server"
        )

    def _open_server(self, scheme: str, dsn: str) -> Any:
        try:
            return clickhouse_connect.get_client(
                dsn=dsn,
                interface=scheme,
                connect_timeout=min(CONNECT_TIMEOUT_S, self.timeout_s),
                send_receive_timeout=self.timeout_s,
            )
        except (DriverError, OSError, ValueError) as exc:
            msg = (
                f"cannot connect to ClickHouse at {self.display_url}:"
                f" {_message(exc, self._password)}; check clickhouse.url (host, port, user,"
                " password) and that the server is running"
            )
            raise ClickHouseError(msg) from exc

    def __enter__(self) -> "ClickHouseStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _fail(self, what: str, exc: BaseException, sql: str = "") -> ClickHouseError:
        """The error to raise; with ``sql``, the format clause the driver appended to it is
        left out of the server's message, which quotes the statement it got."""
        text = _message(exc, self._password)
        if sql and not re.search(r"\bFORMAT\b|\bNative\b", sql, re.IGNORECASE):
            text = _DRIVER_FORMAT.sub("", text)
            if re.search(r"\bFORMAT\b|\bNative\b", text):  # read as part of the SQL
                text += (
                    " (the SQL seems to end early: the server read the driver's own"
                    " 'FORMAT Native', which follows it, as part of the statement)"
                )
        return ClickHouseError(f"ClickHouse {self.display_url}: {what}: {text}")

    def _command(self, sql: str) -> Any:
        try:
            return self.client.command(sql)
        except (DriverError, OSError) as exc:
            what = f"{sql.split(chr(10), maxsplit=1)[0][:80]!r} failed"
            raise self._fail(what, exc) from exc

    def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return list(self.client.query(sql).result_rows)
        except (DriverError, OSError) as exc:
            what = "query failed"
            raise self._fail(what, exc) from exc

    def migrate(self) -> list[str]:
        """Apply the migrations the database has not seen; return their versions.

        A migration that was applied and has since changed, or an applied version this code
        does not know (the database is newer), is an error: add a new numbered file instead.
        Each statement is recorded (``schema_migration_steps``) as it succeeds, so a
        migration stopped half-way (a crash, a server gone) goes on from the statement that
        failed: re-run whole, one that renames or drops a table failed for good.
        """
        db = self.database
        self._command(f"CREATE DATABASE IF NOT EXISTS {db}")
        self._command(
            f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version String,"
            " checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC'))"
            " ENGINE = MergeTree ORDER BY version"
        )
        self._command(
            f"CREATE TABLE IF NOT EXISTS {db}.schema_migration_steps (version String,"
            " checksum String, step UInt32, applied_at DateTime64(3, 'UTC') DEFAULT"
            " now64(3, 'UTC')) ENGINE = MergeTree ORDER BY (version, step)"
        )
        rows = self._rows(f"SELECT version, any(checksum) FROM {db}.schema_migrations GROUP BY 1")
        applied: dict[str, str] = {version: checksum for version, checksum in rows}
        known = migrations(self.schema_dir)
        unknown = sorted(set(applied) - {m.version for m in known})
        if unknown:
            msg = (
                f"ClickHouse {self.display_url} database {db} has migrations this version of"
                f" ato-stream does not know: {', '.join(unknown)} (use a newer ato-stream or"
                " another database)"
            )
            raise ClickHouseError(msg)
        new: list[str] = []
        for migration in known:
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    msg = (
                        f"migration {migration.path.name} changed after it was applied to"
                        f" database {db} at {self.display_url} (checksum"
                        f" {applied[migration.version][:12]}, file now"
                        f" {migration.checksum[:12]}): restore the file and put the change in"
                        " a new numbered migration"
                    )
                    raise ClickHouseError(msg)
                continue
            done = {
                int(step)
                for (step,) in self._rows(
                    f"SELECT step FROM {db}.schema_migration_steps WHERE version ="
                    f" '{migration.version}' AND checksum = '{migration.checksum}'"
                )
            }
            for step, statement in enumerate(migration.statements(db)):
                if step in done:
                    continue
                self._command(statement)
                self._command(
                    f"INSERT INTO {db}.schema_migration_steps (version, checksum, step)"
                    f" VALUES ('{migration.version}', '{migration.checksum}', {step})"
                )
            self._command(
                f"INSERT INTO {db}.schema_migrations (version, checksum)"
                f" VALUES ('{migration.version}', '{migration.checksum}')"
            )
            new.append(migration.version)
        self._columns.clear()
        if self.schema_dir == SCHEMA_DIR:
            self._check_schema_tables()
        return new

    def _check_schema_tables(self) -> None:
        """Fail when a table or view the shipped migrations made is gone (dropped by hand):
        the migrations count as applied, so running them again would not bring it back."""
        missing = sorted(SCHEMA_TABLES - set(self.tables()))
        if missing:
            msg = (
                f"ClickHouse {self.display_url} database {self.database} lacks"
                f" {', '.join(missing)}, which its applied migrations made (dropped by hand?):"
                " restore them from a backup, or use another database"
            )
            raise ClickHouseError(msg)

    def applied(self) -> list[tuple[str, str, Any]]:
        """``(version, checksum, applied_at)`` of every applied migration."""
        return self._rows(
            f"SELECT version, any(checksum), min(applied_at)"
            f" FROM {self.database}.schema_migrations GROUP BY 1 ORDER BY 1"
        )

    def tables(self) -> list[str]:
        """The database's tables; their columns are read once and kept, so that blocks are
        checked without asking a server that may be down."""
        if not self._columns:
            rows = self._rows(
                "SELECT table, name, type FROM system.columns"
                f" WHERE database = '{self.database}' AND NOT startsWith(table, '.')"
                " ORDER BY table, position"
            )
            for name, column, kind in rows:
                self._columns.setdefault(name, {})[column] = kind
            keys = self._rows(
                f"SELECT name, sorting_key FROM system.tables WHERE database = '{self.database}'"
            )
            self._sorting_keys = {
                name: _key_columns(key, self._columns.get(name, {})) for name, key in keys
            }
        return sorted(self._columns)

    def sorting_key(self, table: str) -> list[str]:
        """The columns of ``table``'s ORDER BY; empty when it sorts by an expression."""
        self.columns(table)
        return self._sorting_keys.get(table, [])

    def columns(self, table: str) -> dict[str, str]:
        """Column name -> ClickHouse type of ``table``."""
        if table not in self.tables():
            msg = (
                f"ClickHouse {self.display_url}: no table {self.database}.{table}"
                " (run `ato db migrate`)"
            )
            raise ClickHouseError(msg)
        return self._columns[table]

    def validate(self, block: MetricBlock) -> None:
        """Raise if ``block`` does not have exactly the table's columns, of equal length."""
        if not re.match(r"^[a-z_][a-z0-9_]*$", block.table):
            msg = f"metric block for {block.table!r}: not a table name"
            raise ClickHouseError(msg)
        expected = self.columns(block.table)
        missing = [c for c in expected if c not in block.columns]
        extra = [c for c in block.columns if c not in expected]
        if missing or extra:
            msg = (
                f"metric block for {block.table}: columns do not match the table"
                f" (missing {missing}, unknown {extra})"
            )
            raise ClickHouseError(msg)
        lengths = {name: len(values) for name, values in block.columns.items()}
        if len(set(lengths.values())) > 1:
            msg = f"metric block for {block.table}: columns of different lengths {lengths}"
            raise ClickHouseError(msg)
        for name, kind in expected.items():
            values = block.columns[name]
            base = _base_type(kind)
            arrow_type = values.type if isinstance(values, pa.Array | pa.ChunkedArray) else None
            if arrow_type is not None:  # text for a String column; else what _arrow_column made
                ok = (base == "String") == _is_arrow_text(arrow_type)
            else:
                dtype = values.dtype if isinstance(values, np.ndarray) else np.asarray(values).dtype
                ok = dtype.kind in _DTYPE_KINDS[base]
            if not ok:  # the message only now: naming a dtype is dear, and blocks are many
                got = f"Arrow {arrow_type}" if arrow_type is not None else str(dtype)
                msg = f"metric block for {block.table}: column {name} ({kind}) got {got} values"
                raise ClickHouseError(msg)

    def insert(self, block: MetricBlock, validated: bool = False) -> int:
        """Insert ``block`` as one columnar (Arrow) insert; return its row count.

        ``validated``: the caller checked ``block`` (or every block it was joined from) with
        :meth:`validate` already.
        """
        if not validated:
            self.validate(block)
        rows = len(block)
        if rows == 0:
            return 0
        types = self.columns(block.table)
        try:
            table = pa.table(
                {name: _arrow_column(block.columns[name], kind) for name, kind in types.items()}
            )
            # one dictionary per column: an Arrow IPC stream cannot replace it between chunks
            table = table.unify_dictionaries()
            # rows in the table's order: ClickHouse skips its own (dearer) sort of the block
            table = in_key_order(table, self.sorting_key(block.table))
        except (pa.ArrowException, TypeError, ValueError) as exc:
            msg = f"metric block for {block.table}: columns do not convert: {exc}"
            raise ClickHouseError(msg) from exc
        try:
            self.client.insert_arrow(
                block.table, table, database=self.database, settings=INSERT_SETTINGS
            )
        except (DriverError, OSError) as exc:
            what = f"insert of {rows} rows into {block.table} failed"
            raise self._fail(what, exc) from exc
        return rows

    def query(
        self, sql: str, settings: dict[str, Any] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run ``sql`` in the database; return column names and rows.

        ``settings`` hold for this and later queries of the store (session settings, so
        they stay out of the SQL that error messages quote).
        """
        self._before_query(settings)
        try:
            result = self.client.query(sql)
        except (DriverError, OSError) as exc:
            raise self._fail(QUERY_FAILED, exc, sql) from exc
        names = list(result.column_names)
        if not names and not result.result_rows:
            names = self._result_names(sql)
        return names, [tuple(row) for row in result.result_rows]

    @contextlib.contextmanager
    def query_blocks(
        self, sql: str, settings: dict[str, Any] | None = None, streamable: bool = False
    ) -> Iterator[tuple[list[str], Iterator[Sequence[Sequence[Any]]]]]:
        """As :meth:`query`, but the rows come in blocks as ClickHouse sends them, so a
        result need not fit in memory. ``streamable``: ``sql`` is a query ClickHouse can stream
        (chDB streams only ``SELECT`` and ``WITH``, and a stream drops ``INTO OUTFILE``);
        else its rows come as one block."""
        if not streamable:
            names, rows = self.query(sql, settings)
            yield names, iter([rows] if rows else [])
            return
        self._before_query(settings)
        with contextlib.ExitStack() as open_stream:
            try:
                stream = open_stream.enter_context(self.client.query_row_block_stream(sql))
                names = list(stream.source.column_names)
                first = next(iter(stream), None)
            except (DriverError, OSError) as exc:
                raise self._fail(QUERY_FAILED, exc, sql) from exc
            if first is None:  # nothing streams: chDB may have left out the names too
                open_stream.close()
                yield names or self._result_names(sql), iter([])
                return
            yield names, self._blocks(first, stream, sql)

    def _blocks(
        self, first: Sequence[Sequence[Any]], stream: Iterable[Sequence[Sequence[Any]]], sql: str
    ) -> Iterator[Sequence[Sequence[Any]]]:
        """``first``, then the stream's other blocks (a failure as a ClickHouseError)."""
        yield first
        try:
            yield from stream
        except (DriverError, OSError) as exc:
            raise self._fail(QUERY_FAILED, exc, sql) from exc

    def _before_query(self, settings: dict[str, Any] | None) -> None:
        """Into the database, hour tables current (embedded), ``settings`` set."""
        self._use_database()
        if self.embedded:
            self.refresh_stale_rollups()
        for name, value in (settings or {}).items():
            self.client.set_client_setting(name, value)

    def _result_names(self, sql: str) -> list[str]:
        """The column names ``sql`` would give (chDB leaves them out of an empty result);
        none for a statement that is not a query."""
        try:
            described = self.client.query(f"DESCRIBE ({sql.strip().rstrip(';')})")
        except (DriverError, OSError):
            return []
        return [str(row[0]) for row in described.result_rows]

    def _use_database(self) -> None:
        if self._in_database:
            return
        if not self._command(f"EXISTS DATABASE {self.database}"):
            hint = (
                "a chdb://memory database lives only in the process that made it: no other"
                " command can read a run's"
                if self.embedded and chdb_path(self.url) is None
                else "run `ato db migrate`, or `ato run` with clickhouse.enabled"
            )
            msg = f"ClickHouse {self.display_url} has no database {self.database} ({hint})"
            raise ClickHouseError(msg)
        self.client.database = self.database
        self._in_database = True

    def rollup_views(self) -> list[str]:
        """The database's refreshable materialized views (the hour rollups)."""
        rows = self._rows(
            f"SELECT view FROM system.view_refreshes WHERE database = '{self.database}'"
            " ORDER BY view"
        )
        return [view for (view,) in rows]

    def refresh_rollups(self) -> list[str]:
        """Recompute every hour table now and wait for it; return the views refreshed.

        The refreshes are started together and run side by side, then waited for.
        """
        views = self.rollup_views()
        names = [f"{self.database}.{view}" for view in views]
        self._wait_for_refreshes(names)
        self._refresh(names)
        return views

    def _refresh(self, views: list[str]) -> None:
        """Start the refreshes of ``views`` (qualified names, none under way) together, then
        wait for them."""
        for name in views:
            self._command(f"SYSTEM REFRESH VIEW {name}")
        for name in views:
            self._command(f"SYSTEM WAIT VIEW {name}")

    def _wait_for_refreshes(self, views: list[str]) -> None:
        """Wait for the refreshes of ``views`` (qualified names) that are under way."""
        for name in views:
            with contextlib.suppress(DriverError):  # a refresh failed earlier: start afresh
                self.client.command(f"SYSTEM WAIT VIEW {name}")

    def rollups_stale(self) -> bool:
        """Whether an hour table may lag its row table: a rollup view not refreshed since
        the database was opened in this process, or a part of a row table written at or
        after the start of the oldest latest refresh. Parts carry their time in seconds, so
        a part from the same second as a refresh counts as newer: at worst one refresh too
        many, never a stale answer (and a background merge of a row table's parts counts
        too)."""
        db = self.database
        views = self._rows(
            f"SELECT last_success_time FROM system.view_refreshes WHERE database = '{db}'"
        )
        if not views:
            return False
        starts = [start for (start,) in views]
        if any(start is None for start in starts):
            return True
        targets = [
            match.group(1)
            for (query,) in self._rows(
                f"SELECT create_table_query FROM system.tables WHERE database = '{db}'"
                " AND engine = 'MaterializedView'"
            )
            if (match := re.search(rf"\bTO {db}\.(\w+)", query))
        ]
        hour_tables = ", ".join(f"'{name}'" for name in targets) or "''"
        [(newest,)] = self._rows(
            "SELECT max(modification_time) FROM system.parts"
            f" WHERE database = '{db}' AND active AND table NOT IN ({hour_tables})"
        )
        return bool(newest >= min(starts))

    def pause_rollups(self) -> None:
        """Stop the scheduled refreshes of the hour tables in this process (an embedded
        database while a run writes it: no other process can read it meanwhile, and a read
        of this one refreshes them first, :meth:`refresh_stale_rollups`). A refresh already
        under way (chDB starts one per view when a process opens the database) is not
        stopped by that: it is waited for, so none runs beside the run's inserts."""
        names = [f"{self.database}.{view}" for view in self.rollup_views()]
        for name in names:
            self._command(f"SYSTEM STOP VIEW {name}")
        self._wait_for_refreshes(names)

    def refresh_stale_rollups(self) -> bool:
        """Embedded databases: bring the hour tables up to date before a read (nothing
        refreshes them on a schedule between runs). Resumes paused views, waits for
        refreshes under way (chDB starts one per view when a process opens the database, or
        resumes a paused one), then refreshes every view if :meth:`rollups_stale`; returns
        whether it did."""
        names = [f"{self.database}.{view}" for view in self.rollup_views()]
        for name in names:  # paused by a sink of this process: resumed, they refresh at once
            self._command(f"SYSTEM START VIEW {name}")
        self._wait_for_refreshes(names)
        if not names or not self.rollups_stale():
            return False
        self._refresh(names)
        return True

    def close(self) -> None:
        """Close the client (for chDB: release the directory once no client is left)."""
        self.client.close()


def _key_columns(sorting_key: str, columns: dict[str, str]) -> list[str]:
    """The columns a ``system.tables.sorting_key`` names, or [] if any part of it is an
    expression rather than a column."""
    parts = [part.strip().strip("`") for part in sorting_key.split(",")] if sorting_key else []
    return parts if parts and all(part in columns for part in parts) else []


def _unwrap(kind: str, wrapper: str) -> str:
    if kind.startswith(wrapper + "(") and kind.endswith(")"):
        return kind[len(wrapper) + 1 : -1]
    return kind


@functools.cache
def _base_type(kind: str) -> str:
    """``String``, ``DateTime64``, ``Int64``, ... of a column type (wrappers removed)."""
    base = _unwrap(_unwrap(kind, "LowCardinality"), "Nullable")
    return base.split("(", 1)[0]


def _is_arrow_text(kind: pa.DataType) -> bool:
    """Arrow strings, or a dictionary of them."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _arrow_column(values: Column, kind: str) -> pa.Array | pa.ChunkedArray:
    """``values`` as an Arrow array ClickHouse converts to the column type ``kind``."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values  # validated: strings for a String column
    base = _unwrap(kind, "LowCardinality")
    nullable = base.startswith("Nullable(")
    base = _unwrap(base, "Nullable")
    values = np.asarray(values)
    if base.startswith("DateTime64"):
        if values.dtype.kind == "M":
            values = values.astype("datetime64[ms]").view(np.int64)
        ms = values.astype(np.int64, copy=False)
        mask = ms == -1 if nullable else None
        return pa.array(ms, type=pa.timestamp("ms", tz="UTC"), mask=mask)
    if base == "String":
        return pa.array(values, type=pa.string())
    mask = values == -1 if nullable and values.dtype.kind in "if" else None
    return pa.array(values, mask=mask)


@dataclass
class TableStats:
    """What the sink did with one table's rows."""

    inserted_rows: int = 0
    inserts: int = 0
    failed_inserts: int = 0
    failed_rows: int = 0  # rows of failed attempts, counted per attempt
    pending_rows: int = 0
    last_error: str = ""


class ClickHouseSinkPartition(StatefulSinkPartition[SinkBlock, None]):
    """The one writer of a run's metrics: buffers, flushes, retries, fails loudly.

    ``builder`` makes the blocks of :class:`DeferredBlock` items (none: they are refused).
    """

    def __init__(
        self,
        store: ClickHouseStore,
        settings: ClickHouseSettings,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        epoch_flush: bool = True,
        builder: BlockBuilder | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.epoch_flush = epoch_flush
        self.builder = builder
        self.buffers: dict[str, list[SinkBlock]] = {}
        # per table: the insert, its block, and the rows buffered for it (a joined block a
        # deferred one was made into may hold fewer: summed funnel rows)
        self.in_flight: dict[str, tuple[Future[int], SinkBlock, int]] = {}
        self.pool = (
            ThreadPoolExecutor(1, thread_name_prefix="clickhouse-insert")
            if settings.background_inserts
            else None
        )
        self.table_stats: dict[str, TableStats] = {}
        self.failing_since: dict[str, float] = {}
        self.retry_at: dict[str, float] = {}
        self.backoff: dict[str, float] = {}
        self.attempt_started: dict[str, float] = {}
        self.last_flush = clock()
        self.failure: ClickHouseError | None = None  # what failed the writer, if anything

    def write_batch(self, values: list[SinkBlock]) -> None:
        """Buffer the blocks; insert tables that are full, or all when the interval passed."""
        try:
            self._write(values)
        except ClickHouseError as exc:
            self.failure = exc
            raise

    def _write(self, values: list[SinkBlock]) -> None:
        self._collect(wait=False)
        for block in values:
            if isinstance(block, DeferredBlock):
                self._check_source(block)  # its block is checked when it is made
            else:
                self.store.validate(block)  # a malformed block never succeeds: fail now
            if len(block):
                self.buffers.setdefault(block.table, []).append(block)
                self._stats(block.table).pending_rows += len(block)
        now = self.clock()
        due = now - self.last_flush >= self.settings.flush_interval_s
        if due:
            self.last_flush = now
        for table in list(self.buffers):
            full = self._stats(table).pending_rows >= self.settings.flush_rows
            if due or full or table in self.failing_since:  # a failed one: at its retry time
                self._try_insert(table, now, force=False)
        self._check_bounds()

    def snapshot(self) -> None:
        """Epoch end: everything buffered is written before the snapshot (retrying); without
        ``epoch_flush`` (no recovery, so no snapshot) nothing waits."""
        if self.epoch_flush:
            try:
                self.flush()
            except ClickHouseError as exc:
                self.failure = exc
                raise

    def close(self) -> None:
        """Write what is left and close the database; never raises.

        Bytewax calls this as it drops the partition, also while it unwinds from an error
        (this writer's own, say), where a second exception aborts the process with no
        message. After a failure nothing more is tried; a final write that fails is kept
        in :attr:`failure` (and logged), which :meth:`ClickHouseSink.raise_failure` raises
        once the flow has ended. The hour tables are not refreshed here: a server refreshes
        them on its schedule, and an embedded database when it is next read
        (:meth:`ClickHouseStore.query`)."""
        try:
            if self.failure is None:
                self.flush()
        except ClickHouseError as exc:
            self.failure = exc
            log.error("%s", exc)
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)
            self.store.close()

    def stats(self) -> dict[str, TableStats]:
        """Rows inserted, failed and waiting, per table."""
        return {table: replace(s) for table, s in self.table_stats.items()}

    def flush(self) -> None:
        """Insert every buffered table now; retry with backoff until written or timed out."""
        self.last_flush = self.clock()
        while True:
            self._collect(wait=True)
            for table in [t for t, blocks in self.buffers.items() if blocks]:
                self._try_insert(table, self.clock(), force=True)
            self._collect(wait=True)
            waiting = [t for t, blocks in self.buffers.items() if blocks]
            if not waiting:
                return
            self._check_bounds()
            now = self.clock()
            left = min(self.failing_since[t] + self.settings.retry_timeout_s - now for t in waiting)
            pause = min(self.backoff[t] for t in waiting)
            self.sleep(max(0.0, min(pause, left + 0.001)))

    def _stats(self, table: str) -> TableStats:
        return self.table_stats.setdefault(table, TableStats())

    def _try_insert(self, table: str, now: float, force: bool) -> None:
        """Start inserting ``table``'s buffered rows, unless one insert of it is in flight."""
        blocks = self.buffers.get(table)
        if not blocks or table in self.in_flight:
            return
        if not force and now < self.retry_at.get(table, 0.0):
            return
        block = blocks[0] if len(blocks) == 1 else self._joined(table, blocks)
        buffered = sum(len(b) for b in blocks)
        del self.buffers[table]
        self.attempt_started[table] = now
        future: Future[int]
        if self.pool is not None:
            future = self.pool.submit(self._insert, block)
        else:
            future = Future()
            try:
                future.set_result(self._insert(block))
            except Exception as exc:  # as the background thread would: _collect sorts it out
                future.set_exception(exc)
        self.in_flight[table] = (future, block, buffered)
        if self.pool is None:
            self._collect(wait=True)

    def _check_source(self, block: DeferredBlock) -> None:
        if self.builder is None or block.source != self.builder.source:
            have = "none" if self.builder is None else self.builder.source
            msg = (
                f"deferred metric block for {block.table} from {block.source!r}:"
                f" this sink's block builder is {have!r}"
            )
            raise ClickHouseError(msg)

    def _made(self, block: SinkBlock) -> MetricBlock:
        """``block``'s columns, checked (a deferred block is made now)."""
        if not isinstance(block, DeferredBlock):
            return block
        assert self.builder is not None, "checked when the block was written"
        made = self.builder.block(block.kind, list(block.parts))
        try:
            self.store.validate(made)
        except ClickHouseError as exc:  # the builder's bug, not ClickHouse's: never retried
            raise ValueError(str(exc)) from exc
        return made

    def _joined(self, table: str, blocks: list[SinkBlock]) -> SinkBlock:
        """One block of ``blocks``: deferred ones of one kind stay deferred (their parts
        joined), anything else is made and concatenated."""
        first = blocks[0]
        if isinstance(first, DeferredBlock) and all(
            isinstance(b, DeferredBlock) and b.kind == first.kind for b in blocks
        ):
            parts = tuple(p for b in blocks if isinstance(b, DeferredBlock) for p in b.parts)
            return replace(first, rows=sum(len(b) for b in blocks), parts=parts)
        made = [self._made(b) for b in blocks]
        return _concat(table, made, self.store.columns(table))

    def _insert(self, block: SinkBlock) -> int:
        """Insert ``block`` (made first if it is deferred); on the insert thread if any."""
        return self.store.insert(self._made(block), validated=True)

    def wait_for_inserts(self) -> None:
        """Wait for the inserts in flight and account for them (failures are requeued)."""
        self._collect(wait=True)

    def _collect(self, wait: bool) -> None:
        """Account for finished inserts (all in flight if ``wait``); requeue failed ones."""
        for table, (future, block, buffered) in list(self.in_flight.items()):
            if not wait and not future.done():
                continue
            del self.in_flight[table]
            stats = self._stats(table)
            try:
                rows = future.result()
            except ClickHouseError as exc:
                now = self.clock()
                stats.failed_inserts += 1
                stats.failed_rows += len(block)
                stats.last_error = str(exc)
                # concatenated once, retried as one insert (before blocks buffered since)
                self.buffers[table] = [block, *self.buffers.get(table, [])]
                stats.pending_rows += len(block) - buffered  # it waits as the block it is now
                # failing since the first failed attempt began (it may have taken long)
                self.failing_since.setdefault(table, self.attempt_started.get(table, now))
                pause = min(self.backoff.get(table, RETRY_FIRST_S / 2) * 2, RETRY_MAX_S)
                self.backoff[table] = pause
                self.retry_at[table] = now + pause
                continue
            except Exception as exc:  # a bug, not ClickHouse: fail loudly, naming the rows
                self.buffers[table] = [block, *self.buffers.get(table, [])]
                msg = f"insert of {len(block)} rows into {table} failed: {exc!r}"
                raise ClickHouseError(msg) from exc
            stats.inserted_rows += rows
            stats.inserts += 1
            stats.pending_rows -= buffered
            for state in (self.failing_since, self.retry_at, self.backoff):
                state.pop(table, None)

    def _check_bounds(self) -> None:
        now = self.clock()
        for table, since in self.failing_since.items():
            if now - since >= self.settings.retry_timeout_s:
                stats = self._stats(table)
                msg = (
                    f"inserts into {table} have failed for {now - since:.1f}s"
                    f" (clickhouse.retry_timeout_s = {self.settings.retry_timeout_s}),"
                    f" {stats.pending_rows} rows not written; last error: {stats.last_error}"
                )
                raise ClickHouseError(msg)
        if self._waiting_rows() > self.settings.max_buffer_rows:
            self._wait_below_bound(now)
            waiting = self._waiting_rows()
            if waiting > self.settings.max_buffer_rows:
                errors = "; ".join(
                    f"{t}: {s.last_error}" for t, s in self.table_stats.items() if s.last_error
                )
                msg = (
                    f"{waiting} metric rows waiting for ClickHouse exceed"
                    f" clickhouse.max_buffer_rows = {self.settings.max_buffer_rows};"
                    f" last errors: {errors}"
                )
                raise ClickHouseError(msg)

    def _waiting_rows(self) -> int:
        return sum(s.pending_rows for s in self.table_stats.values())

    def _wait_below_bound(self, now: float) -> None:
        """More than ``max_buffer_rows`` rows waiting: start every buffered table's insert
        (a failing one too, once), then wait for inserts one at a time, starting a table's
        next insert as its last one ends, until the rows waiting are within the bound or
        nothing is in flight (inserts failing: the caller fails the run). The flow waits no
        longer than the bound needs: draining every table stalled it for inserts it need not
        wait for (benchmark: 1.5-2 s of a 7.5 s round)."""
        for table in list(self.buffers):
            self._try_insert(table, now, force=True)
        while self._waiting_rows() > self.settings.max_buffer_rows and self.in_flight:
            futures_wait(
                [future for future, _, _ in self.in_flight.values()], return_when=FIRST_COMPLETED
            )
            self._collect(wait=False)
            for table in list(self.buffers):
                self._try_insert(table, self.clock(), force=False)  # a failed one: backoff


def _concat(table: str, blocks: list[MetricBlock], types: dict[str, str]) -> MetricBlock:
    """One block of ``blocks``; Arrow columns are chunked, never copied."""
    columns: dict[str, Column] = {}
    for name in blocks[0].columns:
        parts = [b.columns[name] for b in blocks]
        arrow = any(isinstance(p, pa.Array | pa.ChunkedArray) for p in parts)
        mixed = len({np.asarray(p).dtype for p in parts}) > 1 if not arrow else False
        if arrow or mixed:  # mixed numpy dtypes (int64 and datetime64 ...) convert apart
            arrays = [_arrow_column(p, types[name]) for p in parts]
            chunks = [c for a in arrays for c in pa.chunked_array(a).chunks]
            kinds = {c.type for c in chunks}
            if len(kinds) > 1:  # strings and dictionaries mixed: plain strings throughout
                chunks = [c.cast(pa.string()) for c in chunks]
            columns[name] = pa.chunked_array(chunks)
        else:
            columns[name] = np.concatenate(parts)
    return MetricBlock(table, columns)


def request_timeout(settings: ClickHouseSettings) -> float:
    """How long one request to a server may take: ``retry_timeout_s``, at least
    :data:`CONNECT_TIMEOUT_S`."""
    return max(settings.retry_timeout_s, CONNECT_TIMEOUT_S)


class ClickHouseSink(FixedPartitionedSink[SinkBlock, None]):
    """Writes ``(key, MetricBlock)`` and ``(key, DeferredBlock)`` items to ClickHouse
    through one partition.

    One partition means one writer per cluster: the worker that owns it opens the database
    (and applies the migrations, a no-op after the runner's). ``epoch_flush``: wait for every
    buffered row at each epoch end (needed with recovery; see the module docstring).
    ``clock`` and ``sleep`` are injected for tests. The flow that makes deferred blocks
    gives the sink their builder with :meth:`bind` before the flow runs.
    """

    PART = "clickhouse"

    def __init__(
        self,
        settings: ClickHouseSettings,
        url: str,
        migrate: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        epoch_flush: bool = True,
    ) -> None:
        self.settings = settings
        self.url = url
        self.migrate = migrate
        self.epoch_flush = epoch_flush
        self.clock = clock
        self.sleep = sleep
        self.built: list[ClickHouseSinkPartition] = []  # this process's writer, once built
        self.timeout_s = request_timeout(settings)
        self.builder: BlockBuilder | None = None

    def bind(self, builder: BlockBuilder) -> None:
        """Make :class:`DeferredBlock` items with ``builder`` (one builder per sink)."""
        if self.builder is not None and self.builder.source != builder.source:
            msg = f"the sink's block builder is {self.builder.source!r}, not {builder.source!r}"
            raise ClickHouseError(msg)
        self.builder = builder

    def list_parts(self) -> list[str]:
        """The single partition; every worker lists it and Bytewax gives it to one."""
        return [self.PART]

    def part_fn(self, item_key: str) -> int:
        """Every item goes to the single partition, whatever its key."""
        return 0

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> ClickHouseSinkPartition:
        """Open the database (migrated unless ``migrate`` is False) for the writer."""
        store = ClickHouseStore(self.url, self.settings.database, timeout_s=self.timeout_s)
        try:
            if self.migrate:
                store.migrate()
            store.tables()  # reads every table's columns while the server is up
            if store.embedded:
                store.pause_rollups()
        except BaseException:
            store.close()
            raise
        part = ClickHouseSinkPartition(
            store, self.settings, self.clock, self.sleep, self.epoch_flush, self.builder
        )
        self.built.append(part)
        return part

    def raise_failure(self) -> None:
        """Raise what failed a writer of this process, if anything did (a failure in its
        last write, when the flow closed it, could not be raised then)."""
        for part in self.built:
            if part.failure is not None:
                raise part.failure
