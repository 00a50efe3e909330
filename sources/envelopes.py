"""Envelopes: a message holding a JSON array of events (a collector's batch), split into
the original bytes of each element.

The elements keep their bytes as the collector sent them, so a dead letter holds the bad
element itself, not a re-encoding of it (numbers, escapes and key order unchanged), and one
element nested deeper than an event may be costs only itself (the whole message stays
whole only past the 1,024 levels orjson reads).
:func:`split_envelope` checks the whole message with orjson, then :func:`element_bounds`
(numba; twin :func:`element_bounds_twin`) finds where each top-level element starts and
ends. A message that is not a valid, non-empty array stays whole, and the decoder
dead-letters it with its reason.
"""

import numpy as np
import orjson
from numba import njit

# first bytes of a message that may be an envelope (white space before the array is JSON's)
MAY_START_ENVELOPE = frozenset([b"[", b" ", b"\t", b"\n", b"\r"])

_QUOTE, _BACKSLASH, _COMMA = 0x22, 0x5C, 0x2C
_OPEN_ARRAY, _CLOSE_ARRAY, _OPEN_OBJECT, _CLOSE_OBJECT = 0x5B, 0x5D, 0x7B, 0x7D
_SPACE, _TAB, _LF, _CR = 0x20, 0x09, 0x0A, 0x0D


def expand_envelopes(
    messages: list[bytes], offsets: list[int], max_bytes: int | None = None
) -> tuple[list[bytes], list[int]]:
    """Split messages holding a JSON array of events into one message per element, each at
    the envelope's offset; never raises.

    A message that starts with ``[`` but cannot be split (no valid JSON, an empty array), or
    is longer than ``max_bytes``, stays whole: the decoder dead-letters it with its reason
    (an array is no event object; a message over ``engine.max_message_bytes`` is oversized).
    """
    out: list[bytes] = []
    out_offsets: list[int] = []
    for message, offset in zip(messages, offsets, strict=True):
        splits = message.lstrip()[:1] == b"[" and (max_bytes is None or len(message) <= max_bytes)
        events = split_envelope(message) if splits else None
        if events:
            out.extend(events)
            out_offsets.extend([offset] * len(events))
        else:
            out.append(message)
            out_offsets.append(offset)
    return out, out_offsets


def split_envelope(message: bytes) -> list[bytes] | None:
    """The original bytes of the elements of a JSON array; None when ``message`` is no valid
    JSON (as orjson reads it), no array, or an empty one."""
    try:
        parsed = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, list) or not parsed:
        return None
    bounds = element_bounds(np.frombuffer(message, np.uint8))
    if len(bounds) != len(parsed):  # cannot happen for valid JSON; kept whole if it did
        return None
    return [message[start:end] for start, end in bounds.tolist()]


@njit(cache=True, nogil=True)
def element_bounds(buf: np.ndarray) -> np.ndarray:
    """``[n, 2]`` start and end offsets in ``buf`` (the bytes of a valid JSON array) of its
    top-level elements, white space around them excluded. Only strings (with their escapes)
    and nesting are followed: the caller has checked that ``buf`` is valid JSON."""
    n = len(buf)
    bounds = np.empty((n // 2 + 1, 2), np.int64)
    count = 0
    i = 0
    while i < n and buf[i] != _OPEN_ARRAY:
        i += 1
    i += 1
    depth = 0
    start = -1  # first byte of the element being read; -1 between elements
    last = -1  # its last byte that is not white space
    in_string = False
    while i < n:
        c = buf[i]
        if in_string:
            if c == _BACKSLASH:
                i += 1
            elif c == _QUOTE:
                in_string = False
                last = i
        elif c in (_SPACE, _TAB, _LF, _CR):
            pass
        elif depth == 0 and c in (_COMMA, _CLOSE_ARRAY):
            if start >= 0:
                bounds[count, 0] = start
                bounds[count, 1] = last + 1
                count += 1
            start = -1
            if c == _CLOSE_ARRAY:
                break
        else:
            if start < 0:
                start = i
            if c == _QUOTE:
                in_string = True
            elif c in (_OPEN_ARRAY, _OPEN_OBJECT):
                depth += 1
            elif c in (_CLOSE_ARRAY, _CLOSE_OBJECT):
                depth -= 1
            last = i
        i += 1
    return bounds[:count].copy()


def element_bounds_twin(buf: bytes) -> list[tuple[int, int]]:
    """Plain-Python twin of :func:`element_bounds`, as (start, end) pairs."""
    bounds: list[tuple[int, int]] = []
    i = buf.index(b"[") + 1
    depth, start, last, in_string = 0, -1, -1, False
    while i < len(buf):
        c = buf[i]
        if in_string:
            if c == _BACKSLASH:
                i += 1
            elif c == _QUOTE:
                in_string, last = False, i
        elif c in (_SPACE, _TAB, _LF, _CR):
            pass
        elif depth == 0 and c in (_COMMA, _CLOSE_ARRAY):
            if start >= 0:
                bounds.append((start, last + 1))
            start = -1
            if c == _CLOSE_ARRAY:
                break
        else:
            if start < 0:
                start = i
            if c == _QUOTE:
                in_string = True
            elif c in (_OPEN_ARRAY, _OPEN_OBJECT):
                depth += 1
            elif c in (_CLOSE_ARRAY, _CLOSE_OBJECT):
                depth -= 1
            last = i
        i += 1
    return bounds
