"""Epoch-ms arithmetic in a client's local time: quiet-hour windows, local days and weeks.

All functions are pure: the instant comes in as epoch milliseconds, never from the wall clock.
Zone conversions are cached: the UTC offset per zone and quarter hour (when it does not
change within it), wall times to epoch ms per zone and day, and the periods of a local day.
The ``*_many`` functions do the same over numpy arrays of instants in one zone, converting
once per distinct quarter hour or local day.
"""

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np

DAY_MS = 86_400_000
BUCKET_MS = 900_000  # offsets are cached per quarter hour of UTC
_EPOCH = datetime(1970, 1, 1)  # noqa: DTZ001 (naive on purpose: wall times)


@dataclass(frozen=True)
class Window:
    """Quiet hours ``start_ms``-``end_ms`` as ms after local midnight; start inclusive, end
    exclusive. ``start_ms > end_ms`` crosses midnight (21:00-08:00)."""

    start_ms: int
    end_ms: int

    @classmethod
    def parse(cls, text: str) -> "Window":
        """``"HH:MM-HH:MM"`` (``"21:00-08:00"``); ``ValueError`` on anything else."""
        parts = text.split("-")
        if len(parts) != 2:
            msg = f"expected 'HH:MM-HH:MM', got {text!r}"
            raise ValueError(msg)
        start, end = (_clock_ms(p.strip(), text) for p in parts)
        if start == end:
            msg = f"start and end are equal in {text!r} (write 'none' for no quiet hours)"
            raise ValueError(msg)
        return cls(start, end)

    def contains(self, ms_of_day: int) -> bool:
        """Is this local time of day inside the window?"""
        if self.start_ms < self.end_ms:
            return self.start_ms <= ms_of_day < self.end_ms
        return ms_of_day >= self.start_ms or ms_of_day < self.end_ms

    def __str__(self) -> str:
        return f"{_clock_text(self.start_ms)}-{_clock_text(self.end_ms)}"


def _clock_ms(text: str, whole: str) -> int:
    hh, sep, mm = text.partition(":")
    if not (sep and hh.isdigit() and mm.isdigit() and len(mm) == 2 and len(hh) <= 2):
        msg = f"expected 'HH:MM-HH:MM', got {whole!r}"
        raise ValueError(msg)
    hours, minutes = int(hh), int(mm)
    if hours > 23 or minutes > 59:
        msg = f"no such time of day {text!r} in {whole!r}"
        raise ValueError(msg)
    return (hours * 60 + minutes) * 60_000


def _clock_text(ms: int) -> str:
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}"


def local(now_ms: int, tz: ZoneInfo) -> datetime:
    """The aware local datetime of an epoch-ms instant (exact to the millisecond)."""
    seconds, ms = divmod(now_ms, 1000)
    return datetime.fromtimestamp(seconds, tz).replace(microsecond=ms * 1000)  # keeps fold


@lru_cache(maxsize=1 << 16)
def _bucket_offset_ms(tz: ZoneInfo, bucket: int) -> int | None:
    """The zone's UTC offset (ms) throughout quarter hour ``bucket``; None if it changes."""
    first = local(bucket * BUCKET_MS, tz).utcoffset()
    last = local((bucket + 1) * BUCKET_MS - 1_000, tz).utcoffset()  # changes fall on seconds
    if first != last or first is None:
        return None
    return first // timedelta(milliseconds=1)


def wall(now_ms: int, tz: ZoneInfo) -> datetime:
    """The naive local wall time of an epoch-ms instant (what :func:`local` shows)."""
    offset = _bucket_offset_ms(tz, now_ms // BUCKET_MS)
    if offset is None:
        return local(now_ms, tz).replace(tzinfo=None)
    return _EPOCH + timedelta(milliseconds=now_ms + offset)


@lru_cache(maxsize=1 << 16)
def epoch_ms(day: date, ms_of_day: int, tz: ZoneInfo, fold: int = 0) -> int:
    """Epoch ms of local wall time ``ms_of_day`` on ``day`` in ``tz``. A time a DST change
    repeats is its first instance (``fold=1``: its second); a time it skips maps as Python
    does, by the offset before the change (so, one gap length after the change)."""
    seconds = ms_of_day // 1000
    clock = time(seconds // 3600, seconds // 60 % 60, seconds % 60, fold=fold)
    return int(datetime.combine(day, clock, tz).timestamp()) * 1000 + ms_of_day % 1000


@lru_cache(maxsize=1 << 16)
def quiet_end_ms(day: date, end_ms_of_day: int, tz: ZoneInfo) -> int:
    """Epoch ms at which quiet hours ending at wall time ``end_ms_of_day`` on ``day`` end:
    that time, or, when a DST spring-forward skips it, the change itself (the first instant
    the wall clock shows a later time; ``fold=0`` alone would add the length of the gap)."""
    after = epoch_ms(day, end_ms_of_day, tz)
    shown = local(after, tz)
    if shown.date() == day and ms_of_day(shown) == end_ms_of_day:
        return after
    before = epoch_ms(day, end_ms_of_day, tz, fold=1)  # the offset after the change: before it
    offset = shown.utcoffset()
    low, high = before // 1000, after // 1000  # seconds; the change is in (low, high]
    while high - low > 1:
        middle = (low + high) // 2
        if local(middle * 1000, tz).utcoffset() == offset:
            high = middle
        else:
            low = middle
    return high * 1000


def _end_after(day: date, end_ms_of_day: int, tz: ZoneInfo, now_ms: int) -> int:
    """The end of quiet hours at wall time ``end_ms_of_day`` on ``day``, after ``now_ms``: a
    wall time that a DST fall-back repeats ends at its second instance when ``now_ms`` is
    already past the first (inside the repeated hour), not at once."""
    end = quiet_end_ms(day, end_ms_of_day, tz)
    if end <= now_ms:
        end = epoch_ms(day, end_ms_of_day, tz, fold=1)
    return max(end, now_ms + 1)


def ms_of_day(moment: datetime) -> int:
    """Milliseconds since local midnight."""
    return (
        (moment.hour * 60 + moment.minute) * 60 + moment.second
    ) * 1000 + moment.microsecond // 1000


def quiet_until(now_ms: int, tz: ZoneInfo, window: Window | None) -> int | None:
    """Epoch ms at which the quiet window around ``now_ms`` ends, or None if not quiet now."""
    if window is None:
        return None
    moment = wall(now_ms, tz)
    tod = ms_of_day(moment)
    if not window.contains(tod):
        return None
    day = moment.date()
    if window.start_ms > window.end_ms and tod >= window.start_ms:
        day += timedelta(days=1)  # after the evening start: ends tomorrow morning
    return _end_after(day, window.end_ms, tz, now_ms)


@dataclass(frozen=True)
class Periods:
    """The client's local calendar day and ISO week (Monday 00:00) around an instant, as
    half-open epoch-ms ranges, and their labels (``2026-01-05``, ``2026-W02``)."""

    day_start: int
    day_end: int
    week_start: int
    week_end: int
    day: str
    week: str


def periods(now_ms: int, tz: ZoneInfo) -> Periods:
    """Local day and week of ``now_ms`` in ``tz`` (DST days are 23 or 25 hours long)."""
    return _periods(wall(now_ms, tz).date(), tz)


@lru_cache(maxsize=1 << 14)
def _periods(today: date, tz: ZoneInfo) -> Periods:
    monday = today - timedelta(days=today.weekday())
    year, week, _ = today.isocalendar()
    return Periods(
        day_start=epoch_ms(today, 0, tz),
        day_end=epoch_ms(today + timedelta(days=1), 0, tz),
        week_start=epoch_ms(monday, 0, tz),
        week_end=epoch_ms(monday + timedelta(days=7), 0, tz),
        day=today.isoformat(),
        week=f"{year}-W{week:02d}",
    )


_DAY_ZERO = date(1970, 1, 1)


def wall_ms_many(now_ms: np.ndarray, zone_no: np.ndarray, zones: list[ZoneInfo]) -> np.ndarray:
    """The local wall time of each instant in its zone ``zones[zone_no]``, as ms since
    1970-01-01 00:00 wall time (int64): :func:`wall` over arrays, one offset lookup per
    distinct zone and quarter hour."""
    nz = len(zones)
    keys, inverse = np.unique(now_ms // BUCKET_MS * nz + zone_no, return_inverse=True)
    offsets = [_bucket_offset_ms(zones[k % nz], k // nz) for k in keys.tolist()]
    out = now_ms + np.array([o or 0 for o in offsets], np.int64)[inverse]
    changing = [i for i, o in enumerate(offsets) if o is None]  # an offset change inside
    for row in np.flatnonzero(np.isin(inverse, changing)).tolist():
        tz = zones[zone_no[row]]
        out[row] = (wall(int(now_ms[row]), tz) - _EPOCH) // timedelta(milliseconds=1)
    return out


def quiet_until_many(
    now_ms: np.ndarray,
    wall_ms: np.ndarray,
    zone_no: np.ndarray,
    zones: list[ZoneInfo],
    start_ms: np.ndarray,
    end_ms: np.ndarray,
) -> np.ndarray:
    """:func:`quiet_until` of each instant (``wall_ms`` from :func:`wall_ms_many`) for the
    window ``start_ms``-``end_ms`` of its row, -1 where it is not quiet; one conversion per
    distinct zone and end of quiet hours."""
    tod = wall_ms % DAY_MS
    day = wall_ms // DAY_MS
    crossing = start_ms > end_ms
    inside = (tod >= start_ms) & (tod < end_ms)
    quiet = np.where(crossing, (tod >= start_ms) | (tod < end_ms), inside)
    day = day + (crossing & (tod >= start_ms))  # after an evening start: ends tomorrow
    out = np.full(len(now_ms), -1, np.int64)
    if quiet.any():
        nz = len(zones)
        key = (day[quiet] * DAY_MS + end_ms[quiet]) * nz + zone_no[quiet]
        keys, inverse = np.unique(key, return_inverse=True)
        ends = [
            quiet_end_ms(
                _DAY_ZERO + timedelta(days=k // nz // DAY_MS), k // nz % DAY_MS, zones[k % nz]
            )
            for k in keys.tolist()
        ]
        out[quiet] = np.maximum(np.array(ends, np.int64)[inverse], now_ms[quiet] + 1)
        rows = np.flatnonzero(quiet)
        for i in np.flatnonzero(out[rows] == now_ms[rows] + 1).tolist():  # rare: see _end_after
            row, k = int(rows[i]), int(keys[inverse[i]])
            day_of, end_of, tz = k // nz // DAY_MS, k // nz % DAY_MS, zones[k % nz]
            out[row] = _end_after(_DAY_ZERO + timedelta(days=day_of), end_of, tz, int(now_ms[row]))
    return out


def period_bounds_many(
    wall_ms: np.ndarray, zone_no: np.ndarray, zones: list[ZoneInfo]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``day_start``, ``day_end``, ``week_start`` and ``week_end`` of :func:`periods` for each
    instant (``wall_ms`` from :func:`wall_ms_many`); one conversion per distinct zone and
    local day."""
    nz = len(zones)
    keys, inverse = np.unique(wall_ms // DAY_MS * nz + zone_no, return_inverse=True)
    found = [_periods(_DAY_ZERO + timedelta(days=k // nz), zones[k % nz]) for k in keys.tolist()]
    names = ("day_start", "day_end", "week_start", "week_end")
    day_start, day_end, week_start, week_end = (
        np.array([getattr(p, name) for p in found], np.int64)[inverse] for name in names
    )
    return day_start, day_end, week_start, week_end
