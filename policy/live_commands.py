"""The Redis commands of a live-state write, as protocol bytes built by a numba kernel.

A write of many clients' journey fields goes to Redis as plain commands, per client an
``HSET`` of the fields it sets and an ``EXPIRE`` of its key (when it sets any) and an
``HDEL`` of those it removes (when it removes any), all in one buffer sent in one write
(``policy.live_state.LiveStateWriter.send``).

:func:`write_commands` writes them in the Redis protocol (RESP) from columns (rows grouped
by client); :func:`write_commands_py` is its plain-Python twin.
"""

from collections.abc import Sequence

import numpy as np
from numba import njit

_CR, _LF, _DOLLAR, _STAR, _ZERO = 13, 10, 36, 42, 48
CLOSED = -1  # value length of a row whose field is removed


@njit(cache=True, nogil=True)
def _digits(value: int) -> int:
    """How many decimal digits ``value`` >= 0 has."""
    digits = 1
    rest = value // 10
    while rest:
        digits += 1
        rest //= 10
    return digits


@njit(cache=True, nogil=True)
def _put_uint(out: np.ndarray, pos: int, value: int) -> int:
    """Decimal digits of ``value`` >= 0 at ``pos``; returns the position after them."""
    digits = _digits(value)
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
    pos = _put_bulk_head(out, pos, _digits(value))
    return _put_line_end(out, _put_uint(out, pos, value))


@njit(cache=True, nogil=True)
def _put_key(out: np.ndarray, pos: int, prefix: np.ndarray, client: np.ndarray, size: int) -> int:
    """The bulk string ``prefix`` + ``client[:size]``."""
    pos = _put_bulk_head(out, pos, len(prefix) + size)
    pos = _put_bytes(out, pos, prefix, 0, len(prefix))
    return _put_line_end(out, _put_bytes(out, pos, client, 0, size))


@njit(cache=True, nogil=True)
def _put_command(out: np.ndarray, pos: int, argc: int, name: np.ndarray) -> int:
    """``*<argc>\r\n`` and the command name ``name`` (a whole bulk string)."""
    out[pos] = _STAR
    pos = _put_line_end(out, _put_uint(out, pos + 1, argc))
    return _put_bytes(out, pos, name, 0, len(name))


@njit(cache=True, nogil=True)
def write_commands(
    out: np.ndarray,
    names3: np.ndarray,
    name3_start: np.ndarray,
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
) -> tuple[int, int]:
    """Write the commands of a live-state write into ``out``; return (their length, their
    number).

    Rows are grouped by client: client ``c`` has rows ``group_start[c]`` to
    ``group_start[c + 1]`` (exclusive) and id ``ids[group_start[c], :id_len[...]]`` (uint8
    ``[rows, width]``). Row ``r`` sets field ``names[name_start[journey[r]]:...]`` to
    ``values[value_start[r]:][:value_len[r]]``, or removes it when ``value_len[r]`` is
    ``CLOSED``. Per client: one HSET of its set fields and an EXPIRE of its key, when it
    sets any; one HDEL of its removed ones, when it removes any (an HDEL never creates a
    key, so the key keeps the expiry its last HSET gave it); in that order: HSET, HDEL,
    EXPIRE. ``names3[name3_start[k]:name3_start[k + 1]]`` is the bulk string of command
    ``k`` of HSET, HDEL, EXPIRE. ``out`` must be large enough (:func:`buffer_size`).
    """
    hset = names3[name3_start[0] : name3_start[1]]
    hdel = names3[name3_start[1] : name3_start[2]]
    expire = names3[name3_start[2] : name3_start[3]]
    pos = 0
    count = 0
    for c in range(len(group_start) - 1):
        r0, r1 = group_start[c], group_start[c + 1]
        client, size = ids[r0], id_len[r0]
        opened = 0
        for r in range(r0, r1):
            if value_len[r] != CLOSED:
                opened += 1
        if opened:
            pos = _put_key(out, _put_command(out, pos, 2 + 2 * opened, hset), prefix, client, size)
            for r in range(r0, r1):
                if value_len[r] != CLOSED:
                    j = journey[r]
                    pos = _put_bulk(out, pos, names, name_start[j], name_len[j])
                    pos = _put_bulk(out, pos, values, value_start[r], value_len[r])
            count += 1
        if opened < r1 - r0:
            argc = 2 + r1 - r0 - opened
            pos = _put_key(out, _put_command(out, pos, argc, hdel), prefix, client, size)
            for r in range(r0, r1):
                if value_len[r] == CLOSED:
                    j = journey[r]
                    pos = _put_bulk(out, pos, names, name_start[j], name_len[j])
            count += 1
        if opened:
            pos = _put_key(out, _put_command(out, pos, 3, expire), prefix, client, size)
            pos = _put_bulk_uint(out, pos, ttl_s)
            count += 1
    return pos, count


def buffer_size(prefix: int, clients: int, ids: int, names: int, values: int, rows: int) -> int:
    """An upper bound of :func:`write_commands`' output: ``prefix`` is its length; ``ids``,
    ``names``, ``values`` the total bytes of the clients' ids, of the rows' field names and
    of their values."""
    bulk = 1 + 20 + 2 + 2  # '$', the length, two line ends
    command = 1 + 20 + 2 + 16  # '*', the count, a line end, the name as a bulk string
    per_client = 3 * (command + bulk + prefix) + bulk + 20
    return clients * per_client + 3 * ids + names + values + 2 * rows * bulk


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args)


def write_commands_py(
    ttl_s: int, prefix: bytes, clients: Sequence[tuple[bytes, Sequence[tuple[bytes, bytes | None]]]]
) -> tuple[bytes, int]:
    """The commands of :func:`write_commands` and their number: ``clients`` is a list of
    (client id, [(field, value or None to remove), ...])."""
    commands = []
    for client_id, fields in clients:
        key = prefix + client_id
        opened = [part for f, v in fields if v is not None for part in (f, v)]
        closed = [f for f, v in fields if v is None]
        if opened:
            commands.append(_command(b"HSET", key, *opened))
        if closed:
            commands.append(_command(b"HDEL", key, *closed))
        if opened:
            commands.append(_command(b"EXPIRE", key, b"%d" % ttl_s))
    return b"".join(commands), len(commands)


_NAMES3 = [_bulk(b"HSET"), _bulk(b"HDEL"), _bulk(b"EXPIRE")]
NAMES3 = np.frombuffer(b"".join(_NAMES3), np.uint8)
NAME3_START = np.cumsum([0] + [len(n) for n in _NAMES3]).astype(np.int64)


def commands_of_rows(
    ttl_s: int,
    prefix: bytes,
    ids: np.ndarray,
    journey: np.ndarray,
    names: Sequence[bytes],
    values: np.ndarray,
    value_start: np.ndarray,
    value_len: np.ndarray,
) -> tuple[bytes, int, int]:
    """The commands of :func:`write_commands`, their number and the number of clients, from
    rows: client ids ``ids`` (numpy ``S``, UTF-8; a client's rows adjacent), field
    ``names[journey[r]]``, value ``values[value_start[r]:][:value_len[r]]`` or ``CLOSED``."""
    n = len(ids)
    if n == 0:
        return b"", 0, 0
    new_client = np.ones(n, bool)
    new_client[1:] = ids[1:] != ids[:-1]
    group_start = np.append(np.flatnonzero(new_client), n)
    clients = len(group_start) - 1
    name_len = np.array([len(x) for x in names], np.int64)
    name_start = np.cumsum(name_len) - name_len
    name_buf = np.frombuffer(b"".join(names) or b"\0", np.uint8)
    id_len = np.strings.str_len(ids).astype(np.int64)
    size = buffer_size(
        len(prefix), clients, int(id_len[group_start[:-1]].sum()),
        int(name_len[journey].sum()), int(np.maximum(value_len, 0).sum()), n,
    )  # fmt: skip
    out = np.empty(size, np.uint8)
    width = ids.dtype.itemsize
    used, count = write_commands(
        out, NAMES3, NAME3_START, ttl_s, np.frombuffer(prefix, np.uint8),
        np.ascontiguousarray(ids).view(np.uint8).reshape(n, width), id_len, group_start,
        name_buf, name_start, name_len, journey.astype(np.int64), values,
        value_start.astype(np.int64), value_len.astype(np.int64),
    )  # fmt: skip
    return out[:used].tobytes(), count, clients
