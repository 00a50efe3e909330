"""The Redis commands of a live-state write, as protocol bytes built by a numba kernel.

A write of many clients' journey fields goes to Redis as EVALSHA calls of one Lua script
(``policy.live_state.WRITE_LUA``), ``chunk`` clients per call. Each call's arguments are the
key TTL (s), then per client its hash key, its number of fields to set, its number of
fields to remove, the (field, value) pairs and the removed fields: plain binary-safe
arguments, so Redis decodes no JSON and the flow encodes none.

:func:`write_commands` writes every call, in the Redis protocol (RESP), into one buffer from
columns (rows grouped by client); :func:`write_commands_py` is its plain-Python twin.
"""

from collections.abc import Sequence

import numpy as np
from numba import njit

_CR, _LF, _DOLLAR, _STAR, _ZERO = 13, 10, 36, 42, 48
CLOSED = -1  # value length of a row whose field is removed


@njit(cache=True, nogil=True)
def _put_uint(out: np.ndarray, pos: int, value: int) -> int:
    """Decimal digits of ``value`` >= 0 at ``pos``; returns the position after them."""
    digits = 1
    rest = value // 10
    while rest:
        digits += 1
        rest //= 10
    for k in range(digits - 1, -1, -1):
        out[pos + k] = _ZERO + value % 10
        value //= 10
    return pos + digits


@njit(cache=True, nogil=True)
def _put_line_end(out: np.ndarray, pos: int) -> int:
    out[pos] = _CR
    out[pos + 1] = _LF
    return pos + 2


@njit(cache=True, nogil=True)
def _put_bulk_head(out: np.ndarray, pos: int, length: int) -> int:
    """``$<length>\\r\\n``: the start of a bulk string of ``length`` bytes."""
    out[pos] = _DOLLAR
    return _put_line_end(out, _put_uint(out, pos + 1, length))


@njit(cache=True, nogil=True)
def _put_bytes(out: np.ndarray, pos: int, src: np.ndarray, start: int, length: int) -> int:
    out[pos : pos + length] = src[start : start + length]
    return pos + length


@njit(cache=True, nogil=True)
def _put_bulk(out: np.ndarray, pos: int, src: np.ndarray, start: int, length: int) -> int:
    """A bulk string of ``src[start : start + length]``."""
    pos = _put_bytes(out, _put_bulk_head(out, pos, length), src, start, length)
    return _put_line_end(out, pos)


@njit(cache=True, nogil=True)
def _put_bulk_uint(out: np.ndarray, pos: int, value: int) -> int:
    """A bulk string of the decimal digits of ``value`` >= 0."""
    digits = 1
    rest = value // 10
    while rest:
        digits += 1
        rest //= 10
    return _put_line_end(out, _put_uint(out, _put_bulk_head(out, pos, digits), value))


@njit(cache=True, nogil=True)
def write_commands(
    out: np.ndarray,
    call_end: np.ndarray,
    head: np.ndarray,
    ttl_s: int,
    prefix: np.ndarray,
    ids: np.ndarray,
    id_len: np.ndarray,
    group_start: np.ndarray,
    names: np.ndarray,
    name_start: np.ndarray,
    name_len: np.ndarray,
    journey: np.ndarray,
    values: np.ndarray,
    value_start: np.ndarray,
    value_len: np.ndarray,
    chunk: int,
) -> int:
    """Write the EVALSHA calls of a live-state write into ``out``; return their length.

    Rows are grouped by client: client ``c`` has rows ``group_start[c]`` to
    ``group_start[c + 1]`` (exclusive) and id ``ids[group_start[c], :id_len[...]]`` (uint8
    ``[rows, width]``). Row ``r`` sets field ``names[name_start[journey[r]]:...]`` to
    ``values[value_start[r]:][:value_len[r]]``, or removes it when ``value_len[r]`` is
    ``CLOSED``. ``head`` is every call's start after its argument count (command name, script
    sha, number of keys). ``call_end[k]`` gets the end of call ``k``; ``out`` must be large
    enough (:func:`buffer_size`).
    """
    clients = len(group_start) - 1
    pos = 0
    for call, first in enumerate(range(0, clients, chunk)):
        last = min(first + chunk, clients)
        argc = 4  # EVALSHA, sha, numkeys, ttl
        for c in range(first, last):
            argc += 3
            for r in range(group_start[c], group_start[c + 1]):
                argc += 2 if value_len[r] != CLOSED else 1
        out[pos] = _STAR
        pos = _put_line_end(out, _put_uint(out, pos + 1, argc))
        pos = _put_bytes(out, pos, head, 0, len(head))
        pos = _put_bulk_uint(out, pos, ttl_s)
        for c in range(first, last):
            r0, r1 = group_start[c], group_start[c + 1]
            size = id_len[r0]
            pos = _put_bulk_head(out, pos, len(prefix) + size)
            pos = _put_bytes(out, pos, prefix, 0, len(prefix))
            pos = _put_line_end(out, _put_bytes(out, pos, ids[r0], 0, size))
            opened = 0
            for r in range(r0, r1):
                if value_len[r] != CLOSED:
                    opened += 1
            pos = _put_bulk_uint(out, pos, opened)
            pos = _put_bulk_uint(out, pos, r1 - r0 - opened)
            for r in range(r0, r1):
                if value_len[r] != CLOSED:
                    j = journey[r]
                    pos = _put_bulk(out, pos, names, name_start[j], name_len[j])
                    pos = _put_bulk(out, pos, values, value_start[r], value_len[r])
            for r in range(r0, r1):
                if value_len[r] == CLOSED:
                    j = journey[r]
                    pos = _put_bulk(out, pos, names, name_start[j], name_len[j])
        call_end[call] = pos
    return pos


def buffer_size(
    head: int, prefix: int, calls: int, clients: int, ids: int, names: int, values: int, rows: int
) -> int:
    """An upper bound of :func:`write_commands`' output: ``head``, ``prefix`` are lengths;
    ``ids``, ``names``, ``values`` the total bytes of the clients' ids, of the rows' field
    names and of their values."""
    bulk = 1 + 20 + 2 + 2  # '$', the length, two line ends
    per_call = 1 + 20 + 2 + head + bulk + 20
    per_client = 3 * bulk + prefix + 2 * 20
    return calls * per_call + clients * per_client + ids + names + values + 2 * rows * bulk


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def write_commands_py(
    sha: str,
    ttl_s: int,
    prefix: bytes,
    clients: Sequence[tuple[bytes, Sequence[tuple[bytes, bytes | None]]]],
    chunk: int,
) -> list[bytes]:
    """The EVALSHA calls of :func:`write_commands`, one per ``chunk`` clients: ``clients``
    is a list of (client id, [(field, value or None to remove), ...])."""
    calls = []
    for first in range(0, len(clients), chunk):
        args = [b"EVALSHA", sha.encode(), b"0", str(ttl_s).encode()]
        for client_id, fields in clients[first : first + chunk]:
            opened = [(f, v) for f, v in fields if v is not None]
            closed = [f for f, v in fields if v is None]
            args += [prefix + client_id, b"%d" % len(opened), b"%d" % len(closed)]
            args += [part for pair in opened for part in pair] + closed
        calls.append(b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args))
    return calls


def evalsha_head(sha: str) -> np.ndarray:
    """``head`` of :func:`write_commands` for the script ``sha``: the command name, the sha
    and zero keys, as bulk strings."""
    return np.frombuffer(_bulk(b"EVALSHA") + _bulk(sha.encode()) + _bulk(b"0"), np.uint8)


def write_calls(
    sha: str,
    ttl_s: int,
    prefix: bytes,
    ids: np.ndarray,
    journey: np.ndarray,
    names: Sequence[bytes],
    values: np.ndarray,
    value_start: np.ndarray,
    value_len: np.ndarray,
    chunk: int,
) -> tuple[list[bytes], int]:
    """The EVALSHA calls of :func:`write_commands` (one per ``chunk`` clients) and the number
    of clients, from rows: client ids ``ids`` (numpy ``S``, UTF-8; a client's rows
    adjacent), field ``names[journey[r]]``, value ``values[value_start[r]:][:value_len[r]]``
    or ``CLOSED``."""
    n = len(ids)
    if n == 0:
        return [], 0
    new_client = np.ones(n, bool)
    new_client[1:] = ids[1:] != ids[:-1]
    group_start = np.append(np.flatnonzero(new_client), n)
    clients = len(group_start) - 1
    calls = -(-clients // chunk)
    name_len = np.array([len(x) for x in names], np.int64)
    name_start = np.cumsum(name_len) - name_len
    name_buf = np.frombuffer(b"".join(names) or b"\0", np.uint8)
    id_len = np.strings.str_len(ids).astype(np.int64)
    head = evalsha_head(sha)
    size = buffer_size(
        len(head), len(prefix), calls, clients, int(id_len[group_start[:-1]].sum()),
        int(name_len[journey].sum()), int(np.maximum(value_len, 0).sum()), n,
    )  # fmt: skip
    out = np.empty(size, np.uint8)
    call_end = np.empty(calls, np.int64)
    width = ids.dtype.itemsize
    write_commands(
        out, call_end, head, ttl_s, np.frombuffer(prefix, np.uint8),
        np.ascontiguousarray(ids).view(np.uint8).reshape(n, width), id_len, group_start,
        name_buf, name_start, name_len, journey.astype(np.int64), values,
        value_start.astype(np.int64), value_len.astype(np.int64), chunk,
    )  # fmt: skip
    starts = [0, *call_end[:-1].tolist()]
    return [out[a:b].tobytes() for a, b in zip(starts, call_end.tolist(), strict=True)], clients
