"""Durations written as text in catalogs and settings ("90s", "10m", "2h", "3d", "250ms")."""

import re

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
MAX_SECONDS = 100 * 365 * 86_400  # beyond this a duration is a typo (and overflows int64 ms)
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration_ms(value: object) -> int:
    """Return milliseconds for ``"90s"``-style text or a number of seconds.

    >>> parse_duration_ms("2h"), parse_duration_ms(30), parse_duration_ms("250ms")
    (7200000, 30000, 250)
    """
    if isinstance(value, bool):
        msg = f"expected a duration, got {value!r}"
        raise ValueError(msg)
    if isinstance(value, int | float):
        if not 0 <= value <= MAX_SECONDS:  # also rejects NaN and infinities
            msg = f"duration must be between 0 and {MAX_SECONDS} seconds, got {value!r}"
            raise ValueError(msg)
        return int(round(value * 1000))
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            ms = int(round(float(match.group(1)) * _UNITS_MS[match.group(2)]))
            if ms > MAX_SECONDS * 1000:
                msg = f"duration longer than {MAX_SECONDS} seconds (100 years): {value!r}"
                raise ValueError(msg)
            return ms
    msg = f"expected a duration like '90s', '10m', '2h', '3d' or seconds, got {value!r}"
    raise ValueError(msg)


def format_duration_ms(ms: int) -> str:
    """Return the shortest exact text for ``ms`` ("2h", "90s", "250ms")."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS_MS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
