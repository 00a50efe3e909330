"""Live journey state of one shard: which instances changed, and writing their state to Redis.

The shard step marks the (client, journey) pairs each call touched: events that counted in an
instance, stalls and outcomes. At most every ``interval_ms`` (and when input ends) the tracker
reads the current state of every marked pair from the shard store and writes it with
:class:`~policy.live_state.LiveStateWriter`: open instances as hash fields, closed ones
removed. Only the latest state is written, so a client's many events between two writes cost
one field write.

When Redis is unreachable the marks are kept and the write is tried again after
``interval_ms``: the state read then is the newest, so nothing needs replaying. Other Redis
errors (a key of the wrong type, say) are logged and counted, and those marks dropped.
"""

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from operators.interventions import InterventionBuilder
from policy.exceptions import LiveStateError
from policy.live_state import JourneyChanges, LiveStateWriter
from state.shard_store import NumbaShardStore

log = logging.getLogger(__name__)


class LiveStateTracker:
    """Marks of changed instances and their periodic write (one per shard)."""

    def __init__(
        self, names: InterventionBuilder, writer: LiveStateWriter, interval_ms: int
    ) -> None:
        self.writer = writer
        self.interval_ms = interval_ms
        self.names = names  # journey, step, event type and channel names of the catalog
        self.keys: list[np.ndarray] = []  # uint64 client hashes
        self.journeys: list[np.ndarray] = []  # int64 journey codes
        self.client_ids: list[np.ndarray] = []  # object: client ids
        self.next_write_ms = 0
        self.failing = False
        self.stats = {"writes": 0, "rows": 0, "failures": 0, "errors": 0}

    def mark(
        self, keys: np.ndarray, journeys: np.ndarray, client_ids: Sequence[str] | np.ndarray
    ) -> None:
        """Mark instances as changed; ``journeys`` < 0 (events outside any instance) are
        ignored."""
        keep = np.asarray(journeys) >= 0
        if not keep.any():
            return
        ids = np.asarray(client_ids, dtype=object)
        self.keys.append(np.asarray(keys, np.uint64)[keep])
        self.journeys.append(np.asarray(journeys, np.int64)[keep])
        self.client_ids.append(ids[keep])

    def pending(self) -> int:
        """Marks waiting (duplicates included)."""
        return sum(len(k) for k in self.keys)

    def maybe_write(self, store: NumbaShardStore, now_ms: int, force: bool = False) -> int:
        """Write the marked instances' state when ``interval_ms`` has passed (or ``force``);
        return the rows written."""
        if not self.keys or (not force and now_ms < self.next_write_ms):
            return 0
        self.next_write_ms = now_ms + self.interval_ms
        keys, journeys, ids = self._unique()
        changes = self.changes(store, keys, journeys, ids, now_ms)
        try:
            self.writer.write(changes)
        except LiveStateError as exc:
            if exc.transient:
                self.keys, self.journeys, self.client_ids = [keys], [journeys], [ids]
                self.stats["failures"] += 1
                if not self.failing:
                    log.warning("live state: %s; %d instances kept to retry", exc, len(keys))
                self.failing = True
                return 0
            self.stats["errors"] += 1
            log.error("live state: %s; %d instance changes dropped", exc, len(keys))
            self._clear()
            return 0
        if self.failing:
            log.warning("live state: Redis answers again, %d instances written", len(keys))
        self.failing = False
        self._clear()
        self.stats["writes"] += 1
        self.stats["rows"] += len(keys)
        return len(keys)

    def changes(
        self,
        store: NumbaShardStore,
        keys: np.ndarray,
        journeys: np.ndarray,
        client_ids: np.ndarray,
        now_ms: int,
    ) -> JourneyChanges:
        """The current state of the (client, journey) pairs from the store; pairs with no
        open instance are closed."""
        n = len(keys)
        slots = store.find_instances(keys, journeys)
        open_ = slots >= 0
        f = store.instance_fields(np.where(open_, slots, 0))
        for name in ("step", "last_type", "last_channel"):  # closed rows: any valid code
            f[name] = np.where(open_, f[name], 0)
        step = np.where(open_, self.names.step_names[journeys, f["step"]], "")
        return JourneyChanges(
            client_id=client_ids.tolist(),
            journey=self.names.journey_names[journeys].tolist(),
            step=step.tolist(),
            since_ms=f["since_ms"],
            last_event_type=self.names.type_names[f["last_type"]].tolist(),
            last_channel=self.names.channels[f["last_channel"]].tolist(),
            last_event_ms=f["last_ms"],
            stalled=f["stalled"] != 0,
            closed=~open_ if n else np.zeros(0, bool),
            attempt=f["attempt"],
            updated_ms=now_ms,
        )

    def _unique(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        keys = np.concatenate(self.keys)
        journeys = np.concatenate(self.journeys)
        ids = np.concatenate(self.client_ids)
        order = np.lexsort((journeys, keys))
        keys, journeys, ids = keys[order], journeys[order], ids[order]
        first = np.ones(len(keys), bool)
        first[1:] = (keys[1:] != keys[:-1]) | (journeys[1:] != journeys[:-1])
        return keys[first], journeys[first], ids[first]

    def _clear(self) -> None:
        self.keys, self.journeys, self.client_ids = [], [], []

    def snapshot(self) -> dict[str, Any]:
        """The marks not yet written."""
        if not self.keys:
            return {"keys": None}
        keys, journeys, ids = self._unique()
        return {"keys": keys, "journeys": journeys, "client_ids": ids}

    def restore(self, snap: dict[str, Any]) -> None:
        """Marks from :meth:`snapshot`."""
        if snap.get("keys") is not None:
            self.keys, self.journeys = [snap["keys"]], [snap["journeys"]]
            self.client_ids = [snap["client_ids"]]
