"""A shard's journey state in lanes: one store per lane, updated side by side.

The clients of a shard split into ``engine.lanes`` lanes by their hash (:func:`lane_of`),
each lane with its own :class:`NumbaShardStore`. A lane's clients never meet another lane's,
so the lanes apply their events and expire their deadlines independently: the first lane on
the worker's thread, the others on helper threads (the kernels release the GIL), so one
worker uses a second core for its state. With one lane, everything runs on the worker's
thread as with a plain shard store.
"""

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import numpy as np

from ato.catalog import Catalog
from ato.columns import EventColumns
from ato.threads import run_parts
from state.hashing import lane_of
from state.shard_store import NumbaShardStore

T = TypeVar("T")


class LanedStore:
    """The lane stores of one shard (1 to 8 lanes)."""

    def __init__(self, stores: list[NumbaShardStore]) -> None:
        self.stores = stores
        self.lanes = len(stores)

    @classmethod
    def empty(cls, catalog: Catalog, lanes: int) -> "LanedStore":
        """``lanes`` empty lane stores."""
        return cls([NumbaShardStore(catalog) for _ in range(lanes)])

    def split(self, events: EventColumns) -> list[EventColumns]:
        """The events of each lane, in their order; slices (no copies) when ``events`` come
        grouped by lane, as the router hands them over."""
        if self.lanes == 1:
            return [events]
        lanes = lane_of(events.client_key, self.lanes)
        if np.any(lanes[1:] < lanes[:-1]):
            order = np.argsort(lanes, kind="stable")  # a radix sort of int8
            events, lanes = events.take(order), lanes[order]
        bounds = np.searchsorted(lanes, np.arange(self.lanes + 1)).tolist()
        return [events.take(slice(bounds[k], bounds[k + 1])) for k in range(self.lanes)]

    def run(self, work: Callable[[int, NumbaShardStore], T], side_by_side: bool) -> list[T]:
        """``work(lane, store)`` of every lane, in lane order: with ``side_by_side``, the
        lanes at once (:func:`ato.threads.run_parts`), else one after another on this thread.
        ``work`` must touch nothing shared with another lane."""
        parts = [partial(work, k, store) for k, store in enumerate(self.stores)]
        return run_parts(parts) if side_by_side else [part() for part in parts]

    # ------------------------------------------------------------------ inspection

    def counters(self) -> dict[str, int]:
        """Life-cycle counts of every lane, summed."""
        total: dict[str, int] = {}
        for store in self.stores:
            for name, count in store.counters().items():
                total[name] = total.get(name, 0) + count
        return total

    def open_fields(
        self, client_keys: np.ndarray, journeys: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Rows of the (client hash, journey code) pairs with an open instance, ascending,
        and those instances' fields (:meth:`NumbaShardStore.open_fields`)."""
        if self.lanes == 1:
            return self.stores[0].open_fields(client_keys, journeys)
        lanes = lane_of(np.ascontiguousarray(client_keys, np.uint64), self.lanes)
        rows_parts: list[np.ndarray] = []
        field_parts: list[dict[str, np.ndarray]] = []
        for k, store in enumerate(self.stores):
            mine = np.flatnonzero(lanes == k)
            rows, fields = store.open_fields(client_keys[mine], journeys[mine])
            rows_parts.append(mine[rows])
            field_parts.append(fields)
        rows = np.concatenate(rows_parts)
        ascending = np.argsort(rows, kind="stable")
        fields = {
            name: np.concatenate([f[name] for f in field_parts])[ascending]
            for name in field_parts[0]
        }
        return rows[ascending], fields

    def sizes(self) -> dict[str, int]:
        """Open instances, known clients and bytes of every lane, summed."""
        total = {"instances": 0, "clients": 0, "bytes": 0}
        for store in self.stores:
            for name, size in store.sizes().items():
                total[name] += size
        return total

    # ------------------------------------------------------------------ recovery

    def snapshot(self) -> dict[str, Any]:
        """Each lane's store snapshot."""
        return {"lanes": [store.snapshot() for store in self.stores]}

    @classmethod
    def restore(cls, catalog: Catalog, snap: dict[str, Any]) -> "LanedStore":
        """Rebuild from :meth:`snapshot` output, or from a shard store's own snapshot (taken
        before shards had lanes: one lane)."""
        lane_snaps = snap["lanes"] if "lanes" in snap else [snap]
        return cls([NumbaShardStore.restore(catalog, s) for s in lane_snaps])


def snapshot_lanes(snap: dict[str, Any]) -> int:
    """How many lanes a :meth:`LanedStore.snapshot` (or an older store snapshot) holds."""
    return len(snap["lanes"]) if "lanes" in snap else 1
