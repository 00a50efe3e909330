"""The shard-store contract: what a stateful shard step needs from its journey state."""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from ato.columns import EventColumns, client_id_bytes, client_id_texts
from state.layout import KIND_OUTCOME, KIND_STALL, N_OUT, N_OUT_F, O_KIND


@dataclass(frozen=True)
class Records:
    """Stall and outcome records: ``ints``/``floats`` rows follow ``state.layout.O_*``/``OF_*``.

    Row ``O_CLIENT`` holds the client slot; ``client_key``/``client_id`` name the client
    (``client_id`` as UTF-8 bytes, numpy ``S``, like an event column; a list of ``str`` given
    here is encoded); row ``O_KIND`` tells a stall from the outcome of an earlier stall.
    """

    client_key: np.ndarray  # uint64 [n]
    client_id: np.ndarray  # S [n], UTF-8
    ints: np.ndarray  # int64 [N_OUT, n]
    floats: np.ndarray  # float64 [N_OUT_F, n]

    def __post_init__(self) -> None:
        # frozen: the one write goes around the dataclass's __setattr__
        object.__setattr__(self, "client_id", client_id_bytes(self.client_id))

    def __len__(self) -> int:
        return len(self.client_id)

    def client_texts(self) -> list[str]:
        """The client ids as ``str``."""
        return client_id_texts(self.client_id)

    @staticmethod
    def empty() -> "Records":
        """No records."""
        return Records(
            np.empty(0, np.uint64),
            np.empty(0, "S1"),
            np.empty((N_OUT, 0), np.int64),
            np.empty((N_OUT_F, 0), np.float64),
        )

    @staticmethod
    def concat(parts: "list[Records]") -> "Records":
        """The records of ``parts``, in order."""
        parts = [p for p in parts if len(p)]
        if len(parts) <= 1:
            return parts[0] if parts else Records.empty()
        return Records(
            np.concatenate([p.client_key for p in parts]),
            np.concatenate([p.client_id for p in parts]),
            np.concatenate([p.ints for p in parts], axis=1),
            np.concatenate([p.floats for p in parts], axis=1),
        )

    def take(self, index: np.ndarray) -> "Records":
        """The records at ``index`` (an index array or a boolean mask)."""
        rows = np.flatnonzero(index) if index.dtype == np.bool_ else index
        return Records(
            self.client_key[rows],
            self.client_id[rows],
            self.ints[:, rows],
            self.floats[:, rows],
        )

    def stalls(self) -> "Records":
        """Only the stall records."""
        return self if not len(self) else self.take(self.ints[O_KIND] == KIND_STALL)

    def outcomes(self) -> "Records":
        """Only the outcome records."""
        return self if not len(self) else self.take(self.ints[O_KIND] == KIND_OUTCOME)


@dataclass(frozen=True)
class Effects:
    """What each applied event did (``state.layout.EFFECT_*``), and to which journey and step.

    Aligned with the events given to :meth:`ShardStore.apply`.
    """

    effect: np.ndarray  # int8 [n]
    journey: np.ndarray  # int16 [n], -1 when the event counted in no instance
    step: np.ndarray  # int16 [n]

    @staticmethod
    def empty() -> "Effects":
        """Effects of no events."""
        return Effects(np.empty(0, np.int8), np.empty(0, np.int16), np.empty(0, np.int16))

    @staticmethod
    def concat(parts: "list[Effects]") -> "Effects":
        """The effects of ``parts``, in order."""
        if len(parts) == 1:
            return parts[0]
        return Effects(
            np.concatenate([p.effect for p in parts]),
            np.concatenate([p.journey for p in parts]),
            np.concatenate([p.step for p in parts]),
        )


class ShardStore(ABC):
    """Journey instances of the clients of one shard."""

    @abstractmethod
    def apply(self, events: EventColumns) -> tuple[Records, Effects]:
        """Apply events, already in event-time order; return the records they cause."""

    @abstractmethod
    def expire(self, watermark: int) -> Records:
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
