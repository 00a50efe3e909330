"""The kernels really run compiled: these tests fail under NUMBA_DISABLE_JIT=1."""

import numpy as np
from numba.core import config
from numba.core.registry import CPUDispatcher

from ato.catalog import load_catalog
from ato.columns import EventColumns
from ato.config import EngineSettings
from operators import funnel, live_changes, render, scan, uuid5
from operators.batches import RawBatch
from operators.decode import Decoder
from operators.interventions import InterventionBuilder
from sinks import insert_order
from sources import envelopes
from state import client_ids, hashing, kernels
from state.shard_store import NumbaShardStore

# Kernels called from Python; each gets a compiled signature once used.
ENTRY_POINTS = {
    kernels: (
        "ht_find",
        "ht_insert",
        "ht_delete",
        "ht_rebuild",
        "find_instances",
        "pack_ids",
        "apply_events",
        "expire_instances",
        "expire_clients",
    ),
    hashing: ("mix64", "hash_codepoints", "shard_of", "lane_of", "shard_order"),
    client_ids: ("_gather",),
    uuid5: ("uuid5_rows",),
    scan: ("_scan_events",),
    render: ("render_rows", "json_string_spans"),
    funnel: ("sum_by_key", "event_rows_kernel"),
    live_changes: ("unique_pairs",),
    envelopes: ("element_bounds",),
    insert_order: ("radix_argsort", "_hex_halves"),
}
# Called only from other kernels; numba links them into their callers, and when the callers
# come from the on-disk cache the helpers themselves are never compiled, so only their type
# is checked.
HELPERS = {
    kernels: (
        "_home",
        "_take_slot",
        "find_instance",
        "_link",
        "_unlink",
        "_emit_record",
        "_emit_stall",
        "_emit_outcome",
        "_close",
        "_settle",
        "_attribute",
        "_prefetch_ahead",
    ),
    scan: (
        "_ws",
        "_string",
        "_integer",
        "_literal",
        "_scalar",
        "_is_segment",
        "_container",
        "_scan_one",
        "_bucket",
        "_code_of",
    ),
    uuid5: ("_rotl", "_round", "_compress", "_sha1", "_put_text", "_put_int"),
    render: ("_write_uint", "_magnitude", "_write_int", "_write_fixed4"),
    hashing: ("table_bits", "fibonacci_slot"),
}


def exercise_entry_points() -> None:
    """Call every entry point at least once, directly or through the shard store."""
    catalog = load_catalog()
    step_type = catalog.type_codes["acct_open_start"]
    ids = np.array(["c1", "c2"])
    events = EventColumns(
        hashing.hash_client_ids(ids),
        ids,
        np.array([0, 0], np.int64),
        np.zeros(2, np.int8),
        np.array([step_type, 0], np.int32),
        np.array([0, -1], np.int16),
        np.array([0, -1], np.int16),
        np.zeros(2, np.int8),
        np.array([b"", b""], object),
        np.arange(2, dtype=np.int64),
        np.array([5, -1], np.int8),
    )
    store = NumbaShardStore(catalog, capacity=1)  # the second client forces a regrowth
    _, effects = store.apply(events)
    assert len(funnel.event_rows(events.ts, events.channel, events.segment, effects)) == 2
    store.find_instances(events.client_key, np.zeros(2, np.int64))
    records = store.expire(100 * 86_400_000)  # stalls, closes (lapsed), forgets "c2"
    assert (len(records.stalls()), len(records.outcomes())) == (1, 1)
    built = InterventionBuilder(catalog).build(records.stalls(), 0)  # renders the document
    assert len(built) == 1
    assert len(store.expire(200 * 86_400_000)) == 0  # forgets "c1"
    store._repack_ids(0)  # packs the id arena
    table, slot_keys = np.full(8, -1, np.int32), np.array([3, 5], np.uint64)
    kernels.ht_insert(table, slot_keys, 1)
    assert kernels.ht_find(table, slot_keys, np.uint64(5)) == 1
    kernels.ht_delete(table, slot_keys, 1)
    kernels.ht_rebuild(table, slot_keys, np.ones(2, np.bool_))
    hashing.mix64(np.uint64(1))
    hashing.shard_of(np.array([1, 2], np.uint64), 4)
    hashing.lane_of(np.array([1, 2], np.uint64), 2)
    hashing.shard_order(np.array([1, 2], np.uint64), 4)
    spans = np.empty((2, 1), np.int64)  # client ids that need escaping take this path
    render.json_string_spans(np.frombuffer(b'["a\\"b"]', np.uint8), spans[0], spans[1])
    decoded = Decoder(catalog, EngineSettings(decoder="scan"))(
        RawBatch("p", [b'{"event_id":"e","client_id":"c","ts":1,"channel":"app","type":"x"}'])
    )
    assert len(decoded.dead) == 1  # ts 1 is absurd, but the message was scanned
    keys, sums = funnel.sum_by_key(np.array([4, 4], np.int64), np.ones((2, 1), np.int64))
    assert (keys.tolist(), sums.tolist()) == ([4], [[2]])
    pairs = live_changes.unique_pairs(np.array([9, 9], np.uint64), np.array([1, 1], np.int64))
    assert pairs.tolist() == [0]
    assert envelopes.split_envelope(b'[{"a":1}, 2]') == [b'{"a":1}', b"2"]
    assert insert_order.radix_argsort(np.array([3, 1], np.uint64), 2).tolist() == [1, 0]
    uuid_text = np.frombuffer(b"00000000-0000-0000-0000-00000000000a", np.uint8).reshape(1, 36)
    hi, lo = np.empty(1, np.uint64), np.empty(1, np.uint64)
    assert insert_order.parse_uuids(uuid_text, hi, lo) and (hi[0], lo[0]) == (0, 10)


def test_jit_is_enabled() -> None:
    disabled = config.DISABLE_JIT  # type: ignore[attr-defined]  # set at import from the env
    assert not disabled, "NUMBA_DISABLE_JIT is set: kernels run as Python"


def test_every_kernel_is_a_compiled_dispatcher() -> None:
    exercise_entry_points()
    for module, names in ENTRY_POINTS.items():
        for name in names:
            kernel = getattr(module, name)
            assert isinstance(kernel, CPUDispatcher), f"{module.__name__}.{name} is not njit"
            assert len(kernel.signatures) > 0, f"{module.__name__}.{name} never compiled"
    for module, names in HELPERS.items():
        for name in names:
            helper = getattr(module, name)
            assert isinstance(helper, CPUDispatcher), f"{module.__name__}.{name} is not njit"
