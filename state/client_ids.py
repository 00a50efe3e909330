"""Client ids in a shard store: UTF-8 bytes in one arena, addressed by offset and length."""

import numpy as np
from numba import njit


def encode_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of a numpy ``S`` (UTF-8 already) or ``U`` array of ids, back to back,
    and each id's length."""
    n = len(ids)
    if n == 0 or ids.dtype.itemsize == 0:
        return np.empty(0, np.uint8), np.zeros(n, np.int32)
    units: np.ndarray  # one row per id: its bytes (S) or code points (U)
    if ids.dtype.kind == "S":  # UTF-8 bytes already
        units = np.ascontiguousarray(ids).view(np.uint8).reshape(n, ids.dtype.itemsize)
    else:
        units = np.ascontiguousarray(ids).view(np.uint32).reshape(n, ids.dtype.itemsize // 4)
    if ids.dtype.kind == "S" or units.max() < 0x80:  # bytes, or ASCII code points
        lengths = np.strings.str_len(ids).astype(np.int32)
        inside = np.arange(units.shape[1]) < lengths[:, None]
        return units[inside].astype(np.uint8), lengths
    encoded = [s.encode() for s in ids.tolist()]
    lengths = np.array([len(b) for b in encoded], np.int32)
    return np.frombuffer(b"".join(encoded), np.uint8).copy(), lengths


def decode_ids(arena: np.ndarray, off: np.ndarray, length: np.ndarray) -> list[str]:
    """The ids stored at ``off``/``length`` in ``arena``."""
    view = memoryview(arena.data)
    return [
        str(view[o : o + n], "utf-8") for o, n in zip(off.tolist(), length.tolist(), strict=True)
    ]


def gather_ids(arena: np.ndarray, off: np.ndarray, length: np.ndarray) -> np.ndarray:
    """The ids stored at ``off``/``length`` in ``arena`` as a numpy ``S`` array."""
    n = len(off)
    width = max(int(length.max()) if n else 1, 1)
    out = np.zeros((n, width), np.uint8)
    _gather(arena, off.astype(np.int64, copy=False), length.astype(np.int64, copy=False), out)
    return out.view(f"S{width}").ravel()


@njit(cache=True, nogil=True)
def _gather(arena: np.ndarray, off: np.ndarray, length: np.ndarray, out: np.ndarray) -> None:
    for k in range(len(off)):
        base = off[k]
        for m in range(length[k]):
            out[k, m] = arena[base + m]
