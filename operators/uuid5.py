"""Intervention ids (UUID version 5: SHA-1 of a namespace and a name) computed by numba.

:func:`uuid5_rows` builds each row's name ``client \\x1f journey \\x1f start \\x1f step \\x1f
attempt`` from byte tables, hashes it with SHA-1 (FIPS 180-4) and formats the UUID as 36
ASCII characters. Its plain-Python twin is
:func:`operators.interventions.intervention_id` (``hashlib``).
"""

import numpy as np
from numba import njit, uint32

_SEP = 0x1F
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
# where the 32 hex digits go in the 36 characters (8-4-4-4-12)
_HEX_POS = np.array(
    [*range(0, 8), *range(9, 13), *range(14, 18), *range(19, 23), *range(24, 36)], np.int64
)
_DASHES = np.array([8, 13, 18, 23], np.int64)


@njit(cache=True, nogil=True)
def _rotl(x: np.uint32, n: int) -> np.uint32:
    """``x`` rotated left by ``n`` bits, as a 32-bit word (numba widens the shifts; the
    cast drops the bits above 32)."""
    return uint32((x << uint32(n)) | (x >> uint32(32 - n)))


@njit(cache=True, nogil=True, inline="always")
def _round(
    a: np.uint32, b: np.uint32, c: np.uint32, d: np.uint32, e: np.uint32, f: int, k: int, wt: int
) -> tuple[np.uint32, np.uint32, np.uint32, np.uint32, np.uint32]:
    """One SHA-1 round: ``f`` is the round function of ``b``, ``c``, ``d``; ``k`` its
    constant; ``wt`` the schedule word (sums modulo 2**32 by the ``uint32`` casts)."""
    return uint32(_rotl(a, 5) + f + e + uint32(k) + wt), a, _rotl(b, 30), c, d


@njit(cache=True, nogil=True)
def _compress(h: np.ndarray, msg: np.ndarray, base: int, w: np.ndarray) -> None:
    """One SHA-1 block: the 64 bytes at ``msg[base:]`` into state ``h`` (uint32[5]);
    ``w`` is uint32[80] scratch. Sums are taken modulo 2**32 by the ``uint32`` casts; the
    80 rounds are four loops of 20, one per round function, so none branches per round."""
    for t in range(16):
        k = base + 4 * t
        w[t] = (
            (uint32(msg[k]) << uint32(24))
            | (uint32(msg[k + 1]) << uint32(16))
            | (uint32(msg[k + 2]) << uint32(8))
            | uint32(msg[k + 3])
        )
    for t in range(16, 80):
        w[t] = _rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1)
    a, b, c, d, e = h[0], h[1], h[2], h[3], h[4]
    for t in range(20):
        a, b, c, d, e = _round(a, b, c, d, e, (b & c) | (~b & d), 0x5A827999, w[t])
    for t in range(20, 40):
        a, b, c, d, e = _round(a, b, c, d, e, b ^ c ^ d, 0x6ED9EBA1, w[t])
    for t in range(40, 60):
        a, b, c, d, e = _round(a, b, c, d, e, (b & c) | (b & d) | (c & d), 0x8F1BBCDC, w[t])
    for t in range(60, 80):
        a, b, c, d, e = _round(a, b, c, d, e, b ^ c ^ d, 0xCA62C1D6, w[t])
    h[0] = uint32(h[0] + a)
    h[1] = uint32(h[1] + b)
    h[2] = uint32(h[2] + c)
    h[3] = uint32(h[3] + d)
    h[4] = uint32(h[4] + e)


@njit(cache=True, nogil=True)
def _sha1(msg: np.ndarray, length: int, h: np.ndarray, w: np.ndarray) -> None:
    """SHA-1 of ``msg[:length]`` into ``h`` (uint32[5]); ``msg`` has room for the padding
    (it is overwritten past ``length``)."""
    h[0] = uint32(0x67452301)
    h[1] = uint32(0xEFCDAB89)
    h[2] = uint32(0x98BADCFE)
    h[3] = uint32(0x10325476)
    h[4] = uint32(0xC3D2E1F0)
    total = ((length + 8) // 64 + 1) * 64
    msg[length] = 0x80
    for k in range(length + 1, total - 8):
        msg[k] = 0
    bits = np.uint64(length) * np.uint64(8)
    for k in range(8):
        msg[total - 1 - k] = np.uint8((bits >> np.uint64(8 * k)) & np.uint64(0xFF))
    for base in range(0, total, 64):
        _compress(h, msg, base, w)


@njit(cache=True, nogil=True)
def _put_text(msg: np.ndarray, at: int, table: np.ndarray, start: int, length: int) -> int:
    for k in range(length):
        msg[at + k] = table[start + k]
    return at + length


@njit(cache=True, nogil=True)
def _put_int(msg: np.ndarray, at: int, value: int) -> int:
    """Decimal digits of ``value`` (as Python's ``str``) at ``msg[at:]``."""
    if value < 0:
        msg[at] = 45  # '-'
        at += 1
        value = -value
    digits = 1
    rest = value // 10
    while rest > 0:
        digits += 1
        rest //= 10
    for k in range(digits - 1, -1, -1):
        msg[at + k] = 48 + value % 10
        value //= 10
    return at + digits


@njit(cache=True, nogil=True)
def uuid5_rows(
    namespace: np.ndarray,
    clients: np.ndarray,
    client_len: np.ndarray,
    names: np.ndarray,
    name_start: np.ndarray,
    name_len: np.ndarray,
    journey_name: np.ndarray,
    step_name: np.ndarray,
    starts: np.ndarray,
    attempts: np.ndarray,
    out: np.ndarray,
) -> None:
    """UUID-5 of each row's name into ``out`` (uint8[n, 36], ASCII).

    ``clients`` is uint8[n, width] (row k's id is its first ``client_len[k]`` bytes);
    journey and step names are entries ``journey_name[k]``/``step_name[k]`` of the ``names``
    byte table (``name_start``/``name_len``).
    """
    n = len(starts)
    longest = 0
    for k in range(len(name_len)):
        longest = max(longest, name_len[k])
    room = len(namespace) + clients.shape[1] + 2 * longest + 4 + 2 * 21 + 72
    msg = np.empty(room, np.uint8)
    h = np.empty(5, np.uint32)
    w = np.empty(80, np.uint32)
    digest = np.empty(16, np.uint8)
    for row in range(n):
        for k in range(len(namespace)):
            msg[k] = namespace[k]
        at = len(namespace)
        for k in range(client_len[row]):
            msg[at + k] = clients[row, k]
        at += client_len[row]
        msg[at] = _SEP
        j = journey_name[row]
        at = _put_text(msg, at + 1, names, name_start[j], name_len[j])
        msg[at] = _SEP
        at = _put_int(msg, at + 1, starts[row])
        msg[at] = _SEP
        s = step_name[row]
        at = _put_text(msg, at + 1, names, name_start[s], name_len[s])
        msg[at] = _SEP
        at = _put_int(msg, at + 1, attempts[row])
        _sha1(msg, at, h, w)
        for k in range(16):
            digest[k] = np.uint8((h[k // 4] >> uint32(24 - 8 * (k % 4))) & uint32(0xFF))
        digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
        digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
        for k in range(16):
            out[row, _HEX_POS[2 * k]] = _HEX[digest[k] >> 4]
            out[row, _HEX_POS[2 * k + 1]] = _HEX[digest[k] & 0x0F]
        for k in range(4):
            out[row, _DASHES[k]] = 45
