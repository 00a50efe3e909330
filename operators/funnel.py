"""Per-minute funnel counts in event time, summed over shards, closed by the watermarks.

Each shard step counts what one call applied (events, instances started, advanced, completed,
abandoned) per event-time minute, journey, step, channel and segment, and sends these counts
(a row per event, not summed: the benchmark's keys are mostly distinct within a call, so
summing there saved few rows) with its watermark to the funnel step
(:class:`FunnelLogic`, one per flow). The funnel step sums them and emits a minute once
*every* shard's watermark has passed its end: every event of
it that is not late has been applied and counted by then, so the row is final and the same in
any run over the same input. The open minutes and the shard watermarks are part of the
funnel step's snapshot, so a restarted flow re-emits exactly the rows it would have emitted
(same key, same counts) and ClickHouse collapses the duplicates. Summing over shards keeps
one row per key instead of one per key and shard (2.8x fewer rows on the benchmark traffic).

Keys are packed into one int64 (minute, journey+1, step+1, channel, segment+1) so that a batch
is summed by one numba kernel (:func:`sum_by_key`). Rows come out in no particular order. In
the flow the step keeps the rows it adds to open minutes summed, but hands on a closed
minute's rows unsummed (``sum_closed=False``): the ClickHouse sink adds them up when it
inserts them, off the flow's thread (``operators.metrics.MetricRows.block``).
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from bytewax.operators import StatefulBatchLogic
from numba import njit

from state.base import Effects, Records
from state.hashing import fibonacci_slot, table_bits
from state.layout import (
    EFFECT_ADVANCED,
    EFFECT_COMPLETED,
    EFFECT_FAILED,
    EFFECT_STARTED,
    O_JOURNEY,
    O_LAST_CHANNEL,
    O_OUTCOME,
    O_RESOLVED_AT,
    O_SEGMENT,
    O_STEP,
    OUTCOME_LAPSED,
)

MINUTE_MS = 60_000
# the rows added to the open minutes are summed into them once they outnumber them
# SUM_FACTOR times (and SUM_MIN_ROWS), checked after the closed minutes are taken out: each
# sum reads the summed rows again, so a larger factor reads fewer rows in all (benchmark,
# 6.7 M rows added: 9.6 M read with a factor of 1 and 100,000, 7.0 M with 4 and 400,000) at
# the cost of holding more rows unsummed
SUM_FACTOR, SUM_MIN_ROWS = 4, 400_000
MEASURES = ("events", "started", "advanced", "completed", "abandoned")
_ABANDONED = MEASURES.index("abandoned")
_N_MEASURES = len(MEASURES)


# bit fields of a packed key, low to high: segment + 1 (4 bits), channel (4), step + 1 (6,
# MAX_STEPS = 62), journey + 1 (10, MAX_JOURNEYS = 1022), then the minute (36 bits left)
_STEP_SHIFT, _JOURNEY_SHIFT, MINUTE_SHIFT = 8, 14, 24


def pack(
    minute: np.ndarray,
    journey: np.ndarray,
    step: np.ndarray,
    channel: np.ndarray,
    segment: np.ndarray,
) -> np.ndarray:
    """One int64 key per row; journey, step and segment may be -1."""
    return (
        (minute.astype(np.int64) << MINUTE_SHIFT)
        | ((journey.astype(np.int64) + 1) << _JOURNEY_SHIFT)
        | ((step.astype(np.int64) + 1) << _STEP_SHIFT)
        | (channel.astype(np.int64) << 4)
        | (segment.astype(np.int64) + 1)
    )


def unpack(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(minute, journey, step, channel, segment) of packed keys."""
    return (
        keys >> MINUTE_SHIFT,
        ((keys >> _JOURNEY_SHIFT) & 0x3FF) - 1,
        ((keys >> _STEP_SHIFT) & 0x3F) - 1,
        (keys >> 4) & 0xF,
        (keys & 0xF) - 1,
    )


@dataclass(frozen=True)
class FunnelRows:
    """Funnel counts: packed keys and counts ``[n, len(MEASURES)]`` (a key may repeat in rows
    not summed yet). Rows of single events count in int8 (48 -> 13 bytes a row through the
    funnel step and the sink: every event makes one), sums in int64."""

    keys: np.ndarray
    counts: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    @staticmethod
    def empty() -> "FunnelRows":
        """No rows."""
        return FunnelRows(np.empty(0, np.int64), np.empty((0, len(MEASURES)), np.int64))

    def summed(self) -> "FunnelRows":
        """Each key once, its counts added up (in the order keys first appear)."""
        return FunnelRows(*_summed(self.keys, self.counts))

    @staticmethod
    def concat(parts: "list[FunnelRows]") -> "FunnelRows":
        """The rows of ``parts``, in order (not summed)."""
        parts = [p for p in parts if len(p)]
        if len(parts) <= 1:
            return parts[0] if parts else FunnelRows.empty()
        return FunnelRows(
            np.concatenate([p.keys for p in parts]), np.concatenate([p.counts for p in parts])
        )


def event_rows(
    ts: np.ndarray, channel: np.ndarray, segment: np.ndarray, effects: Effects
) -> FunnelRows:
    """One row per applied event: its minute, the journey and step it counted in, and what it
    did (not summed); by the numba kernel :func:`event_rows_kernel` (twin:
    :func:`event_rows_twin`)."""
    keys, counts = event_rows_kernel(
        np.ascontiguousarray(ts, np.int64), np.ascontiguousarray(effects.journey, np.int64),
        np.ascontiguousarray(effects.step, np.int64), np.ascontiguousarray(channel, np.int64),
        np.ascontiguousarray(segment, np.int64), np.ascontiguousarray(effects.effect, np.int64),
    )  # fmt: skip
    return FunnelRows(keys, counts)


@njit(cache=True, nogil=True)
def event_rows_kernel(
    ts: np.ndarray,
    journey: np.ndarray,
    step: np.ndarray,
    channel: np.ndarray,
    segment: np.ndarray,
    effect: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Packed keys (as :func:`pack`) and int8 counts ``[n, len(MEASURES)]`` of applied
    events, in one pass (numpy took a dozen passes over the columns, 34 ns an event)."""
    n = len(ts)
    keys = np.empty(n, np.int64)
    counts = np.zeros((n, _N_MEASURES), np.int8)
    for i in range(n):
        keys[i] = (
            ((ts[i] // MINUTE_MS) << MINUTE_SHIFT)
            | ((journey[i] + 1) << _JOURNEY_SHIFT)
            | ((step[i] + 1) << _STEP_SHIFT)
            | (channel[i] << 4)
            | (segment[i] + 1)
        )
        counts[i, 0] = 1
        e = effect[i]
        if e == EFFECT_STARTED:
            counts[i, 1] = 1
        elif e == EFFECT_ADVANCED:
            counts[i, 2] = 1
        elif e == EFFECT_COMPLETED:
            counts[i, 3] = 1
        elif e == EFFECT_FAILED:
            counts[i, 4] = 1
    return keys, counts


def event_rows_twin(
    ts: np.ndarray, channel: np.ndarray, segment: np.ndarray, effects: Effects
) -> FunnelRows:
    """Plain twin of :func:`event_rows` (numpy)."""
    keys = pack(ts // MINUTE_MS, effects.journey, effects.step, channel, segment)
    counts = np.zeros((len(ts), len(MEASURES)), np.int8)
    counts[:, 0] = 1
    counts[:, 1] = effects.effect == EFFECT_STARTED
    counts[:, 2] = effects.effect == EFFECT_ADVANCED
    counts[:, 3] = effects.effect == EFFECT_COMPLETED
    counts[:, 4] = effects.effect == EFFECT_FAILED
    return FunnelRows(keys, counts)


def outcome_rows(outcomes: Records) -> FunnelRows:
    """One ``abandoned`` row per lapsed stall (closed without progress), at its close time."""
    ints = outcomes.ints[:, outcomes.ints[O_OUTCOME] == OUTCOME_LAPSED]
    keys = pack(
        ints[O_RESOLVED_AT] // MINUTE_MS,
        ints[O_JOURNEY],
        ints[O_STEP],
        ints[O_LAST_CHANNEL],
        ints[O_SEGMENT],
    )
    counts = np.zeros((len(keys), len(MEASURES)), np.int8)
    counts[:, _ABANDONED] = 1
    return FunnelRows(keys, counts)


@dataclass(frozen=True)
class _Part:
    """Rows added in one call, not summed, with their first and last minute."""

    rows: FunnelRows
    first: int
    last: int

    @staticmethod
    def of(rows: FunnelRows) -> "_Part":
        # the minute is in a key's top bits: the smallest key holds the first minute
        keys = rows.keys
        return _Part(rows, int(keys.min()) >> MINUTE_SHIFT, int(keys.max()) >> MINUTE_SHIFT)


def _ended(minute: int, watermark: int) -> bool:
    return (minute + 1) * MINUTE_MS <= watermark


def _split(rows: FunnelRows, watermark: int) -> tuple[FunnelRows, FunnelRows]:
    """(the rows of minutes that ended at ``watermark``, the others)."""
    ended = ((rows.keys >> MINUTE_SHIFT) + 1) * MINUTE_MS <= watermark
    done, still_open = np.flatnonzero(ended), np.flatnonzero(~ended)
    return (
        FunnelRows(rows.keys[done], rows.counts.take(done, axis=0)),
        FunnelRows(rows.keys[still_open], rows.counts.take(still_open, axis=0)),
    )


class FunnelWindows:
    """Open per-minute funnel counts (the funnel step's, summed over shards)."""

    def __init__(self) -> None:
        self.keys = np.empty(0, np.int64)  # summed rows: each key once
        self.counts = np.empty((0, len(MEASURES)), np.int64)
        # rows added since, not summed yet: summing waits until the rows are closed (only
        # those are summed) or they outgrow the summed ones
        self.parts: list[_Part] = []
        self.part_rows = 0
        self.first_minute: int | None = None  # earliest minute of any open row

    def close(self, watermark: int, final: bool = False, summed: bool = True) -> FunnelRows:
        """Remove and return the minutes that end at or before ``watermark`` (all if final);
        without ``summed`` a key may come in several rows, to be added up by the caller
        (every row of a closed minute comes in the one call that closes it).

        A part whose minutes all ended (or none did) moves whole; only a part the watermark
        cuts is split (the funnel step closes after every shard output, and selecting the
        rows of every open part each time cost 0.8 s of the flow's thread per benchmark
        round)."""
        if self.first_minute is None or (not final and not _ended(self.first_minute, watermark)):
            self.compact()
            return FunnelRows.empty()
        done: list[FunnelRows] = []
        kept: list[_Part] = []
        summed_rows = FunnelRows(self.keys, self.counts)
        if final:
            done.append(summed_rows)
            self.keys, self.counts = self.keys[:0], self.counts[:0]
        elif len(self.keys):
            ended, still_open = _split(summed_rows, watermark)
            done.append(ended)
            self.keys, self.counts = still_open.keys, still_open.counts
        for part in self.parts:
            if final or _ended(part.last, watermark):
                done.append(part.rows)
            elif not _ended(part.first, watermark):
                kept.append(part)
            else:
                ended, still_open = _split(part.rows, watermark)
                done.append(ended)
                kept.append(_Part.of(still_open))
        self.parts = kept
        self.part_rows = sum(len(p.rows) for p in kept)
        rows = FunnelRows.concat(done)
        if summed:
            rows = rows.summed()
        self._find_first_minute()
        self.compact()
        return rows

    def add_rows(self, rows: FunnelRows) -> None:
        """Add counts made elsewhere (another call, another shard); they stay unsummed until
        :meth:`compact` or :meth:`close`."""
        if not len(rows):
            return
        part = _Part.of(rows)
        self.parts.append(part)
        self.part_rows += len(rows)
        if self.first_minute is None or part.first < self.first_minute:
            self.first_minute = part.first

    def compact(self) -> None:
        """Sum the rows added since into the summed ones once they outgrow them (see
        SUM_FACTOR). :meth:`close` calls it after taking the closed minutes, so rows that
        close in the call that adds them are never summed here."""
        if self.part_rows > max(SUM_FACTOR * len(self.keys), SUM_MIN_ROWS):
            self._sum()

    def _sum(self) -> None:
        """Sum the rows added since into the summed ones."""
        if not self.parts:
            return
        keys = np.concatenate([self.keys, *(p.rows.keys for p in self.parts)])
        counts = np.concatenate([self.counts, *(p.rows.counts for p in self.parts)])
        self.parts, self.part_rows = [], 0
        self.keys, self.counts = _summed(keys, counts)

    def _find_first_minute(self) -> None:
        firsts = [int(self.keys.min()) >> MINUTE_SHIFT] if len(self.keys) else []
        firsts += [p.first for p in self.parts]
        self.first_minute = min(firsts) if firsts else None

    def snapshot(self) -> dict[str, Any]:
        """Copies of the open minutes (summed)."""
        self._sum()
        return {"keys": self.keys.copy(), "counts": self.counts.copy()}

    @classmethod
    def restore(cls, snap: dict[str, Any]) -> "FunnelWindows":
        """Rebuild from :meth:`snapshot`."""
        windows = cls()
        windows.keys, windows.counts = snap["keys"].copy(), snap["counts"].copy()
        windows._find_first_minute()
        return windows


def _summed(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of equal keys added up; each key once, in the order it first appears."""
    return sum_by_key(np.ascontiguousarray(keys, np.int64), np.ascontiguousarray(counts))


@njit(cache=True, nogil=True)
def sum_by_key(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``counts`` ``[n, m]`` with equal ``keys`` added up: (each key once, in the
    order it first appears; its sums). An open-addressing table of row numbers, twice the
    rows in size; about 5x faster than ``np.unique`` and ``bincount`` on 100,000 rows (the
    sort was most of the funnel step's time). Two passes: the first numbers the keys, the
    second adds into sums sized by the keys found (zeroing sums sized by the rows took half
    the time on 2.5 M rows of 0.8 M keys). Sums are int64 whatever the counts' integer
    type. Twin: :func:`sum_by_key_twin`."""
    n, m = counts.shape
    bits = table_bits(n)
    mask = (1 << bits) - 1
    slots = np.full(1 << bits, -1, np.int64)
    unique = np.empty(n, np.int64)
    row_of = np.empty(n, np.int64)
    found = 0
    for i in range(n):
        key = keys[i]
        h = fibonacci_slot(np.uint64(key), bits)
        while True:
            row = slots[h]
            if row < 0:
                row = found
                slots[h] = row
                unique[row] = key
                found += 1
                break
            if unique[row] == key:
                break
            h = (h + 1) & mask
        row_of[i] = row
    sums = np.zeros((found, m), np.int64)
    for i in range(n):
        row = row_of[i]
        for c in range(m):
            sums[row, c] += counts[i, c]
    return unique[:found].copy(), sums


def sum_by_key_twin(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain-Python twin of :func:`sum_by_key` (a dict keeps first-appearance order)."""
    sums: dict[int, list[int]] = {}
    for key, row in zip(keys.tolist(), counts.tolist(), strict=True):
        total = sums.setdefault(key, [0] * counts.shape[1])
        for c, value in enumerate(row):
            total[c] += value
    unique = np.array(list(sums), np.int64)
    return unique, np.array(list(sums.values()), np.int64).reshape(len(sums), counts.shape[1])


FINAL_WATERMARK = 2**62  # a shard whose input ended holds no minute open


@dataclass(frozen=True)
class FunnelUpdate:
    """One shard step output's funnel counts, and the shard's watermark after it."""

    shard: str
    watermark: int
    rows: FunnelRows = field(default_factory=FunnelRows.empty)
    final: bool = False
    paused: bool = False  # see ShardOutput.paused


class FunnelLogic(StatefulBatchLogic[FunnelUpdate, FunnelRows, dict[str, Any]]):
    """Sums every shard's funnel counts; emits the minutes every shard's watermark passed.

    ``sum_closed`` false: a closed minute's rows come out as they are, a key possibly in
    several rows, for the ClickHouse sink to add up when it inserts them (off the flow's
    thread); each output holds every row of the minutes it closes."""

    def __init__(
        self, shards: list[str], resume: dict[str, Any] | None, sum_closed: bool = True
    ) -> None:
        self.sum_closed = sum_closed
        self.shards = list(shards)
        self.paused = False  # a shard paused at the end of input (see ShardOutput.paused)
        self.windows = FunnelWindows()
        self.watermarks: dict[str, int] = {}
        if resume is not None:
            self.windows = FunnelWindows.restore(resume["windows"])
            self.watermarks = dict(resume["watermarks"])

    def on_batch(self, values: list[FunnelUpdate]) -> tuple[list[FunnelRows], bool]:
        """Add the counts first, then move the watermarks, then close what every shard passed."""
        for update in values:
            self.windows.add_rows(update.rows)
            self.paused = self.paused or update.paused
        for update in values:
            mark = FINAL_WATERMARK if update.final else update.watermark
            self.watermarks[update.shard] = max(self.watermarks.get(update.shard, mark), mark)
        if any(shard not in self.watermarks for shard in self.shards):
            self.windows.compact()
            return [], self.RETAIN  # a shard not heard from yet may still count any minute
        watermark = min(self.watermarks[s] for s in self.shards)
        rows = self.windows.close(watermark, summed=self.sum_closed)
        return ([rows] if len(rows) else []), self.RETAIN

    def on_eof(self) -> tuple[list[FunnelRows], bool]:
        """Input ended: every open minute is final; but when the shards paused (the input was
        only cut in a run that can resume, see ``ShardOutput.paused``), the open minutes stay
        in the snapshot, since a second row of the same minute would replace, not add to, the
        first. (The shards' last outputs come before this end.)"""
        if self.paused:
            return [], self.RETAIN
        rows = self.windows.close(0, final=True, summed=self.sum_closed)
        return ([rows] if len(rows) else []), self.DISCARD

    def snapshot(self) -> dict[str, Any]:
        """Open minutes and the shard watermarks."""
        return {"windows": self.windows.snapshot(), "watermarks": dict(self.watermarks)}
