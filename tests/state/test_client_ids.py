"""Client ids in the arena: encoding, packing (kernel against twin), and the store keeping
ids right while clients come and go."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ato.columns import client_id_bytes, client_id_texts
from state import kernels
from state.client_ids import decode_ids, encode_ids, gather_ids
from state.shard_store import NumbaShardStore, lazy_empty
from state.twins import pack_ids_py
from tests.state.test_hashing import IDS
from tests.state.test_kernel_parity import CATALOG, DAY, T0, columns, decode

SETTINGS = settings(deadline=None, max_examples=100)


@SETTINGS
@given(ids=st.lists(IDS, max_size=20))
def test_encode_decode_round_trip(ids: list[str]) -> None:
    """ASCII or not, ids come back as they went in, and bytes are their UTF-8."""
    array = np.array(ids, dtype=str) if ids else np.empty(0, "U1")
    data, lengths = encode_ids(array)
    assert data.tobytes() == b"".join(i.encode() for i in ids)
    assert lengths.tolist() == [len(i.encode()) for i in ids]
    offsets = np.cumsum(lengths, dtype=np.int64) - lengths
    assert decode_ids(data, offsets, lengths) == ids
    # the numba gather (numpy S) against its twin decode_ids, and S ids encode the same
    gathered = gather_ids(data, offsets, lengths)
    assert client_id_texts(gathered) == ids
    as_bytes = client_id_bytes(ids)
    assert as_bytes.dtype.kind == "S"
    again, again_lengths = encode_ids(as_bytes)
    assert again.tobytes() == data.tobytes()
    assert again_lengths.tolist() == lengths.tolist()


@SETTINGS
@given(
    parts=st.lists(st.tuples(st.binary(max_size=6), st.booleans()), max_size=12),
    garbage=st.binary(max_size=5),
)
def test_pack_ids_matches_twin(parts: list[tuple[bytes, bool]], garbage: bytes) -> None:
    """Used slots' bytes packed back to back in slot order; unused slots untouched."""
    src, off, length = bytearray(), [], []
    for data, _ in reversed(parts):  # slots' bytes in the arena out of slot order
        src += garbage
        off.insert(0, len(src))
        length.insert(0, len(data))
        src += data
    used = [u for _, u in parts]
    want_bytes, want_off = pack_ids_py(bytes(src), off, length, used)
    got_off = np.array(off, np.int64)
    dst = np.zeros(len(src), np.uint8)
    end = kernels.pack_ids(
        np.frombuffer(bytes(src), np.uint8), got_off, np.array(length, np.int32),
        np.array(used, np.bool_), dst,
    )  # fmt: skip
    assert dst[:end].tobytes() == want_bytes
    assert got_off.tolist() == want_off


def test_ids_survive_client_churn() -> None:
    """Waves of clients forgotten and replaced: the arena is repacked, not grown without end,
    and every record and open instance names its client right."""
    start = CATALOG.type_codes["acct_open_start"]
    store = NumbaShardStore(CATALOG, capacity=1)
    largest = 0
    for wave in range(6):
        t = T0 + wave * 10 * DAY
        ids = [f"wave{wave}-client-{i}-{'é' * (i % 3)}" for i in range(300)]
        store.apply(columns([(c, t, 0, start, *decode(start, -1)) for c in ids]))
        assert {c for c, _ in store.open_instances()} == set(ids)
        records = store.expire(t + 9 * DAY)  # stalls and closes all
        assert set(records.client_texts()) == set(ids)
        assert not len(store.expire(t + 9 * DAY))  # forgets the clients
        assert store.sizes()["clients"] == 0
        largest = max(largest, len(store.id_bytes))
    assert largest < 3 * sum(len(f"wave0-client-{i}-".encode()) + 2 * 2 for i in range(300))


def test_lazy_empty_is_writable_of_any_size() -> None:
    for shape in ((0,), (3, 5), (2, 1 << 20)):
        array = lazy_empty(shape, np.dtype(np.int32))
        array[...] = 7
        assert array.shape == shape and array.dtype == np.int32 and (array == 7).all()
