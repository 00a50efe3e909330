"""The shard-store contract: what a stateful shard step needs from its journey state."""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from ato.columns import EventColumns
from state.layout import N_OUT, N_OUT_F


@dataclass(frozen=True)
class Stalls:
    """Stall records: ``ints``/``floats`` rows follow ``state.layout.O_*``/``OF_*``.

    Row ``O_CLIENT`` holds the client slot; ``client_key``/``client_id`` name the client.
    """

    client_key: np.ndarray  # uint64 [n]
    client_id: list[str]
    ints: np.ndarray  # int64 [N_OUT, n]
    floats: np.ndarray  # float64 [N_OUT_F, n]

    def __len__(self) -> int:
        return len(self.client_id)

    @staticmethod
    def empty() -> "Stalls":
        """No stalls."""
        return Stalls(
            np.empty(0, np.uint64),
            [],
            np.empty((N_OUT, 0), np.int64),
            np.empty((N_OUT_F, 0), np.float64),
        )

    @staticmethod
    def concat(parts: "list[Stalls]") -> "Stalls":
        """The records of ``parts``, in order."""
        parts = [p for p in parts if len(p)]
        if len(parts) <= 1:
            return parts[0] if parts else Stalls.empty()
        return Stalls(
            np.concatenate([p.client_key for p in parts]),
            [c for p in parts for c in p.client_id],
            np.concatenate([p.ints for p in parts], axis=1),
            np.concatenate([p.floats for p in parts], axis=1),
        )


class ShardStore(ABC):
    """Journey instances of the clients of one shard."""

    @abstractmethod
    def apply(self, events: EventColumns) -> Stalls:
        """Apply events, already in event-time order; return the stalls they reveal."""

    @abstractmethod
    def expire(self, watermark: int) -> Stalls:
        """Settle instances whose deadline is at or before ``watermark``."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """An independent, picklable copy of the state."""

    @abstractmethod
    def counters(self) -> dict[str, int]:
        """Life-cycle counts since the store was created (started, completed, stalled, ...)."""

    @abstractmethod
    def open_instances(self) -> dict[tuple[str, int], dict[str, Any]]:
        """Every open instance keyed by (client id, journey code); for tests and lookups."""

    @abstractmethod
    def sizes(self) -> dict[str, int]:
        """Open instances, known clients, and bytes held by the state arrays."""
