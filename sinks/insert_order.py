"""Rows of an insert put in the table's sorting-key order before ClickHouse gets them.

A MergeTree insert sorts every block by the table's ORDER BY unless it finds the block
sorted already (the ``MergeTreeDataWriterBlocksAlreadySorted`` event counts those). Sorting
here, on integer ranks of the key columns, costs less than ClickHouse's sort of the same
strings: on one benchmark run's rows (1.94 M funnel rows, 360 k rows of each intervention
table) chDB's insert CPU went from 0.45-0.5 to 0.17-0.21 s for the decisions and outcomes
tables, 0.9-1.2 to 0.40-0.46 s for stalls, and 1.3-1.5 to 1.0-1.2 s for the funnel, whose
own sort here costs about that much again.

Only the order changes, and it is stable (equal keys keep their order), as ClickHouse's own
sort is: a block with duplicate keys leaves the same row last either way, which is the one
a ReplacingMergeTree keeps.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit


def key_ranks(column: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """Integers ordered as ClickHouse orders the column's values, or None for a column this
    does not rank (nulls, floats, other types).

    Strings order by their UTF-8 bytes, as ClickHouse compares ``String`` and
    ``LowCardinality(String)``; a dictionary column by its values, not its codes.
    """
    if column.null_count:
        return None
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = array.type
    if pa.types.is_dictionary(kind):
        if array.dictionary.null_count or not _is_text(array.dictionary.type):
            return None
        value_ranks = pc.rank(array.dictionary, sort_keys="ascending", tiebreaker="dense")
        return np.asarray(value_ranks.to_numpy(), np.int64)[array.indices.to_numpy()]
    if _is_text(kind):
        halves = uuid_halves(array)
        if halves is not None:  # intervention ids: 3x cheaper than ranking them as text
            return pair_ranks(*halves)
        ranks = pc.rank(array, sort_keys="ascending", tiebreaker="dense")
        return np.asarray(ranks.to_numpy(), np.int64)
    if pa.types.is_timestamp(kind) or pa.types.is_integer(kind):
        if pa.types.is_uint64(kind):
            return None  # may not fit int64
        return np.asarray(array.cast(pa.int64()).to_numpy(), np.int64)
    return None


def _is_text(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
    )


UUID_TEXT_LENGTH = 36
_DASHES = (8, 13, 18, 23)


def uuid_halves(array: pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """The high and low 64 bits of each value when every value of the text ``array`` is a
    UUID in lower-case hex with dashes (``8-4-4-4-12``), else None.

    Such text orders by its bytes as the 128-bit numbers order, since ``0-9`` come before
    ``a-f`` in ASCII; upper case would not (``B`` comes before ``a``).
    """
    n = len(array)
    if not n or not (pa.types.is_string(array.type) or pa.types.is_binary(array.type)):
        return None
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32)[array.offset : array.offset + n + 1]
    if data_buffer is None or not bool(np.all(np.diff(offsets) == UUID_TEXT_LENGTH)):
        return None
    data = np.frombuffer(data_buffer, np.uint8)[offsets[0] : offsets[-1]]
    hi = np.empty(n, np.uint64)
    lo = np.empty(n, np.uint64)
    if not parse_uuids(data.reshape(n, UUID_TEXT_LENGTH), hi, lo):
        return None
    return hi, lo


_HEX_VALUE = np.full(256, 255, np.uint8)  # byte -> its lower-case hex digit's value, else 255
_HEX_VALUE[48:58] = np.arange(10)  # 0-9
_HEX_VALUE[97:103] = np.arange(10, 16)  # a-f
_HEX_AT = np.array([p for p in range(UUID_TEXT_LENGTH) if p not in _DASHES], np.int64)


def parse_uuids(chars: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> bool:
    """Fill ``hi`` and ``lo`` with the 128-bit numbers of the UUID text rows of ``chars``
    (uint8 ``[n, 36]``); False when a row is not lower-case ``8-4-4-4-12`` hex."""
    if not bool(np.all(chars[:, list(_DASHES)] == ord("-"))):
        return False
    return _hex_halves(chars, _HEX_AT, _HEX_VALUE, hi, lo)


@njit(cache=True, nogil=True)
def _hex_halves(
    chars: np.ndarray, at: np.ndarray, value_of: np.ndarray, hi: np.ndarray, lo: np.ndarray
) -> bool:
    """The numba kernel of :func:`parse_uuids`: the 32 hex digits of each row at ``at``.
    Twin: :func:`parse_uuids_twin`."""
    four = np.uint64(4)
    for i in range(chars.shape[0]):
        high = np.uint64(0)
        low = np.uint64(0)
        bad = np.uint8(0)
        for k in range(16):
            v = value_of[chars[i, at[k]]]
            bad |= v
            high = (high << four) | np.uint64(v)
        for k in range(16, 32):
            v = value_of[chars[i, at[k]]]
            bad |= v
            low = (low << four) | np.uint64(v)
        if bad > 15:
            return False
        hi[i] = high
        lo[i] = low
    return True


def parse_uuids_twin(chars: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> bool:
    """Plain twin of :func:`parse_uuids`."""
    for i, row in enumerate(chars):
        text = bytes(row).decode("ascii", errors="replace")
        parts = text.split("-")
        if [len(part) for part in parts] != [8, 4, 4, 4, 12]:
            return False
        digits = "".join(parts)
        if any(c not in "0123456789abcdef" for c in digits):
            return False
        hi[i] = int(digits[:16], 16)
        lo[i] = int(digits[16:], 16)
    return True


def pair_ranks(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Dense ranks (int64) of the pairs ``(hi, lo)`` of uint64, as 128-bit numbers."""
    order = radix_argsort(hi, 64)
    sorted_hi = hi[order]
    if bool(np.any(sorted_hi[1:] == sorted_hi[:-1])):  # repeated ids: sort by both halves
        order = np.lexsort((lo, hi))
        sorted_hi = hi[order]
    sorted_lo = lo[order]
    new = (sorted_hi[1:] != sorted_hi[:-1]) | (sorted_lo[1:] != sorted_lo[:-1])
    ranks = np.empty(len(hi), np.int64)
    ranks[order] = np.concatenate(([0], np.cumsum(new)))
    return ranks


def sorted_order(table: pa.Table, keys: list[str]) -> np.ndarray | None:
    """Row indices that put ``table`` in ``keys`` order (stable); None when a key column is
    not one :func:`key_ranks` ranks, or ``keys`` is empty."""
    if not keys:
        return None
    ranks = []
    for key in keys:
        rank = key_ranks(table[key])
        if rank is None:
            return None
        ranks.append(rank)
    packed = _packed(ranks)
    if packed is not None:
        return radix_argsort(*packed)
    return np.lexsort(ranks[::-1])  # the last key given to lexsort is the primary one


def _packed(ranks: list[np.ndarray]) -> tuple[np.ndarray, int] | None:
    """The keys packed into one unsigned integer per row (first key in the highest bits)
    and the bits they take, or None when their ranges need more than 64 bits."""
    packed = np.zeros(len(ranks[0]), np.uint64)
    bits = 0
    for rank in reversed(ranks):
        if not len(rank):
            return packed, 0
        low = int(rank.min())
        width = (int(rank.max()) - low).bit_length()
        if bits + width > 64:
            return None
        packed |= (rank - low).astype(np.uint64) << np.uint64(bits)
        bits += width
    return packed, bits


_RADIX_BITS = 11


@njit(cache=True, nogil=True)
def radix_argsort(keys: np.ndarray, bits: int) -> np.ndarray:
    """Row indices that sort ``keys`` (uint64, each below ``2**bits``), stable: an LSD
    radix sort of 11 bits a pass, the keys moved with their indices so that each pass reads
    them in order. 66 against 222 ms for ``np.argsort(kind="stable")`` on 2.3 M keys of 44
    bits (a benchmark run's funnel rows), 2 against 30 ms on 393,000. Twin:
    :func:`radix_argsort_twin`."""
    n = len(keys)
    order = np.arange(n)
    spare_order = np.empty(n, np.int64)
    current = keys.copy()
    spare_keys = np.empty(n, np.uint64)
    buckets = 1 << _RADIX_BITS
    mask = np.uint64(buckets - 1)
    shift = 0
    while shift < bits:
        starts = np.zeros(buckets + 1, np.int64)
        by = np.uint64(shift)
        for i in range(n):
            starts[((current[i] >> by) & mask) + 1] += 1
        for b in range(buckets):
            starts[b + 1] += starts[b]
        for i in range(n):
            digit = (current[i] >> by) & mask
            to = starts[digit]
            spare_order[to] = order[i]
            spare_keys[to] = current[i]
            starts[digit] = to + 1
        order, spare_order = spare_order, order
        current, spare_keys = spare_keys, current
        shift += _RADIX_BITS
    return order


def radix_argsort_twin(keys: np.ndarray, bits: int) -> np.ndarray:
    """Plain twin of :func:`radix_argsort`: numpy's stable sort (``bits`` is not needed)."""
    return np.argsort(keys, kind="stable")


def in_key_order(table: pa.Table, keys: list[str]) -> pa.Table:
    """``table`` with its rows in ``keys`` order (as it is when it cannot be ranked or is in
    order already)."""
    order = sorted_order(table, keys)
    if order is None or bool(np.all(order[1:] > order[:-1])):
        return table
    return table.take(pa.array(order))
