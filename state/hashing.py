"""Stable 64-bit client hashes (FNV-1a over code points) and shard assignment.

Stable across processes and restarts (unlike Python's ``hash``), so a client always lands in
the same shard whichever worker decodes its events. Each kernel has a ``*_py`` twin.
"""

import numpy as np
from numba import njit

FNV_OFFSET = 14695981039346656037
FNV_PRIME = 1099511628211
MASK64 = (1 << 64) - 1

_OFFSET = np.uint64(FNV_OFFSET)
_PRIME = np.uint64(FNV_PRIME)


@njit(cache=True, nogil=True)
def mix64(x: np.uint64) -> np.uint64:
    """splitmix64 finalizer: spreads keys over hash-table buckets and shards."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True, nogil=True, inline="always")
def table_bits(n: int) -> int:
    """log2 of an open-addressing table's size for ``n`` entries: the smallest power of two
    of at least ``2 * n`` (and 16)."""
    bits = 4
    while (1 << bits) < 2 * n:
        bits += 1
    return bits


@njit(cache=True, nogil=True, inline="always")
def fibonacci_slot(key: np.uint64, bits: int) -> np.int64:
    """The slot of ``key`` in a table of ``2 ** bits``: the top bits of ``key`` times
    2**64 / golden ratio (Fibonacci hashing)."""
    return np.int64((key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - bits))


def mix64_py(x: int) -> int:
    """Plain-Python twin of :func:`mix64`."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


@njit(cache=True, nogil=True)
def hash_codepoints(codepoints: np.ndarray) -> np.ndarray:
    """FNV-1a of each row of a ``uint32[n, width]`` view of a numpy ``U`` array.

    A row ends after its last non-zero code point (numpy pads shorter strings with zeros, and
    keeps only embedded NULs, which are hashed like any other character).
    """
    n, width = codepoints.shape
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        end = width
        while end > 0 and codepoints[i, end - 1] == 0:
            end -= 1
        h = _OFFSET
        for k in range(end):
            h = (h ^ np.uint64(codepoints[i, k])) * _PRIME
        out[i] = h
    return out


def hash_client_id_py(client_id: str) -> int:
    """Plain-Python twin of :func:`hash_codepoints` for one id."""
    h = FNV_OFFSET
    for ch in client_id:
        h = ((h ^ ord(ch)) * FNV_PRIME) & MASK64
    return h


def hash_client_ids(ids: np.ndarray) -> np.ndarray:
    """Hash a numpy ``U`` array of client ids to ``uint64``."""
    if ids.dtype.kind != "U":
        msg = f"client ids must be a numpy str_ array, got dtype {ids.dtype}"
        raise TypeError(msg)
    if len(ids) == 0:
        return np.empty(0, dtype=np.uint64)
    width = ids.dtype.itemsize // 4
    view = np.ascontiguousarray(ids).view(np.uint32).reshape(len(ids), width)
    return hash_codepoints(view)


@njit(cache=True, nogil=True)
def shard_of(hashes: np.ndarray, n_shards: int) -> np.ndarray:
    """Shard index of each client hash."""
    out = np.empty(len(hashes), dtype=np.int32)
    n = np.uint64(n_shards)
    for i in range(len(hashes)):
        out[i] = np.int32(mix64(hashes[i]) % n)
    return out


def shard_of_py(client_hash: int, n_shards: int) -> int:
    """Plain-Python twin of :func:`shard_of` for one hash."""
    return mix64_py(client_hash) % n_shards


# A lane is taken from the mixed hash's top byte: the shard takes its low bits and the client
# index of a lane its buckets from bits 32 and up (see ``state.kernels._home``), so the
# clients of one lane of one shard still spread over all of those.
LANE_SHIFT = 56


@njit(cache=True, nogil=True)
def lane_of(hashes: np.ndarray, n_lanes: int) -> np.ndarray:
    """Lane (``int8``, below ``n_lanes`` <= 127) of each client hash within its shard."""
    out = np.empty(len(hashes), dtype=np.int8)
    n = np.uint64(n_lanes)
    shift = np.uint64(LANE_SHIFT)
    for i in range(len(hashes)):
        out[i] = np.int8((mix64(hashes[i]) >> shift) % n)
    return out


def lane_of_py(client_hash: int, n_lanes: int) -> int:
    """Plain-Python twin of :func:`lane_of` for one hash."""
    return (mix64_py(client_hash) >> LANE_SHIFT) % n_lanes


@njit(cache=True, nogil=True)
def shard_order(
    hashes: np.ndarray, n_shards: int, n_lanes: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by shard and, within a shard, by lane, arrival order kept within a lane
    (a counting sort): returns (row order, bounds) where shard s has
    ``order[bounds[s]:bounds[s + 1]]``."""
    n = len(hashes)
    shard = shard_of(hashes, n_shards)
    lane = lane_of(hashes, n_lanes)
    groups = n_shards * n_lanes
    starts = np.zeros(groups + 1, np.int64)
    for i in range(n):
        starts[shard[i] * n_lanes + lane[i] + 1] += 1
    for g in range(groups):
        starts[g + 1] += starts[g]
    fill = starts[:-1].copy()
    order = np.empty(n, np.int64)
    for i in range(n):
        g = shard[i] * n_lanes + lane[i]
        order[fill[g]] = i
        fill[g] += 1
    return order, starts[::n_lanes].copy()


def shard_order_py(
    hashes: list[int], n_shards: int, n_lanes: int = 1
) -> tuple[list[int], list[int]]:
    """Plain-Python twin of :func:`shard_order`."""
    shards = [shard_of_py(h, n_shards) for h in hashes]
    groups = [(s, lane_of_py(h, n_lanes)) for s, h in zip(shards, hashes, strict=True)]
    order = sorted(range(len(hashes)), key=lambda i: groups[i])  # sorted() is stable
    bounds = [sum(1 for s in shards if s < limit) for limit in range(n_shards + 1)]
    return order, bounds
