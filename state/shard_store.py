"""The columnar shard store: journey state in numpy arrays, updated by numba kernels."""

import mmap
from typing import Any

import numpy as np

from ato.catalog import Catalog
from ato.columns import EventColumns
from state import kernels
from state.base import Effects, Records, ShardStore
from state.client_ids import decode_ids, encode_ids, gather_ids
from state.layout import (
    C_FIRST,
    C_LAST_INST,
    C_LAST_TS,
    C_OPEN,
    COUNTER_NAMES,
    F_CALLS,
    F_SESSIONS,
    H_ABANDONED,
    H_JOURNEY,
    H_LAST_CHANNEL,
    H_LAST_TYPE,
    H_SEGMENT,
    H_STALLED,
    H_STEP,
    I_ATTEMPT,
    I_BACK,
    I_CLIENT,
    I_ERRORS,
    I_EVENTS,
    I_NEXT,
    I_SWITCHES,
    M_C_FREE,
    M_C_HIGH,
    M_I_FREE,
    M_I_HIGH,
    M_NEXT_CLIENT_EXPIRY,
    M_NEXT_DEADLINE,
    MAX_HALF,
    N_CLIENT_INTS,
    N_CLIENT_TIMES,
    N_COUNTERS,
    N_HALVES,
    N_INTS,
    N_META,
    N_OUT,
    N_OUT_F,
    N_TIMES,
    NO_DEADLINE,
    O_CLIENT,
    T_ENTERED,
    T_LAST_EVENT,
    T_PROGRESS,
    T_STALLED_AT,
    T_START,
    client_sweep_time,
)

INITIAL_CAPACITY = 1024
GROWTH = 1.5  # capacity factor when slots run out
MAX_LOAD = 0.7  # client index: most entries per bucket before it doubles
EXPIRE_CHUNK = 4_096  # most records one expire kernel call writes
APPLY_CHUNK = 8_192  # most events one reservation of room is made for (see apply)
SNAPSHOT_VERSION = 4
LAZY_MIN_BYTES = 1 << 20  # smaller arrays come from numpy's allocator

# Arrays indexed by client slot, then by instance slot: snapshots keep their used part.
_CLIENT_FIELDS = ("ckey", "cts", "cf", "ci", "id_off", "id_len")
_INSTANCE_FIELDS = ("it", "dl", "ii", "ih")


def order_events(events: EventColumns) -> np.ndarray:
    """Indices that put events in the order the kernels apply them.

    Event time first; at equal times journey, then step, then channel, so that the result does
    not depend on arrival order (ties beyond that are of the same client, journey, step and
    channel and keep arrival order).
    """
    key = (
        (events.ts << 21)
        | ((events.journey.astype(np.int64) + 1) << 11)
        | ((events.step.astype(np.int64) + 1) << 5)
        | events.channel.astype(np.int64)
    )
    return np.argsort(key, kind="stable")


def table_size(n: int) -> int:
    """Buckets of a client index holding ``n`` clients at most ``MAX_LOAD`` full."""
    return 1 << max(int(np.ceil(n / MAX_LOAD)) - 1, 7).bit_length()


def _resized(array: np.ndarray, capacity: int, keep: int) -> np.ndarray:
    """``array`` with its first axis (slots) resized to ``capacity``, keeping the first
    ``keep`` slots.

    The rest is left uninitialised (and so takes no memory until used).
    """
    out = lazy_empty((capacity, *array.shape[1:]), array.dtype)
    out[:keep] = array[:keep]
    return out


def lazy_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array whose pages take memory only once written.

    Backed by its own anonymous mapping, in small pages: numpy's allocator may back large
    arrays with huge pages, which would make most of the unused tail of every row resident.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes < LAZY_MIN_BYTES:
        return np.empty(shape, dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype).reshape(shape)


class NumbaShardStore(ShardStore):
    """Slots of clients and of journey instances in ``[slot, field]`` arrays.

    Clients are found by hash through an index of slots; a client's instances through a list
    (``C_FIRST``, ``I_NEXT``). Client ids are UTF-8 bytes in an arena (``id_bytes``) at
    ``id_off``/``id_len``. Slots at or above a high-water mark were never used.
    """

    def __init__(self, catalog: Catalog, capacity: int = INITIAL_CAPACITY) -> None:
        self.catalog = catalog
        self.tables = catalog.tables
        if max(*self.tables.abandon_grace.shape, *self.tables.step_timeout.shape) > MAX_HALF:
            msg = "catalog too large: journeys, steps and types must fit in int16"
            raise ValueError(msg)
        self.half_life_ms = float(catalog.decay_half_life_ms)
        self.client_ttl_ms = int(catalog.client_idle_ttl_ms)
        self.client_cap = 0
        self.inst_cap = 0
        self.ckey = np.empty(0, np.uint64)
        self.cts = np.empty((0, N_CLIENT_TIMES), np.int64)
        self.cf = np.empty((0, 2), np.float64)
        self.ci = np.empty((0, N_CLIENT_INTS), np.int32)
        self.c_free = np.empty(0, np.int32)
        self.id_off = np.empty(0, np.int64)
        self.id_len = np.empty(0, np.int32)
        self.id_bytes = np.empty(0, np.uint8)
        self.id_end = 0  # arena bytes in use (ids of freed clients included until repacked)
        self.it = np.empty((0, N_TIMES), np.int64)
        self.dl = np.empty(0, np.int64)
        self.ii = np.empty((0, N_INTS), np.int32)
        self.ih = np.empty((0, N_HALVES), np.int16)
        self.i_free = np.empty(0, np.int32)
        self.meta = np.zeros(N_META, np.int64)
        self.meta[M_NEXT_DEADLINE] = NO_DEADLINE
        self.meta[M_NEXT_CLIENT_EXPIRY] = NO_DEADLINE
        self.counters_ = np.zeros(N_COUNTERS, np.int64)
        self._expire_out = (
            np.empty((N_OUT, EXPIRE_CHUNK), np.int64),
            np.empty((N_OUT_F, EXPIRE_CHUNK), np.float64),
        )
        self._grow_clients(capacity)
        self._grow_instances(capacity)
        self._rebuild_index(0)  # (compiles the rebuild kernel before a flow needs it)

    # ------------------------------------------------------------------ capacity

    def _grow_clients(self, new_cap: int) -> None:
        high = int(self.meta[M_C_HIGH])
        for name in _CLIENT_FIELDS:
            setattr(self, name, _resized(getattr(self, name), new_cap, high))
        self.c_free = _resized(self.c_free, new_cap, int(self.meta[M_C_FREE]))
        self.client_cap = new_cap

    def _grow_instances(self, new_cap: int) -> None:
        high = int(self.meta[M_I_HIGH])
        for name in _INSTANCE_FIELDS:
            setattr(self, name, _resized(getattr(self, name), new_cap, high))
        self.i_free = _resized(self.i_free, new_cap, int(self.meta[M_I_FREE]))
        self.inst_cap = new_cap

    def _rebuild_index(self, n: int) -> None:
        """A client index sized for ``n`` clients, filled with the current ones."""
        high = int(self.meta[M_C_HIGH])
        self.c_ht = np.empty(table_size(n), np.int32)
        kernels.ht_rebuild(self.c_ht, self.ckey, self.ci[:high, C_OPEN] >= 0)

    def _reserve(self, n: int) -> None:
        """Make sure ``n`` more clients and instances fit."""
        clients = self._n_clients()
        if self.client_cap - clients < n:
            self._grow_clients(max(int(GROWTH * self.client_cap), clients + n))
        if clients + n > MAX_LOAD * len(self.c_ht):
            self._rebuild_index(clients + n)  # at least doubles: sizes are powers of two
        instances = self._n_instances()
        if self.inst_cap - instances < n:
            self._grow_instances(max(int(GROWTH * self.inst_cap), instances + n))

    def _n_clients(self) -> int:
        return int(self.meta[M_C_HIGH] - self.meta[M_C_FREE])

    def _n_instances(self) -> int:
        return int(self.meta[M_I_HIGH] - self.meta[M_I_FREE])

    # ------------------------------------------------------------------ client ids

    def _store_ids(self, slots: np.ndarray, ids: np.ndarray) -> None:
        """Keep the ids of the new clients at ``slots``."""
        data, lengths = encode_ids(ids)
        if self.id_end + len(data) > len(self.id_bytes):
            self.id_off[slots] = 0  # not stored yet: nothing of theirs to keep
            self.id_len[slots] = 0
            self._repack_ids(len(data))
        offsets = np.cumsum(lengths, dtype=np.int64) - lengths + self.id_end
        self.id_bytes[self.id_end : self.id_end + len(data)] = data
        self.id_off[slots] = offsets
        self.id_len[slots] = lengths
        self.id_end += len(data)

    def _repack_ids(self, extra: int) -> None:
        """A new arena with the ids of the known clients and room for ``extra`` more bytes."""
        high = int(self.meta[M_C_HIGH])
        used = self.ci[:high, C_OPEN] >= 0
        live = int(self.id_len[:high][used].sum())
        arena = lazy_empty((max(int(GROWTH * (live + extra)), 1024),), np.dtype(np.uint8))
        self.id_end = kernels.pack_ids(self.id_bytes, self.id_off, self.id_len, used, arena)
        self.id_bytes = arena

    def _client_ids(self, slots: np.ndarray) -> list[str]:
        return decode_ids(self.id_bytes, self.id_off[slots], self.id_len[slots])

    def _client_id_bytes(self, slots: np.ndarray) -> np.ndarray:
        """The ids of client ``slots`` as a numpy ``S`` array (UTF-8)."""
        return gather_ids(self.id_bytes, self.id_off[slots], self.id_len[slots])

    # ------------------------------------------------------------------ work

    def apply(self, events: EventColumns) -> tuple[Records, Effects]:
        """Apply events (already ordered with :func:`order_events`), :data:`APPLY_CHUNK` at a
        time: room is made for a new client and a new instance per event of a chunk, so a
        call of millions of events (a resumed run's first flush) does not size the arrays
        and the client index for millions of clients at once."""
        n = len(events)
        if n == 0:
            return Records.empty(), Effects.empty()
        t = self.tables
        e_cslot = np.empty(n, np.int32)
        e_new = np.empty(n, np.bool_)
        effects = Effects(np.empty(n, np.int8), np.empty(n, np.int16), np.empty(n, np.int16))
        room = min(n, APPLY_CHUNK) + 2 * t.step_timeout.shape[0] + 1
        parts_i, parts_f = [], []
        for first in range(0, n, APPLY_CHUNK):
            end = min(first + APPLY_CHUNK, n)
            self._reserve(end - first)
            part = events.take(slice(0, end))  # views: the kernel goes from ``start`` to the end
            start = first
            while start < end:
                out_i = np.empty((N_OUT, room), np.int64)
                out_f = np.empty((N_OUT_F, room), np.float64)
                n_out, start = kernels.apply_events(
                    part.client_key, part.ts, part.channel, part.type_code, part.journey,
                    part.step, part.flags, part.segment, t.step_timeout, t.step_terminal,
                    t.abandon_grace,
                    t.close_after, self.half_life_ms, self.client_ttl_ms,
                    self.c_ht, self.ckey, self.cts, self.cf, self.ci, self.c_free,
                    self.it, self.dl, self.ii, self.ih, self.i_free, self.meta, self.counters_,
                    e_cslot[:end], e_new[:end], effects.effect[:end], effects.journey[:end],
                    effects.step[:end], out_i, out_f, start,
                )  # fmt: skip
                parts_i.append(out_i[:, :n_out])
                parts_f.append(out_f[:, :n_out])
            # before the next chunk's room is made: a repacked id arena keeps known ids only
            new = first + np.flatnonzero(e_new[first:end])
            if len(new):
                self._store_ids(e_cslot[new], events.client_id[new])
        records = self._records(np.concatenate(parts_i, axis=1), np.concatenate(parts_f, axis=1))
        return records, effects

    def expire(self, watermark: int) -> Records:
        """Settle instances with deadline <= ``watermark``; forget clients idle for the TTL
        by the last sweep time (:func:`~state.layout.client_sweep_time`)."""
        sweep = client_sweep_time(watermark)
        if sweep >= self.meta[M_NEXT_CLIENT_EXPIRY]:
            kernels.expire_clients(
                sweep, self.client_ttl_ms, self.c_ht, self.ckey, self.cts, self.ci,
                self.c_free, self.meta,
            )  # fmt: skip
        if watermark < self.meta[M_NEXT_DEADLINE]:
            return Records.empty()
        parts_i, parts_f = [], []
        start, smallest = 0, NO_DEADLINE
        # Deadlines set while scanning (close deadlines) lower the bound again below.
        self.meta[M_NEXT_DEADLINE] = NO_DEADLINE
        out_i, out_f = self._expire_out
        while start < self.meta[M_I_HIGH]:
            n_out, start, part_smallest = kernels.expire_instances(
                watermark, start, self.tables.close_after, self.half_life_ms,
                self.client_ttl_ms, self.cts, self.cf, self.ci, self.it, self.dl, self.ii,
                self.ih, self.i_free, self.meta, self.counters_, out_i, out_f,
            )  # fmt: skip
            smallest = min(smallest, part_smallest)
            parts_i.append(out_i[:, :n_out].copy())
            parts_f.append(out_f[:, :n_out].copy())
        self.meta[M_NEXT_DEADLINE] = min(int(self.meta[M_NEXT_DEADLINE]), smallest)
        return self._records(np.concatenate(parts_i, axis=1), np.concatenate(parts_f, axis=1))

    def _records(self, ints: np.ndarray, floats: np.ndarray) -> Records:
        slots = ints[O_CLIENT]
        return Records(self.ckey[slots], self._client_id_bytes(slots), ints, floats)

    # ------------------------------------------------------------------ inspection

    def counters(self) -> dict[str, int]:
        """Life-cycle counts since the store was created."""
        return dict(zip(COUNTER_NAMES, self.counters_.tolist(), strict=True))

    def open_instances(self) -> dict[tuple[str, int], dict[str, Any]]:
        """Every open instance with its fields, keyed by (client id, journey code)."""
        out: dict[tuple[str, int], dict[str, Any]] = {}
        high = int(self.meta[M_I_HIGH])
        for slot in np.flatnonzero(self.ii[:high, I_CLIENT] >= 0).tolist():
            client = int(self.ii[slot, I_CLIENT])
            fields = {
                "client_key": int(self.ckey[client]),
                "journey": int(self.ih[slot, H_JOURNEY]),
                "step": int(self.ih[slot, H_STEP]),
                "start": int(self.it[slot, T_START]),
                "progress": int(self.it[slot, T_PROGRESS]),
                "entered": int(self.it[slot, T_ENTERED]),
                "deadline": int(self.dl[slot]),
                "last_type": int(self.ih[slot, H_LAST_TYPE]),
                "last_channel": int(self.ih[slot, H_LAST_CHANNEL]),
                "events": int(self.ii[slot, I_EVENTS]),
                "errors": int(self.ii[slot, I_ERRORS]),
                "back": int(self.ii[slot, I_BACK]),
                "switches": int(self.ii[slot, I_SWITCHES]),
                "attempt": int(self.ii[slot, I_ATTEMPT]),
                "stalled": int(self.ih[slot, H_STALLED]),
                "abandoned": int(self.ih[slot, H_ABANDONED]),
                "segment": int(self.ih[slot, H_SEGMENT]),
                "stalled_at": int(self.it[slot, T_STALLED_AT]),
                "last_event": int(self.it[slot, T_LAST_EVENT]),
                "calls": float(self.cf[client, F_CALLS]),
                "sessions": float(self.cf[client, F_SESSIONS]),
                "client_last_ts": int(self.cts[client, C_LAST_TS]),
                "last_instance": bool(self.ci[client, C_LAST_INST] == slot),
            }
            (client_id,) = self._client_ids(np.array([client]))
            out[(client_id, int(self.ih[slot, H_JOURNEY]))] = fields
        return out

    def find_instances(self, client_keys: np.ndarray, journeys: np.ndarray) -> np.ndarray:
        """Instance slot of each (client hash, journey code) pair, -1 where none is open."""
        out = np.empty(len(client_keys), np.int64)
        kernels.find_instances(
            self.c_ht, self.ckey, self.ci, self.ii, self.ih,
            np.ascontiguousarray(client_keys, np.uint64), np.ascontiguousarray(journeys, np.int64),
            out,
        )  # fmt: skip
        return out

    def open_fields(
        self, client_keys: np.ndarray, journeys: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Rows of the (client hash, journey code) pairs with an open instance, ascending,
        and those instances' :meth:`instance_fields`."""
        slots = self.find_instances(client_keys, journeys)
        rows = np.flatnonzero(slots >= 0)
        return rows, self.instance_fields(slots[rows])

    def instance_fields(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """Live-state fields of open instance ``slots``: step, since (entered), last event
        type, channel and time, stalled, attempt."""
        return {
            "journey": self.ih[slots, H_JOURNEY],
            "step": self.ih[slots, H_STEP],
            "since_ms": self.it[slots, T_ENTERED],
            "last_type": self.ih[slots, H_LAST_TYPE],
            "last_channel": self.ih[slots, H_LAST_CHANNEL],
            "last_ms": self.it[slots, T_LAST_EVENT],
            "stalled": self.ih[slots, H_STALLED],
            "attempt": self.ii[slots, I_ATTEMPT],
        }

    def known_clients(self) -> set[int]:
        """Hashes of every client the store holds."""
        high = int(self.meta[M_C_HIGH])
        return set(self.ckey[:high][self.ci[:high, C_OPEN] >= 0].tolist())

    def sizes(self) -> dict[str, int]:
        """Open instances, known clients, and bytes held by the arrays."""
        return {
            "instances": self._n_instances(),
            "clients": self._n_clients(),
            "bytes": sum(array.nbytes for array in self._arrays().values()),
        }

    def _arrays(self) -> dict[str, np.ndarray]:
        names = (*_CLIENT_FIELDS, *_INSTANCE_FIELDS, "c_free", "i_free", "c_ht", "id_bytes")
        return {name: getattr(self, name) for name in (*names, "meta")}

    # ------------------------------------------------------------------ recovery

    def snapshot(self) -> dict[str, Any]:
        """Copies of the used part of every array, and the capacities to restore."""
        c_high, i_high = int(self.meta[M_C_HIGH]), int(self.meta[M_I_HIGH])
        snap: dict[str, Any] = {
            name: getattr(self, name)[:c_high].copy() for name in _CLIENT_FIELDS
        }
        snap.update({name: getattr(self, name)[:i_high].copy() for name in _INSTANCE_FIELDS})
        snap["c_free"] = self.c_free[: self.meta[M_C_FREE]].copy()
        snap["i_free"] = self.i_free[: self.meta[M_I_FREE]].copy()
        snap["index_size"] = len(self.c_ht)  # the index is rebuilt from the keys on restore
        snap["id_bytes"] = self.id_bytes[: self.id_end].copy()
        snap["id_capacity"] = len(self.id_bytes)
        snap["meta"] = self.meta.copy()
        snap["counters"] = self.counters_.copy()
        snap["capacity"] = (self.client_cap, self.inst_cap)
        snap["version"] = SNAPSHOT_VERSION
        return snap

    @classmethod
    def restore(cls, catalog: Catalog, snap: dict[str, Any]) -> "NumbaShardStore":
        """Rebuild a store from :meth:`snapshot` output (or that of an earlier format)."""
        snap = upgrade_snapshot(snap)
        store = cls(catalog, capacity=1)
        store.meta = snap["meta"].copy()
        store.counters_ = snap["counters"].copy()
        client_cap, inst_cap = snap["capacity"]
        for name in _CLIENT_FIELDS:
            setattr(store, name, _resized(snap[name], client_cap, len(snap[name])))
        for name in _INSTANCE_FIELDS:
            setattr(store, name, _resized(snap[name], inst_cap, len(snap[name])))
        store.c_free = _resized(snap["c_free"], client_cap, len(snap["c_free"]))
        store.i_free = _resized(snap["i_free"], inst_cap, len(snap["i_free"]))
        store.client_cap, store.inst_cap = client_cap, inst_cap
        store.c_ht = np.empty(snap["index_size"], np.int32)
        high = int(store.meta[M_C_HIGH])
        kernels.ht_rebuild(store.c_ht, store.ckey, store.ci[:high, C_OPEN] >= 0)
        store.id_end = len(snap["id_bytes"])
        store.id_bytes = _resized(snap["id_bytes"], snap["id_capacity"], store.id_end)
        return store


def upgrade_snapshot(snap: dict[str, Any]) -> dict[str, Any]:
    """``snap`` in the current format (4), from format 1, 2, 3 or 4."""
    version = snap.get("version", 1)
    if version == 1:
        snap, version = _v1_to_v2(snap), 2
    if version == 2:
        snap, version = _v2_to_v3(snap), 3
    if version == 3:
        snap, version = _v3_to_v4(snap), 4
    if version != SNAPSHOT_VERSION:
        msg = f"shard snapshot format {version} is unknown (this version reads 1 to 4)"
        raise ValueError(msg)
    return snap


def _v3_to_v4(old: dict[str, Any]) -> dict[str, Any]:
    """Format 3 (with the client index, whose buckets format 4 places differently) as format
    4, which keeps only the index's size and rebuilds it on restore."""
    new = {name: value for name, value in old.items() if name != "c_ht"}
    new["index_size"] = len(old["c_ht"])
    new["version"] = 4
    return new


_V2_DEADLINE = 3  # row of the deadlines in format 2's instance times
_V2_TIMES = 6


def _v2_to_v3(old: dict[str, Any]) -> dict[str, Any]:
    """Format 2 (``[field, slot]`` arrays, deadlines among the instance times) as format 3."""
    new = dict(old)
    for name in ("cts", "cf", "ci", "ii", "ih"):
        new[name] = np.ascontiguousarray(old[name].T)
    new["dl"] = old["it"][_V2_DEADLINE].copy()
    new["it"] = np.ascontiguousarray(np.delete(old["it"], _V2_DEADLINE, axis=0).T)
    new["version"] = 3
    return new


def _v1_to_v2(old: dict[str, Any]) -> dict[str, Any]:
    """A snapshot of format 1 (hash tables of both clients and instances, every
    slot initialised, client ids as objects, a deadline bound per client) as format 2."""
    meta = np.zeros(N_META, np.int64)
    meta[: len(old["meta"])] = old["meta"]
    client_cap, inst_cap = len(old["ckey"]), old["it"].shape[1]
    meta[M_C_HIGH], meta[M_I_HIGH] = client_cap, inst_cap  # free slots are all on the stacks
    it = old["it"]
    if it.shape[0] < _V2_TIMES:  # a snapshot from before T_LAST_EVENT: use progress
        it = np.vstack([it, it[T_PROGRESS : T_PROGRESS + 1]])
    ints, halves = split_legacy_ints(old["ii"])
    ci = np.vstack([old["ci"], np.full((1, client_cap), -1, np.int32)])
    link_instances(ci, ints, halves)
    used = old["ci"][C_OPEN] >= 0
    slots, ids = old["client_ids"]
    data, lengths = encode_ids(np.array(list(ids), dtype=str) if len(ids) else np.empty(0, "U1"))
    id_off = np.zeros(client_cap, np.int64)
    id_len = np.zeros(client_cap, np.int32)
    id_off[slots] = np.cumsum(lengths, dtype=np.int64) - lengths
    id_len[slots] = lengths
    c_ht = np.empty(table_size(int(used.sum())), np.int32)
    kernels.ht_rebuild(c_ht, old["ckey"], used)
    return {
        "ckey": old["ckey"], "cts": old["cts"][:N_CLIENT_TIMES], "cf": old["cf"], "ci": ci,
        "id_off": id_off, "id_len": id_len, "it": it, "ii": ints, "ih": halves,
        "c_free": old["c_free"][: meta[M_C_FREE]], "i_free": old["i_free"][: meta[M_I_FREE]],
        "c_ht": c_ht, "id_bytes": data, "id_capacity": max(len(data), 1024), "meta": meta,
        "counters": old["counters"], "capacity": (client_cap, inst_cap),
        "version": 2,
    }  # fmt: skip


# Rows of the earlier int32 [13, cap] instance array, in the current arrays.
_LEGACY_INTS = {I_CLIENT: 0, I_EVENTS: 5, I_ERRORS: 6, I_BACK: 7, I_SWITCHES: 8, I_ATTEMPT: 9}
_LEGACY_HALVES = {
    H_JOURNEY: 1, H_STEP: 2, H_LAST_TYPE: 3, H_LAST_CHANNEL: 4, H_STALLED: 10, H_ABANDONED: 11,
    H_SEGMENT: 12,
}  # fmt: skip


def split_legacy_ints(old: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Format 1's instance integers as format 2's int32 and int16 arrays (``I_NEXT`` unset)."""
    ints = np.full((N_INTS, old.shape[1]), -1, np.int32)
    halves = np.empty((N_HALVES, old.shape[1]), np.int16)
    for row, legacy in _LEGACY_INTS.items():
        ints[row] = old[legacy]
    for row, legacy in _LEGACY_HALVES.items():
        halves[row] = old[legacy]
    return ints, halves


def link_instances(ci: np.ndarray, ii: np.ndarray, ih: np.ndarray) -> None:
    """Set every client's list of open instances (``C_FIRST``, ``I_NEXT``) in journey order,
    in format 2's ``[field, slot]`` arrays."""
    ii[I_NEXT] = -1
    ci[C_FIRST] = -1
    slots = np.flatnonzero(ii[I_CLIENT] >= 0)
    slots = slots[np.lexsort((ih[H_JOURNEY, slots], ii[I_CLIENT, slots]))]
    if not len(slots):
        return
    clients = ii[I_CLIENT, slots]
    same = clients[1:] == clients[:-1]  # slots[k + 1] follows slots[k] in one list
    ii[I_NEXT, slots[:-1][same]] = slots[1:][same]
    first = np.append(True, ~same)
    ci[C_FIRST, clients[first]] = slots[first]
