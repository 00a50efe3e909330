"""Snapshots of earlier formats restore, and the restored store continues like a fresh
replay: format 1 (before the compact layout: hash tables with int64 values, client ids as
Python objects), format 2 (``[field, slot]`` arrays) and format 3 (with the client index,
whose buckets format 4 places by other bits of the hash), all taken after the same scenario
by the code of their time."""

import pickle
from pathlib import Path

import numpy as np
import pytest

from state.shard_store import NumbaShardStore
from tests.state.test_kernel_parity import CATALOG, DAY, T0, columns, decode

DATA = Path(__file__).parent / "data"


def legacy_rows() -> list[tuple[str, int, int, int, int, int, int, int]]:
    """Events of the scenario the legacy snapshots were taken after (with its watermark)."""
    codes = CATALOG.type_codes
    start, opened = codes["acct_open_start"], codes["account_opened"]
    transfer, payee = codes["transfer_start"], codes["payee_added"]
    loan, call = codes["loan_apply_start"], codes["call_started"]
    rows = [
        ("a", T0, 0, start), ("a", T0 + 1, 1, transfer), ("a", T0 + 2, 2, loan),
        ("b", T0, 0, start), ("b", T0 + 5, 0, opened),  # completes: frees an instance slot
        ("é-client", T0 + 3, 1, transfer), ("é-client", T0 + 4, 1, payee),
        ("gone", T0, 3, call),  # nothing opens: forgotten after the client TTL
        *((f"many-{i}", T0 + i, i % 4, start) for i in range(20)),
    ]  # fmt: skip
    return [(c, t, ch, tc, *decode(tc, -1), i % 5 - 1) for i, (c, t, ch, tc) in enumerate(rows)]


LEGACY_WATERMARK = T0 + 3 * DAY  # stalls everything, forgets "gone"


def later_rows() -> list[tuple[str, int, int, int, int, int, int]]:
    """Events after the snapshot: progress on stalled instances, new clients."""
    codes = CATALOG.type_codes
    upload, start = codes["id_card_uploaded"], codes["acct_open_start"]
    t = LEGACY_WATERMARK + 1
    rows = [("a", t, 0, upload), ("many-3", t + 1, 1, upload), ("new", t + 2, 2, start)]
    return [(c, ts, ch, tc, *decode(tc, -1)) for c, ts, ch, tc in rows]


@pytest.mark.parametrize("version", [1, 2, 3])
def test_legacy_snapshot_restores_and_continues(version: int) -> None:
    snap = pickle.loads((DATA / f"snapshot_v{version}.pickle").read_bytes())
    assert snap.get("version", 1) == version
    legacy = NumbaShardStore.restore(CATALOG, snap)
    fresh = NumbaShardStore(CATALOG, capacity=2)
    fresh.apply(columns(legacy_rows()))
    fresh.expire(LEGACY_WATERMARK)
    assert legacy.open_instances() == fresh.open_instances()
    assert legacy.counters() == fresh.counters()
    assert legacy.known_clients() == fresh.known_clients()
    assert legacy.sizes()["instances"] == fresh.sizes()["instances"] > 0
    assert legacy.sizes()["clients"] == fresh.sizes()["clients"]
    for store in (legacy, fresh):
        store.apply(columns(later_rows()))
    later = LEGACY_WATERMARK + 10 * DAY
    got, want = legacy.expire(later), fresh.expire(later)
    assert sorted(got.client_id) == sorted(want.client_id) and len(got) > 0
    np.testing.assert_array_equal(np.sort(got.client_key), np.sort(want.client_key))
    assert legacy.open_instances() == fresh.open_instances()
    assert legacy.counters() == fresh.counters()


def test_unknown_snapshot_format_is_refused() -> None:
    snap = NumbaShardStore(CATALOG).snapshot()
    snap["version"] = 99
    with pytest.raises(ValueError, match="format 99 is unknown"):
        NumbaShardStore.restore(CATALOG, snap)
