"""Decode step: a batch of raw JSON messages in, numpy event columns and dead letters out.

The fast path decodes every message with ``orjson.loads`` in one comprehension and extracts
each field with one list comprehension, checking types per column. Any message that
breaks it sends the batch down the slow path, which checks each message alone and
dead-letters the bad ones with a reason; the rest go through the fast extraction again.
Value rules (known channel, journey and step, sane timestamp) are vectorised masks.
A ``client_id`` that is only white space or holds a control character (C0, DEL, C1) is a bad value.
``attrs``, when present and not null, must be an object; its ``segment`` member, when it
names one of ``SEGMENTS``, becomes the event's segment code (anything else reads -1).
"""

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from functools import cache
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from ato.catalog import CHANNELS, SEGMENTS, Catalog
from ato.columns import (
    CLIENT_ID_CONTROL,
    EventColumns,
    RawBytes,
    client_id_bytes,
    narrowest_ids,
    only_white_space,
)
from ato.config import EngineSettings
from ato.process import gc_paused
from operators import scan
from operators.batches import DeadLetter, DecodedBatch, RawBatch
from state.client_ids import gather_ids
from state.hashing import hash_client_ids

REQUIRED_FIELDS: tuple[tuple[str, type], ...] = (
    ("event_id", str),
    ("client_id", str),
    ("ts", int),
    ("channel", str),
    ("type", str),
)
OPTIONAL_TEXT_FIELDS = ("journey", "step", "session_id")

# reasons written on dead letters
OVERSIZED = "oversized"
NOT_JSON = "not_json"
NOT_OBJECT = "not_object"
MISSING_FIELD = "missing_field"
BAD_TYPE = "bad_type"
BAD_VALUE = "bad_value"
ABSURD_TS = "absurd_ts"
UNREADABLE = "unreadable"  # the source could not read the record (RawBatch.unreadable)
UNKNOWN_CHANNEL = "unknown_channel"
UNKNOWN_JOURNEY = "unknown_journey"
UNKNOWN_STEP = "unknown_step"

# dead letters as they are found, each with its message's row in the batch (-1: one the
# source could not read), which orders those of one offset
Dead = list[tuple[int, DeadLetter]]

DECODE_CHUNK = 1_000  # messages decoded together: their dicts stay in cache across the fields
# messages scanned together: their joined bytes (~2 MB) stay in cache while the scan reads
# them. Measured on 1 M clients' traffic, 50,000-message batches: 650 k events/s joined
# whole (10 MB), 0.9-1.05 M with chunks of 4,096-16,384 messages, 0.8 M with 1,024.
SCAN_CHUNK = 8_192


@cache
def scan_pool(threads: int) -> ThreadPoolExecutor:
    """The process's threads that scan chunks for every decoder with ``threads`` (made on
    first use, so a forked worker process makes its own)."""
    return ThreadPoolExecutor(threads, thread_name_prefix="ato-scan")


@cache
def ahead_pool() -> ThreadPoolExecutor:
    """The process's thread decoding batches ahead of the decode step (:meth:`Decoder.start`)."""
    return ThreadPoolExecutor(1, thread_name_prefix="ato-decode-ahead")


class _SlowPath(Exception):
    """The fast path met something it does not handle."""


def wall_ms() -> int:
    """Wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


class Decoder:
    """Turns :class:`RawBatch` into :class:`DecodedBatch` for one catalog and settings."""

    def __init__(
        self,
        catalog: Catalog,
        settings: EngineSettings,
        now_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.catalog = catalog
        self.settings = settings
        self._ahead: dict[int, tuple[RawBatch, Future[DecodedBatch]]] = {}
        self.now_ms = now_ms
        self.channel_codes = {name: code for code, name in enumerate(CHANNELS)}
        self.segment_codes = {name: code for code, name in enumerate(SEGMENTS)}
        self.type_codes = catalog.type_codes
        self.journey_codes: dict[Any, int] = {None: -1, **catalog.journey_codes}
        self.step_codes: dict[Any, int] = {None: -1, **catalog.step_name_codes}
        self.vocabularies = scan.Vocabularies(
            {
                scan.F_TYPE: scan.Vocabulary(catalog.type_codes, default=0, absent=0),
                scan.F_CHANNEL: scan.Vocabulary(self.channel_codes, default=-1, absent=-1),
                scan.F_JOURNEY: scan.Vocabulary(catalog.journey_codes, default=-2, absent=-1),
                scan.F_STEP: scan.Vocabulary(catalog.step_name_codes, default=-2, absent=-1),
                scan.F_SEGMENT: scan.Vocabulary(self.segment_codes, default=-1, absent=-1),
            }
        )

    def __call__(self, batch: RawBatch) -> DecodedBatch:
        """Decode one batch (the flow's map step); a batch :meth:`start` began is waited for."""
        ahead = self._ahead.pop(id(batch), None)
        if ahead is not None and ahead[0] is batch:
            return ahead[1].result()
        return self.decode(batch)

    def start(self, batch: RawBatch) -> None:
        """Begin decoding ``batch`` on the read-ahead thread (``sources.read_ahead``); the
        decode step takes the result. The entry keeps ``batch`` alive, so its ``id`` stays
        its own until then."""
        self._ahead[id(batch)] = (batch, ahead_pool().submit(self.decode, batch))

    def decode(self, batch: RawBatch) -> DecodedBatch:
        """Decode every message of ``batch``; never raises on bad input.

        The cyclic garbage collector is paused meanwhile: decoded JSON holds no reference
        cycles, and collections triggered by tens of thousands of short-lived dicts cost
        more than the decoding itself (measured: 3x slower with it on).
        """
        with gc_paused():
            return self._decode(batch)

    def _decode(self, batch: RawBatch) -> DecodedBatch:
        """The numba scan takes the messages it accepts; orjson decodes all the others."""
        messages = batch.messages
        offsets = batch.offset_array()
        n = len(messages)
        dead: Dead = [(-1, letter) for letter in batch.unreadable]
        parts = []
        if self.settings.decoder == "scan" and n:
            scanned = self._scan_chunks(messages, offsets)
            rows = np.concatenate([r + k * SCAN_CHUNK for k, (r, _) in enumerate(scanned)])
            raw = RawBytes(messages)  # the batch's own list of bytes, nothing copied
            columns = replace(
                EventColumns.concat([c for _, c in scanned]),
                raw=raw if len(rows) == n else raw[rows],
            )
            parts.append(self._check_values(columns, batch.partition, dead))
            others = np.setdiff1d(np.arange(n), rows, assume_unique=True)
        else:
            rows, others = np.empty(0, np.int64), np.arange(n)
        for start in range(0, len(others), DECODE_CHUNK):
            chunk = others[start : start + DECODE_CHUNK]
            parts.append(self._decode_chunk(messages, chunk, offsets[chunk], batch.partition, dead))
        events = EventColumns.concat(parts)
        if len(others) and len(rows) and len(events):  # the two kinds back in input order
            # by input row, not offset: the events of one envelope share its offset
            assert isinstance(events.raw, RawBytes)  # rows over the batch's own list
            events = events.take(np.argsort(events.raw.rows, kind="stable"))
        # whichever path found them, and the source's own: in offset order, and at one
        # offset (the messages of one envelope) in input order
        dead.sort(key=lambda row_letter: (row_letter[1].offset, row_letter[0]))
        max_ts = int(events.ts.max()) if len(events) else None
        n_in = n + len(batch.unreadable)
        letters = [letter for _, letter in dead]
        return DecodedBatch(
            batch.partition, events, letters, max_ts, batch.read_wall_ms, n_in, batch.caught_up,
            batch.lag, batch.cut, batch.arrived_ms, batch.unsure, batch.ended,
        )  # fmt: skip

    def _scan_chunks(
        self, messages: list[bytes], offsets: np.ndarray
    ) -> list[tuple[np.ndarray, EventColumns]]:
        """:meth:`_scan` of every ``SCAN_CHUNK`` messages, in order; with ``decode_threads``
        above 1 on that many threads, so one chunk's kernel runs while the next is prepared
        (about 1.45x faster on 2 cores)."""
        starts = range(0, len(messages), SCAN_CHUNK)
        chunks = [(messages[i : i + SCAN_CHUNK], offsets[i : i + SCAN_CHUNK]) for i in starts]
        threads = self.settings.decode_threads
        if threads <= 1 or len(chunks) <= 1:
            return [self._scan(*chunk) for chunk in chunks]
        pool = scan_pool(threads)
        return [f.result() for f in [pool.submit(self._scan, *chunk) for chunk in chunks]]

    def _scan(self, messages: list[bytes], offsets: np.ndarray) -> tuple[np.ndarray, EventColumns]:
        """Rows the numba scanner accepts, and their columns (before the value rules; without
        the original bytes)."""
        n = len(messages)
        buf, lengths = _join(messages)
        ends = np.cumsum(lengths)
        status, ts, span_start, span_len, hashes, all_codes = scan.scan_events(
            buf, ends - lengths, ends, self.settings.max_client_id_len, self.vocabularies
        )
        rows = np.flatnonzero((status == scan.OK) & (lengths <= self.settings.max_message_bytes))
        take = slice(None) if len(rows) == n else rows  # all accepted: views, no copies
        codes = all_codes[:, take]
        type_code = codes[scan.F_TYPE].astype(np.int32)
        return rows, EventColumns(
            hashes[take],
            gather_ids(buf, span_start[scan.F_CLIENT, take], span_len[scan.F_CLIENT, take]),
            ts[take],
            codes[scan.F_CHANNEL].astype(np.int8),
            type_code,
            codes[scan.F_JOURNEY].astype(np.int16),
            codes[scan.F_STEP].astype(np.int16),
            self.catalog.tables.type_flags[type_code],
            None,
            offsets[take],
            codes[scan.F_SEGMENT].astype(np.int8),
        )

    def _decode_chunk(
        self,
        batch_messages: list[bytes],
        rows: np.ndarray,
        offsets: np.ndarray,
        partition: str,
        dead: Dead,
    ) -> EventColumns:
        """orjson's decoding of ``batch_messages[rows]`` (their ``raw`` keeps the batch's
        row numbers, which order the events in the end)."""
        messages = [batch_messages[i] for i in rows.tolist()]
        try:
            if not set(map(type, messages)) <= _BYTES_LIKE:
                raise _SlowPath  # orjson would read a str
            if max(map(len, messages)) > self.settings.max_message_bytes:
                raise _SlowPath
            loads = orjson.loads
            docs = [loads(m) for m in messages]
            columns = self._columns(docs, RawBytes(batch_messages, rows), offsets)
        except (orjson.JSONDecodeError, _SlowPath, KeyError, TypeError):
            docs, keep = self._check_each(messages, rows, offsets, partition, dead)
            raw = RawBytes(batch_messages, rows[np.array(keep, np.int64)])
            columns = self._columns(docs, raw, offsets[keep])
        return self._check_values(columns, partition, dead)

    # ------------------------------------------------------------------ fast extraction

    def _columns(self, docs: list[Any], raw: RawBytes, offsets: np.ndarray) -> EventColumns:
        """Columns of ``docs``; raises on anything the per-message check would reject."""
        n = len(docs)
        if n == 0:
            return EventColumns.empty()
        # KeyError (missing field) or TypeError (not an object) sends the batch to the slow path
        client_ids, event_ids, types, channels, ts_values = zip(*map(_REQUIRED, docs), strict=True)
        optional = [
            (d.get("journey"), d.get("step"), d.get("session_id"), d.get("attrs")) for d in docs
        ]
        journeys, steps, sessions, attrs = zip(*optional, strict=True)
        if not all(map(_all_str, (client_ids, event_ids, types, channels))):
            raise _SlowPath
        if set(map(type, ts_values)) != {int}:
            raise _SlowPath  # bool is no int here, nor float
        if not all(set(map(type, col)) <= _TEXT_OR_NONE for col in (journeys, steps, sessions)):
            raise _SlowPath
        if not set(map(type, attrs)) <= _OBJECT_OR_NONE:
            raise _SlowPath
        if not all(map(str.strip, client_ids)) or min(map(len, event_ids)) == 0:
            raise _SlowPath  # an empty or blank client_id
        if min(map(len, types)) == 0 or min(map(len, channels)) == 0:
            raise _SlowPath
        joined = "".join(client_ids)
        if CLIENT_ID_CONTROL.search(joined):
            raise _SlowPath  # also: numpy str_ arrays would drop a trailing NUL
        if "\ufeff" in joined and any(map(only_white_space, client_ids)):
            raise _SlowPath  # an id of only white space, U+FEFF included (the schema's \s)
        ids = np.array(client_ids)
        if ids.dtype.itemsize // 4 > self.settings.max_client_id_len:
            raise _SlowPath
        ts = np.array(ts_values)
        if ts.dtype.kind != "i":
            raise _SlowPath
        channel_codes, type_codes = self.channel_codes, self.type_codes
        journey_codes, step_codes = self.journey_codes, self.step_codes
        channel = np.fromiter(map(channel_codes.get, channels, repeat(-1)), np.int8, n)
        type_code = np.fromiter(map(type_codes.get, types, repeat(0)), np.int32, n)
        journey = np.fromiter(map(journey_codes.get, journeys, repeat(-2)), np.int16, n)
        step = np.fromiter(map(step_codes.get, steps, repeat(-2)), np.int16, n)
        segment = np.fromiter(map(self._segment_code, attrs), np.int8, n)
        return EventColumns(
            hash_client_ids(ids),
            client_id_bytes(ids),
            ts.astype(np.int64, copy=False),
            channel,
            type_code,
            journey,
            step,
            self.catalog.tables.type_flags[type_code],
            raw,
            offsets,
            segment,
        )

    def _segment_code(self, attrs: dict[str, Any] | None) -> int:
        """Code of ``attrs["segment"]``; -1 when absent, not a string or not a segment name."""
        if not attrs:
            return -1
        name = attrs.get("segment")
        return self.segment_codes.get(name, -1) if type(name) is str else -1

    # ------------------------------------------------------------------ slow path

    def _check_each(
        self,
        messages: list[bytes],
        rows: np.ndarray,
        offsets: np.ndarray,
        partition: str,
        dead: Dead,
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """Check each message alone (``rows``: their rows in the batch); dead-letter the bad
        ones; return the good docs and their indices in ``messages``."""
        docs: list[dict[str, Any]] = []
        keep: list[int] = []
        for i, message in enumerate(messages):
            doc, reason, detail = self._check_one(message)
            if reason:
                letter = DeadLetter(reason, detail, message, partition, int(offsets[i]))
                dead.append((int(rows[i]), letter))
            else:
                docs.append(doc)
                keep.append(i)
        return docs, keep

    def _check_one(self, message: bytes) -> tuple[Any, str, str]:
        if not isinstance(message, bytes | bytearray | memoryview):
            return None, BAD_TYPE, f"message is {type(message).__name__}, not bytes"
        if len(message) > self.settings.max_message_bytes:
            limit = self.settings.max_message_bytes
            return None, OVERSIZED, f"{len(message)} bytes > {limit}"
        try:
            doc = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            return None, NOT_JSON, str(exc)
        if not isinstance(doc, dict):
            return None, NOT_OBJECT, f"top level is {type(doc).__name__}"
        for name, kind in REQUIRED_FIELDS:
            if name not in doc:
                return None, MISSING_FIELD, name
            value = doc[name]
            if name == "ts" and type(value) is float:
                if not -(2**63) < value < 2**63:  # orjson reads integers beyond 64 bits so
                    return None, ABSURD_TS, "ts does not fit in 64 bits"
                if value.is_integer():  # 1767596400000.0 or 1.7675964e12: a JSON integer
                    doc["ts"] = value = int(value)
            if type(value) is not kind:
                return None, BAD_TYPE, f"{name} is {type(value).__name__}, not {kind.__name__}"
            if kind is str and not value:
                return None, BAD_VALUE, f"{name} is empty"
        for name in OPTIONAL_TEXT_FIELDS:
            value = doc.get(name)
            if value is not None and type(value) is not str:
                return None, BAD_TYPE, f"{name} is {type(value).__name__}, not str"
        attrs = doc.get("attrs")
        if attrs is not None and type(attrs) is not dict:
            return None, BAD_TYPE, f"attrs is {type(attrs).__name__}, not object"
        if not -(2**63) <= doc["ts"] < 2**63:
            return None, ABSURD_TS, "ts does not fit in 64 bits"
        if only_white_space(doc["client_id"]):
            return None, BAD_VALUE, "client_id is only white space"
        if CLIENT_ID_CONTROL.search(doc["client_id"]):
            return None, BAD_VALUE, "client_id contains a control character"
        if len(doc["client_id"]) > self.settings.max_client_id_len:
            limit = self.settings.max_client_id_len
            return None, BAD_VALUE, f"client_id longer than {limit} characters"
        return doc, "", ""

    # ------------------------------------------------------------------ value rules

    def _check_values(self, cols: EventColumns, partition: str, dead: Dead) -> EventColumns:
        """Dead-letter events with bad values; resolve journey and step codes."""
        if len(cols) == 0:
            return cols
        tables = self.catalog.tables
        journey = cols.journey.copy()
        step = np.full(len(cols), -1, dtype=np.int16)
        explicit = (cols.journey >= 0) & (cols.step >= 0)
        step[explicit] = tables.step_by_name[cols.journey[explicit], cols.step[explicit]]
        by_type_in_journey = (cols.journey >= 0) & (cols.step == -1)
        step[by_type_in_journey] = tables.type_step_in_journey[
            cols.journey[by_type_in_journey], cols.type_code[by_type_in_journey]
        ]
        no_journey = cols.journey == -1
        journey[no_journey] = tables.type_journey[cols.type_code[no_journey]]
        step[no_journey] = tables.type_step[cols.type_code[no_journey]]

        now = self.now_ms()
        rules = (
            (
                cols.ts < self.settings.min_event_ts_ms,
                ABSURD_TS,
                "ts before engine.min_event_ts_ms",
            ),
            (cols.ts > now + self.settings.max_future_ms, ABSURD_TS, "ts too far in the future"),
            (cols.channel < 0, UNKNOWN_CHANNEL, f"channel must be one of {', '.join(CHANNELS)}"),
            (cols.journey == -2, UNKNOWN_JOURNEY, "journey not in the catalog"),
            (cols.step == -2, UNKNOWN_STEP, "step not in the catalog"),
            (explicit & (step < 0), UNKNOWN_STEP, "step not in this journey"),
            ((cols.journey == -1) & (cols.step >= 0), UNKNOWN_STEP, "step given without journey"),
        )
        bad = np.zeros(len(cols), dtype=np.bool_)
        raw = cols.raw
        assert isinstance(raw, RawBytes)  # decode output: rows over the batch's own list
        for mask, reason, detail in rules:
            for i in np.flatnonzero(mask & ~bad):
                letter = DeadLetter(reason, detail, raw[i], partition, int(cols.offset[i]))
                dead.append((int(raw.rows[i]), letter))
            bad |= mask
        resolved = EventColumns(
            cols.client_key,
            cols.client_id,
            cols.ts,
            cols.channel,
            cols.type_code,
            journey,
            step,
            cols.flags,
            cols.raw,
            cols.offset,
            cols.segment,
        )
        if not bad.any():
            return resolved
        kept = resolved.take(~bad)
        return replace(kept, client_id=narrowest_ids(kept.client_id))


_TEXT_OR_NONE = {str, type(None)}
_OBJECT_OR_NONE = {dict, type(None)}
_BYTES_LIKE = {bytes, bytearray, memoryview}
_REQUIRED = itemgetter("client_id", "event_id", "type", "channel", "ts")


def _all_str(values: Sequence[Any]) -> bool:
    return set(map(type, values)) == {str}


def _join(messages: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The bytes of ``messages`` back to back, and each one's length. A message that is not
    bytes (None, a str) is joined as ``b""``: the scanner falls back on it, and the
    per-message path dead-letters the original as on the orjson path."""
    try:
        joined = b"".join(messages)  # TypeError on None, a str, ...
        lengths = np.fromiter(map(len, messages), np.int64, len(messages))
        if int(lengths.sum()) == len(joined):  # not so for a buffer whose len is not its size
            return np.frombuffer(joined, np.uint8), lengths
    except TypeError:
        pass
    return _join([m if isinstance(m, bytes) else b"" for m in messages])
