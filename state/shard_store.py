"""The columnar shard store: journey state in numpy arrays, updated by numba kernels."""

from typing import Any

import numpy as np

from ato.catalog import Catalog
from ato.columns import EventColumns
from state import kernels
from state.base import Effects, Records, ShardStore
from state.layout import (
    C_LAST_INST,
    C_LAST_TS,
    C_OPEN,
    COUNTER_NAMES,
    F_CALLS,
    F_SESSIONS,
    I_ABANDONED,
    I_ATTEMPT,
    I_BACK,
    I_CLIENT,
    I_ERRORS,
    I_EVENTS,
    I_JOURNEY,
    I_LAST_CHANNEL,
    I_LAST_TYPE,
    I_SEGMENT,
    I_STALLED,
    I_STEP,
    I_SWITCHES,
    M_C_FREE,
    M_I_FREE,
    M_NEXT_CLIENT_EXPIRY,
    M_NEXT_DEADLINE,
    N_COUNTERS,
    N_INTS,
    N_META,
    N_OUT,
    N_OUT_F,
    N_TIMES,
    NO_DEADLINE,
    O_CLIENT,
    T_DEADLINE,
    T_ENTERED,
    T_LAST_EVENT,
    T_PROGRESS,
    T_STALLED_AT,
    T_START,
)

INITIAL_CAPACITY = 1024
EXPIRE_CHUNK = 4_096  # most records one expire kernel call writes

_ARRAY_FIELDS = (
    "ckey", "cts", "cf", "ci", "c_free", "c_hk", "c_hv",
    "it", "ii", "i_free", "i_hk", "i_hv", "meta", "counters",
)  # fmt: skip


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


def _table_size(capacity: int) -> int:
    return 1 << int(2 * capacity - 1).bit_length()


class NumbaShardStore(ShardStore):
    """Slots of clients and of journey instances in ``[field, slot]`` arrays, indexed by hash."""

    def __init__(self, catalog: Catalog, capacity: int = INITIAL_CAPACITY) -> None:
        self.catalog = catalog
        self.tables = catalog.tables
        self.half_life_ms = float(catalog.decay_half_life_ms)
        self.client_ttl_ms = int(catalog.client_idle_ttl_ms)
        self.client_cap = 0
        self.inst_cap = 0
        self.ckey = np.empty(0, np.uint64)
        self.cts = np.empty((2, 0), np.int64)
        self.cf = np.empty((2, 0), np.float64)
        self.ci = np.empty((2, 0), np.int32)
        self.c_free = np.empty(0, np.int32)
        self.client_ids = np.empty(0, object)
        self.it = np.empty((N_TIMES, 0), np.int64)
        self.ii = np.empty((N_INTS, 0), np.int32)
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

    # ------------------------------------------------------------------ capacity

    def _grow_clients(self, new_cap: int) -> None:
        old = self.client_cap
        grow = new_cap - old
        self.ckey = np.concatenate([self.ckey, np.zeros(grow, np.uint64)])
        self.cts = np.concatenate([self.cts, np.zeros((2, grow), np.int64)], axis=1)
        self.cf = np.concatenate([self.cf, np.zeros((2, grow), np.float64)], axis=1)
        fresh = np.full((2, grow), -1, np.int32)  # C_OPEN = -1: free slot
        self.ci = np.concatenate([self.ci, fresh], axis=1)
        self.client_ids = np.concatenate([self.client_ids, np.full(grow, None, object)])
        n_free = int(self.meta[M_C_FREE])
        free = np.empty(new_cap, np.int32)
        free[:grow] = np.arange(new_cap - 1, old - 1, -1, dtype=np.int32)
        free[grow : grow + n_free] = self.c_free[:n_free]
        self.c_free = free
        self.meta[M_C_FREE] = grow + n_free
        self.client_cap = new_cap
        self.c_hk = np.zeros(_table_size(new_cap), np.uint64)
        self.c_hv = np.full(_table_size(new_cap), -1, np.int64)
        kernels.ht_rebuild(self.c_hk, self.c_hv, self.ckey, self.ci[C_OPEN] >= 0)

    def _grow_instances(self, new_cap: int) -> None:
        old = self.inst_cap
        grow = new_cap - old
        times = np.zeros((N_TIMES, grow), np.int64)
        times[T_DEADLINE] = NO_DEADLINE
        self.it = np.concatenate([self.it, times], axis=1)
        ints = np.zeros((N_INTS, grow), np.int32)
        ints[I_CLIENT] = -1
        self.ii = np.concatenate([self.ii, ints], axis=1)
        n_free = int(self.meta[M_I_FREE])
        free = np.empty(new_cap, np.int32)
        free[:grow] = np.arange(new_cap - 1, old - 1, -1, dtype=np.int32)
        free[grow : grow + n_free] = self.i_free[:n_free]
        self.i_free = free
        self.meta[M_I_FREE] = grow + n_free
        self.inst_cap = new_cap
        self.i_hk = np.zeros(_table_size(new_cap), np.uint64)
        self.i_hv = np.full(_table_size(new_cap), -1, np.int64)
        used = self.ii[I_CLIENT] >= 0
        keys = np.zeros(new_cap, np.uint64)
        clients = self.ii[I_CLIENT].astype(np.uint64) + np.uint64(1)
        keys[used] = (clients[used] << np.uint64(10)) | self.ii[I_JOURNEY][used].astype(np.uint64)
        kernels.ht_rebuild(self.i_hk, self.i_hv, keys, used)

    def _reserve(self, n: int) -> None:
        """Make sure ``n`` more clients and instances fit."""
        if self.meta[M_C_FREE] < n:
            used = self.client_cap - int(self.meta[M_C_FREE])
            self._grow_clients(max(2 * self.client_cap, _pow2_at_least(used + n)))
        if self.meta[M_I_FREE] < n:
            used = self.inst_cap - int(self.meta[M_I_FREE])
            self._grow_instances(max(2 * self.inst_cap, _pow2_at_least(used + n)))

    # ------------------------------------------------------------------ work

    def apply(self, events: EventColumns) -> tuple[Records, Effects]:
        """Apply events (already ordered with :func:`order_events`)."""
        n = len(events)
        if n == 0:
            return Records.empty(), Effects.empty()
        self._reserve(n)
        t = self.tables
        e_cslot = np.empty(n, np.int32)
        e_new = np.empty(n, np.bool_)
        effects = Effects(np.empty(n, np.int8), np.empty(n, np.int16), np.empty(n, np.int16))
        room = n + 2 * t.step_timeout.shape[0] + 1
        parts_i, parts_f = [], []
        start = 0
        while start < n:
            out_i = np.empty((N_OUT, room), np.int64)
            out_f = np.empty((N_OUT_F, room), np.float64)
            n_out, start = kernels.apply_events(
                events.client_key, events.ts, events.channel, events.type_code, events.journey,
                events.step, events.flags, events.segment, t.step_timeout, t.step_terminal,
                t.abandon_grace,
                t.close_after, self.half_life_ms, self.client_ttl_ms,
                self.c_hk, self.c_hv, self.ckey, self.cts, self.cf, self.ci, self.c_free,
                self.i_hk, self.i_hv, self.it, self.ii, self.i_free, self.meta, self.counters_,
                e_cslot, e_new, effects.effect, effects.journey, effects.step, out_i, out_f,
                start,
            )  # fmt: skip
            parts_i.append(out_i[:, :n_out])
            parts_f.append(out_f[:, :n_out])
        new = np.flatnonzero(e_new)
        if len(new):
            self.client_ids[e_cslot[new]] = events.client_id[new]
        records = self._records(np.concatenate(parts_i, axis=1), np.concatenate(parts_f, axis=1))
        return records, effects

    def expire(self, watermark: int) -> Records:
        """Settle instances with deadline <= ``watermark``; forget long-idle clients."""
        if watermark >= self.meta[M_NEXT_CLIENT_EXPIRY]:
            kernels.expire_clients(
                watermark, self.client_ttl_ms, self.c_hk, self.c_hv, self.ckey, self.cts,
                self.ci, self.c_free, self.meta,
            )  # fmt: skip
        if watermark < self.meta[M_NEXT_DEADLINE]:
            return Records.empty()
        parts_i, parts_f = [], []
        start, smallest = 0, NO_DEADLINE
        # Deadlines set while scanning (close deadlines) lower the bound again below.
        self.meta[M_NEXT_DEADLINE] = NO_DEADLINE
        out_i, out_f = self._expire_out
        while start < self.inst_cap:
            n_out, start, part_smallest = kernels.expire_instances(
                watermark, start, self.tables.close_after, self.half_life_ms,
                self.client_ttl_ms, self.cts, self.cf, self.ci, self.i_hk, self.i_hv,
                self.it, self.ii, self.i_free, self.meta, self.counters_, out_i, out_f,
            )  # fmt: skip
            smallest = min(smallest, part_smallest)
            parts_i.append(out_i[:, :n_out].copy())
            parts_f.append(out_f[:, :n_out].copy())
        self.meta[M_NEXT_DEADLINE] = min(int(self.meta[M_NEXT_DEADLINE]), smallest)
        return self._records(np.concatenate(parts_i, axis=1), np.concatenate(parts_f, axis=1))

    def _records(self, ints: np.ndarray, floats: np.ndarray) -> Records:
        slots = ints[O_CLIENT]
        return Records(self.ckey[slots], self.client_ids[slots].tolist(), ints, floats)

    # ------------------------------------------------------------------ inspection

    def counters(self) -> dict[str, int]:
        """Life-cycle counts since the store was created."""
        return dict(zip(COUNTER_NAMES, self.counters_.tolist(), strict=True))

    def open_instances(self) -> dict[tuple[str, int], dict[str, Any]]:
        """Every open instance with its fields, keyed by (client id, journey code)."""
        out: dict[tuple[str, int], dict[str, Any]] = {}
        for slot in np.flatnonzero(self.ii[I_CLIENT] >= 0):
            client = int(self.ii[I_CLIENT, slot])
            fields = {
                "client_key": int(self.ckey[client]),
                "journey": int(self.ii[I_JOURNEY, slot]),
                "step": int(self.ii[I_STEP, slot]),
                "start": int(self.it[T_START, slot]),
                "progress": int(self.it[T_PROGRESS, slot]),
                "entered": int(self.it[T_ENTERED, slot]),
                "deadline": int(self.it[T_DEADLINE, slot]),
                "last_type": int(self.ii[I_LAST_TYPE, slot]),
                "last_channel": int(self.ii[I_LAST_CHANNEL, slot]),
                "events": int(self.ii[I_EVENTS, slot]),
                "errors": int(self.ii[I_ERRORS, slot]),
                "back": int(self.ii[I_BACK, slot]),
                "switches": int(self.ii[I_SWITCHES, slot]),
                "attempt": int(self.ii[I_ATTEMPT, slot]),
                "stalled": int(self.ii[I_STALLED, slot]),
                "abandoned": int(self.ii[I_ABANDONED, slot]),
                "segment": int(self.ii[I_SEGMENT, slot]),
                "stalled_at": int(self.it[T_STALLED_AT, slot]),
                "last_event": int(self.it[T_LAST_EVENT, slot]),
                "calls": float(self.cf[F_CALLS, client]),
                "sessions": float(self.cf[F_SESSIONS, client]),
                "client_last_ts": int(self.cts[C_LAST_TS, client]),
                "last_instance": bool(self.ci[C_LAST_INST, client] == slot),
            }
            out[(str(self.client_ids[client]), int(self.ii[I_JOURNEY, slot]))] = fields
        return out

    def find_instances(self, client_keys: np.ndarray, journeys: np.ndarray) -> np.ndarray:
        """Instance slot of each (client hash, journey code) pair, -1 where none is open."""
        out = np.empty(len(client_keys), np.int64)
        kernels.find_instances(
            self.c_hk, self.c_hv, self.i_hk, self.i_hv,
            np.ascontiguousarray(client_keys, np.uint64), np.ascontiguousarray(journeys, np.int64),
            out,
        )  # fmt: skip
        return out

    def instance_fields(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """Live-state fields of open instance ``slots``: step, since (entered), last event
        type, channel and time, stalled, attempt."""
        return {
            "journey": self.ii[I_JOURNEY, slots],
            "step": self.ii[I_STEP, slots],
            "since_ms": self.it[T_ENTERED, slots],
            "last_type": self.ii[I_LAST_TYPE, slots],
            "last_channel": self.ii[I_LAST_CHANNEL, slots],
            "last_ms": self.it[T_LAST_EVENT, slots],
            "stalled": self.ii[I_STALLED, slots],
            "attempt": self.ii[I_ATTEMPT, slots],
        }

    def known_clients(self) -> set[int]:
        """Hashes of every client the store holds."""
        return set(self.ckey[self.ci[C_OPEN] >= 0].tolist())

    def sizes(self) -> dict[str, int]:
        """Open instances, known clients, and bytes held by the arrays."""
        nbytes = sum(getattr(self, name).nbytes for name in _ARRAY_FIELDS if name != "counters")
        return {
            "instances": self.inst_cap - int(self.meta[M_I_FREE]),
            "clients": self.client_cap - int(self.meta[M_C_FREE]),
            "bytes": int(nbytes + self.client_ids.nbytes),
        }

    # ------------------------------------------------------------------ recovery

    def snapshot(self) -> dict[str, Any]:
        """Copies of every array; the client-id column only where a slot is in use."""
        snap: dict[str, Any] = {
            name: getattr(self, name).copy() for name in _ARRAY_FIELDS if name != "counters"
        }
        snap["counters"] = self.counters_.copy()
        used = self.ci[C_OPEN] >= 0
        snap["client_ids"] = (np.flatnonzero(used), self.client_ids[used].copy())
        return snap

    @classmethod
    def restore(cls, catalog: Catalog, snap: dict[str, Any]) -> "NumbaShardStore":
        """Rebuild a store from :meth:`snapshot` output."""
        store = cls(catalog, capacity=1)
        for name in _ARRAY_FIELDS:
            if name != "counters":
                setattr(store, name, snap[name].copy())
        store.counters_ = snap["counters"].copy()
        if store.it.shape[0] < N_TIMES:  # a snapshot from before T_LAST_EVENT: use progress
            store.it = np.vstack([store.it, store.it[T_PROGRESS : T_PROGRESS + 1]])
        store.client_cap = len(store.ckey)
        store.inst_cap = store.it.shape[1]
        store.client_ids = np.full(store.client_cap, None, object)
        slots, ids = snap["client_ids"]
        store.client_ids[slots] = ids
        return store


def _pow2_at_least(n: int) -> int:
    return 1 << max(int(n - 1).bit_length(), 0)
