"""Live journey state for breakpoint resume: one Redis hash per client, written per batch.

A client's open journeys live in the hash ``ato:journey:<client_id>``: one field per open
journey (the journey name), its value a compact JSON object::

    {"step":"id_upload","since_ms":1767614400000,"last_type":"id_card_uploaded",
     "last_channel":"app","last_ms":1767614400000,"stalled":false,"attempt":0,
     "updated_ms":1767614401000}

A closed instance (completed, failed, expired) loses its field; Redis deletes a hash whose
last field goes, so a client without open journeys has no key. Every write sets the expiry
of the keys it sets fields of. See ``docs/policy.md`` ("Live journey state").
"""

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import redis

from policy.backoff import RedisBackoff
from policy.connection import is_transient
from policy.exceptions import LiveStateError
from policy.live_commands import write_commands_py
from policy.pipelines import reply_error, send_counting_replies

KEY_PREFIX = "ato:journey:"
# the JSON members of a field's value, in the order they are written
VALUE_FIELDS: tuple[str, ...] = (
    "step",
    "since_ms",
    "last_type",
    "last_channel",
    "last_ms",
    "stalled",
    "attempt",
    "updated_ms",
)
# the JourneyChanges columns a field's value is built from
_STATE_COLUMNS: tuple[str, ...] = (
    "step",
    "since_ms",
    "last_event_type",
    "last_channel",
    "last_event_ms",
    "stalled",
    "closed",
    "attempt",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Column = Sequence[Any] | np.ndarray


def journey_key(client_id: str) -> str:
    """The Redis key of a client's live journey-state hash."""
    return KEY_PREFIX + client_id


@dataclass(frozen=True)
class JourneyChanges:
    """One batch of journey-instance changes as equal-length columns (lists or numpy arrays).

    Row *i* is the state of ``journey[i]`` of ``client_id[i]`` after an event:
    ``since_ms`` is when the instance entered ``step``, ``last_*`` describe its latest event,
    ``closed`` means it completed, failed or expired (its field is removed). ``updated_ms``
    is one stamp for the whole batch (the flow's clock when it built it); it is part of the
    data, so sending the same changes again writes the same bytes.
    """

    client_id: Column
    journey: Column
    step: Column
    since_ms: Column
    last_event_type: Column
    last_channel: Column
    last_event_ms: Column
    stalled: Column
    closed: Column
    attempt: Column
    updated_ms: int

    def __post_init__(self) -> None:
        lengths = {f.name: len(getattr(self, f.name)) for f in fields(self)[:-1]}
        if len(set(lengths.values())) > 1:
            msg = f"JourneyChanges columns differ in length: {lengths}"
            raise ValueError(msg)

    def __len__(self) -> int:
        return len(self.client_id)


def _as_list(column: Column) -> list[Any]:
    """Python values of a column (numpy scalars become int/bool/str)."""
    return column.tolist() if isinstance(column, np.ndarray) else list(column)


def latest_rows(changes: JourneyChanges) -> list[int]:
    """Row numbers of the last change per (client, journey): by ``last_event_ms``, then
    input order. Returned in the order of those winning rows."""
    order = np.argsort(np.asarray(changes.last_event_ms, dtype=np.int64), kind="stable")
    clients, journeys = changes.client_id, changes.journey
    winners: dict[tuple[str, str], int] = {}
    for i in order.tolist():
        key = (clients[i], journeys[i])
        winners.pop(key, None)  # re-insert: dict order follows the winning row
        winners[key] = i
    return list(winners.values())


def encode_value(columns: dict[str, list[Any]], i: int, updated_ms: int) -> bytes:
    """The JSON value of row ``i`` (``columns``: the state columns as Python lists)."""
    return orjson.dumps(
        {
            "step": str(columns["step"][i]),
            "since_ms": int(columns["since_ms"][i]),
            "last_type": str(columns["last_event_type"][i]),
            "last_channel": str(columns["last_channel"][i]),
            "last_ms": int(columns["last_event_ms"][i]),
            "stalled": bool(columns["stalled"][i]),
            "attempt": int(columns["attempt"][i]),
            "updated_ms": int(updated_ms),
        }
    )


def where(client: "redis.Redis") -> str:
    """The client's server as a url, any password shown as ``***`` (for messages)."""
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={db}"
    scheme = "rediss" if issubclass(pool.connection_class, redis.SSLConnection) else "redis"
    user = kwargs.get("username") or ""
    auth = f"{user}:***@" if kwargs.get("password") else (f"{user}@" if user else "")
    return f"{scheme}://{auth}{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"


def _error(client: "redis.Redis", doing: str, exc: redis.RedisError) -> LiveStateError:
    transient = is_transient(exc)
    return LiveStateError(f"{doing}: Redis at {where(client)}: {exc}", transient=transient)


class LiveStateWriter:
    """Writes batches of :class:`JourneyChanges` to the clients' hashes, one round trip each.

    The keys a batch sets fields of expire ``ttl_s`` seconds after it (clients that stop
    changing fade away); other keys keep their expiry. A write is one buffer of plain
    commands (per client an HSET and an EXPIRE, an HDEL, built by
    :mod:`policy.live_commands` with this writer's ``ttl_s`` and :data:`KEY_PREFIX`), sent
    in one piece; their replies (integers, or errors) are counted as bytes, not parsed one
    by one (:mod:`policy.pipelines`): the client library's per-command cost would dominate
    otherwise.

    Once a write found Redis not answering, writes are tried again only after a pause that
    doubles on each failure (:class:`policy.backoff.RedisBackoff`, 1 s up to 8 s); the
    writes in between fail at once (transient), so a Redis that hangs costs one timeout per
    pause, not one per write. ``outage_wait_s``: how long the flow retries at the end of its
    input before it fails (``operators.live_changes``).
    """

    def __init__(self, client: "redis.Redis", ttl_s: int, outage_wait_s: float = 300.0) -> None:
        if ttl_s <= 0:
            msg = f"ttl_s must be > 0, got {ttl_s!r}"
            raise ValueError(msg)
        self.client = client
        self.ttl_s = int(ttl_s)
        self.outage_wait_s = outage_wait_s
        self.backoff = RedisBackoff()
        self._thread: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # the shards of every worker thread share the writer
        self._unfinished = 0  # writes submitted and not done
        self.stats = {"round_trips": 0, "commands": 0}

    def submit(
        self, build: Callable[[], tuple[bytes, int, int]], final: bool = False
    ) -> "Future[int]":
        """:meth:`send` of the commands ``build`` returns (commands, count, clients), both
        on the writer's own thread (one per writer, so writes run in the order they are
        submitted): the flow goes on while the commands are written (a numba kernel that
        releases the GIL) and Redis works. The future raises what :meth:`send` raises
        (``final``: see :meth:`send`)."""
        with self._lock:
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="ato-live-state")
            future = self._thread.submit(lambda: self.send(*build(), final=final))
            self._unfinished += 1
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _future: "Future[int]") -> None:
        with self._lock:
            self._unfinished -= 1

    def flush(self) -> None:
        """Wait for every write submitted so far, by any shard, then end the writer's thread
        unless writes came meanwhile (a later :meth:`submit` starts another), so no idle
        thread outlives the flow's input. The shards of a process share the writer, and one
        shard's end of input is not the others': ending the thread under their writes (as
        this did) failed them."""
        with self._lock:  # submitted under the lock: no other flush can end the thread first
            thread = self._thread
            if thread is None:
                return
            marker = thread.submit(lambda: None)  # runs after every write submitted before it
        marker.result()
        with self._lock:
            idle = self._thread is thread and self._unfinished == 0
            if idle:
                self._thread = None
        if idle:
            thread.shutdown(wait=True)  # nothing left in it: returns at once

    def write(self, changes: JourneyChanges) -> int:
        """Write the last change per (client, journey) and return the clients written.

        One write (no MULTI/EXEC) per call: per touched client an HSET of its open
        journeys and an EXPIRE, an HDEL of its closed ones. An empty batch sends nothing.

        On a connection error or timeout this raises :class:`LiveStateError` (``transient``)
        and some commands may have been applied. Sending the same ``changes`` again is
        idempotent (the same HSET values, HDEL of absent fields is a no-op), so the caller
        retries with them, before any later batch: an older batch sent after a newer one
        would overwrite newer state.
        """
        rows = latest_rows(changes)
        if not rows:
            return 0
        columns = {name: _as_list(getattr(changes, name)) for name in _STATE_COLUMNS}
        return self.write_rows(
            [str(changes.client_id[i]) for i in rows],
            [str(changes.journey[i]) for i in rows],
            [
                None
                if columns["closed"][i]
                else encode_value(columns, i, changes.updated_ms).decode()
                for i in rows
            ],
        )

    def write_rows(
        self, client_ids: Sequence[str], journeys: Sequence[str], values: Sequence[str | None]
    ) -> int:
        """Write one field per row: ``values[i]`` (a JSON object, see the module doc) under
        ``journeys[i]`` of the client's hash, or remove the field when it is None. At most
        one row per (client, journey). Returns the clients written; errors as :meth:`write`.
        (The flow builds the same commands from columns with
        :func:`policy.live_commands.commands_of_rows`.)
        """
        by_client: dict[str, list[tuple[bytes, bytes | None]]] = {}
        for client_id, journey, value in zip(client_ids, journeys, values, strict=True):
            field = (journey.encode(), None if value is None else value.encode())
            by_client.setdefault(client_id, []).append(field)
        clients = [(c.encode(), fields) for c, fields in by_client.items()]
        commands, count = write_commands_py(self.ttl_s, KEY_PREFIX.encode(), clients)
        return self.send(commands, count, len(clients))

    def send(self, commands: bytes, count: int, clients: int, final: bool = False) -> int:
        """Send ``count`` commands (built by :mod:`policy.live_commands`) in one write and
        wait for their replies; return ``clients``. Errors as :meth:`write`; an error reply
        of one command does not stop the others. While the writer pauses after a failure it
        raises at once (transient), unless ``final`` (the writes at the end of input, which
        the flow retries itself)."""
        if not count:
            return clients
        now_ms = int(time.monotonic() * 1000)
        if not final and not self.backoff.may_try(now_ms):
            msg = (
                f"writing live journey state: Redis at {where(self.client)} failed last;"
                " not tried again before its pause ends"
            )
            raise LiveStateError(msg, transient=True)
        try:
            first_error = send_counting_replies(self.client, commands, count)
        except redis.RedisError as exc:
            error = _error(self.client, "writing live journey state", exc)
            if error.transient:
                self.backoff.failed(now_ms)
            raise error from exc
        self.backoff.answered()
        self.stats["round_trips"] += 1
        self.stats["commands"] += count
        if first_error:
            raise _error(self.client, "writing live journey state", reply_error(first_error))
        return clients


def lookup(client: "redis.Redis", client_id: str) -> dict[str, dict[str, Any]]:
    """A client's open journeys: journey -> its decoded fields (by journey name; empty when
    the client has none). ``LiveStateError`` on Redis trouble or a value that is not JSON."""
    key = journey_key(client_id)
    try:
        raw = client.hgetall(key)
    except redis.RedisError as exc:
        raise _error(client, f"reading {key}", exc) from exc
    state: dict[str, dict[str, Any]] = {}
    for name, value in sorted(raw.items()):
        journey = name.decode(errors="backslashreplace") if isinstance(name, bytes) else name
        try:
            fields = orjson.loads(value)
        except orjson.JSONDecodeError:
            fields = None
        if not isinstance(fields, dict):
            msg = f"{key} field {journey!r}: not a JSON object: {value!r}"
            raise LiveStateError(msg, transient=False)
        state[journey] = fields
    return state


def iso_utc(ms: int) -> str:
    """Epoch ms as ``2026-01-05T12:00:00.000Z``."""
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")[:-6] + "Z"


MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def time_text(value: Any) -> str:
    """An epoch-ms field as :func:`iso_utc`; a value that is no such time (written by
    something else than the flow) as it is, so that a lookup never fails on it."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_MS:
        return iso_utc(value)
    return "" if value is None else repr(value)


def format_lookup(client_id: str, state: dict[str, dict[str, Any]]) -> str:
    """``state`` (from :func:`lookup`) as aligned lines for people, one per journey."""
    if not state:
        return f"{client_id}: no open journeys"
    header = ("journey", "step", "since", "last event", "channel", "at", "stalled", "attempt")
    rows = [header] + [
        (
            journey,
            str(v.get("step", "")),
            time_text(v.get("since_ms")),
            str(v.get("last_type", "")),
            str(v.get("last_channel", "")),
            time_text(v.get("last_ms")),
            "yes" if v.get("stalled") else "no",
            str(v.get("attempt", "")),
        )
        for journey, v in state.items()
    ]
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    count = f"{len(state)} open journey{'s' if len(state) > 1 else ''}"
    lines = [f"{client_id}: {count}"]
    for row in rows:
        cells = (f"{cell:{width}}" for cell, width in zip(row, widths, strict=True))
        lines.append(("  " + "  ".join(cells)).rstrip())
    return "\n".join(lines)
