"""Items that travel through the journey flow: raw batches in, decoded batches, shard inputs."""

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from ato.columns import EventColumns, RawBytes, client_id_texts
from operators.funnel import FunnelRows
from policy.decision_columns import DecisionColumns
from state.base import Records

# Most original bytes a dead letter or late event carries (base64): a message of up to a few
# MiB (an oversized one, an envelope) whole would pass the 1 MB a Kafka message may hold by
# default and fail the run, again at each restart. A cut one names its length and SHA-256;
# its partition and offset find it whole.
RAW_KEPT_BYTES = 65_536


def raw_fields(raw: bytes, whole: "WholeMessage | None" = None) -> dict[str, Any]:
    """``raw_b64`` of ``raw``, or of its first :data:`RAW_KEPT_BYTES` with ``raw_truncated``,
    ``raw_bytes`` and ``raw_sha256`` (of the whole) when it is longer; ``whole``: ``raw`` is
    only the start of a message the source did not read whole, and these are the whole's."""
    if whole is None and len(raw) <= RAW_KEPT_BYTES:
        return {"raw_b64": base64.b64encode(raw).decode("ascii")}
    return {
        "raw_b64": base64.b64encode(raw[:RAW_KEPT_BYTES]).decode("ascii"),
        "raw_truncated": True,
        "raw_bytes": len(raw) if whole is None else whole.size,
        "raw_sha256": hashlib.sha256(raw).hexdigest() if whole is None else whole.sha256,
    }


@dataclass(frozen=True)
class WholeMessage:
    """Length and SHA-256 of a message a source did not hold whole (a line too long to read)."""

    size: int
    sha256: str


@dataclass(frozen=True)
class DeadLetter:
    """A message that could not be used, with why and where it came from."""

    reason: str
    detail: str
    raw: bytes
    partition: str
    offset: int
    whole: WholeMessage | None = None  # set when ``raw`` is only the message's start

    def to_doc(self) -> dict[str, Any]:
        """JSON-ready document; the original bytes travel base64-encoded (:func:`raw_fields`)."""
        return {
            "reason": self.reason,
            "detail": self.detail,
            "partition": self.partition,
            "offset": self.offset,
            **raw_fields(self.raw, self.whole),
        }


@dataclass(frozen=True)
class RawBatch:
    """Raw messages read together from one input partition.

    ``first_offset`` is the source position of ``messages[0]`` (line number, Kafka offset);
    message ``i`` sits at ``first_offset + i`` unless ``offsets`` lists them explicitly.
    ``caught_up``: after this batch the source had nothing more to read for the partition
    (an empty batch with it set is a heartbeat); only this lets a partition go idle.
    ``lag``: messages left in the partition after this batch, when the source knows.
    ``unreadable``: dead letters of records the source could not read (Kafka's corrupt or
    undecompressable records), which the decode step passes on with its own.
    ``cut``: an empty batch saying ``--duration-s`` stopped the partition before its end
    (nothing follows it); the shards learn from it that the end of input is a pause.
    ``arrived_ms``: when the newest message of the batch reached the source system (Kafka's
    message timestamp), if known; with the replay clock a partition's event time counts at
    most up to it, as it counts at most up to the wall clock when live.
    ``unsure``: an empty batch saying the source cannot tell whether the partition has more
    (its broker does not answer): the partition is no longer caught up, whatever it said
    before, and holds the watermark until it reports again.
    ``ended``: the last batch of the partition (with ``caught_up``): the source reads nothing
    more from it. A caught-up partition idles only while it keeps reporting; an ended one
    stops reporting, and idles for good.
    """

    partition: str
    messages: list[bytes]
    first_offset: int = 0
    read_wall_ms: int = 0
    offsets: list[int] | None = None
    caught_up: bool = False
    lag: int | None = None
    unreadable: tuple[DeadLetter, ...] = ()
    cut: bool = False
    arrived_ms: int | None = None
    unsure: bool = False
    ended: bool = False

    def offset_array(self) -> np.ndarray:
        """Source offset of every message."""
        if self.offsets is not None:
            return np.asarray(self.offsets, dtype=np.int64)
        return np.arange(self.first_offset, self.first_offset + len(self.messages), dtype=np.int64)


@dataclass(frozen=True)
class DecodedBatch:
    """Valid events of one raw batch as columns, and its dead letters."""

    partition: str
    events: EventColumns
    dead: list[DeadLetter]
    max_ts: int | None  # greatest event time among the valid events
    read_wall_ms: int
    n_in: int
    caught_up: bool = False  # see RawBatch
    lag: int | None = None  # see RawBatch
    cut: bool = False  # see RawBatch
    arrived_ms: int | None = None  # see RawBatch
    unsure: bool = False  # see RawBatch
    ended: bool = False  # see RawBatch


@dataclass(frozen=True)
class ShardInput:
    """The part of one decoded batch that belongs to one shard.

    Every shard receives one per decoded batch, empty or not, so that each shard learns every
    partition's progress (``max_ts``) for its watermark.
    """

    shard: str
    partition: str
    events: EventColumns
    max_ts: int | None
    read_wall_ms: int
    caught_up: bool = False  # see RawBatch
    # Original bytes, for late events: ``events`` leaves its ``raw`` out; ``raw`` is that of
    # the whole decoded batch (shared by every shard's item, not copied) and ``raw_rows``
    # the rows of it holding ``events``, in order.
    raw: RawBytes | np.ndarray | None = None
    raw_rows: np.ndarray | None = None
    cut: bool = False  # see RawBatch
    arrived_ms: int | None = None  # see RawBatch
    unsure: bool = False  # see RawBatch
    ended: bool = False  # see RawBatch

    def raw_of(self, rows: np.ndarray) -> RawBytes | np.ndarray | None:
        """Original bytes of ``events`` at ``rows`` (an index array or mask), if known."""
        if self.raw is None or self.raw_rows is None:
            return self.events.raw[rows] if self.events.raw is not None else None
        return self.raw[self.raw_rows[rows]]

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled (sent to another worker process) with only its own events' bytes."""
        raw, rows = self.raw, self.raw_rows
        if raw is not None and rows is not None:
            raw, rows = raw[rows], np.arange(len(rows))
        fields = (self.shard, self.partition, self.events, self.max_ts, self.read_wall_ms)
        extra = (self.caught_up, raw, rows, self.cut, self.arrived_ms, self.unsure, self.ended)
        return ShardInput, (*fields, *extra)


@dataclass(frozen=True)
class InterventionBatch:
    """Intervention documents, encoded: one JSON line each, in one block of bytes.

    ``id_bytes`` (``S36``, ASCII) and ``client_id_bytes`` (``S``, UTF-8) name the documents
    in line order; a sink producing one message per document takes its key and headers from
    here without decoding the JSON. :attr:`ids` and :attr:`client_ids` give them as ``str``.
    """

    id_bytes: np.ndarray
    client_id_bytes: np.ndarray
    lines: bytes  # every document as one JSON line, each ending in a newline
    ends: np.ndarray  # int64: where each line ends in ``lines`` (after its newline)

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def ids(self) -> list[str]:
        """Intervention ids, in line order."""
        return self.id_bytes.astype("U36").tolist()

    @property
    def client_ids(self) -> list[str]:
        """Client ids, in line order."""
        return client_id_texts(self.client_id_bytes)

    def values(self) -> list[bytes]:
        """Each document's JSON, without the newline."""
        ends = self.ends.tolist()
        starts = [0, *ends][:-1]
        return [self.lines[a : b - 1] for a, b in zip(starts, ends, strict=True)]

    def docs(self) -> list[dict[str, Any]]:
        """The documents, decoded (for tests and inspection; the flow never needs this)."""
        return [orjson.loads(v) for v in self.values()]

    @staticmethod
    def empty() -> "InterventionBatch":
        """No interventions."""
        return InterventionBatch(np.empty(0, "S36"), np.empty(0, "S1"), b"", np.empty(0, np.int64))

    @staticmethod
    def concat(parts: "list[InterventionBatch]") -> "InterventionBatch":
        """The documents of ``parts``, in order."""
        parts = [p for p in parts if len(p)]
        if len(parts) <= 1:
            return parts[0] if parts else InterventionBatch.empty()
        shifts = np.cumsum([0] + [len(p.lines) for p in parts[:-1]])
        return InterventionBatch(
            np.concatenate([p.id_bytes for p in parts]),
            np.concatenate([p.client_id_bytes for p in parts]),
            b"".join(p.lines for p in parts),
            np.concatenate([p.ends + shift for p, shift in zip(parts, shifts, strict=True)]),
        )


@dataclass(frozen=True)
class ShardOutput:
    """What a shard step emits after one call: interventions, late events, and its stats.

    ``stalls`` and ``outcomes`` are kept when the flow writes metrics or runs the contact
    policy, ``funnel`` only for metrics. With the policy, the shard step leaves
    ``interventions`` empty and the policy step fills them and ``decisions``.
    """

    shard: str
    interventions: InterventionBatch = field(default_factory=InterventionBatch.empty)
    late: EventColumns | None = None
    late_count: int = 0
    # the input partition of the late events: (partition, count) runs in the order of ``late``
    late_partitions: tuple[tuple[str, int], ...] = ()
    applied: int = 0
    watermark: int = 0
    pending: int = 0
    open_instances: int = 0
    state_bytes: int = 0
    stalls: Records = field(default_factory=Records.empty)
    stall_ids: np.ndarray | None = None  # intervention ids of ``stalls``, uint8 [n, 36]
    outcomes: Records = field(default_factory=Records.empty)
    outcome_ids: np.ndarray | None = None  # intervention ids of ``outcomes``, uint8 [n, 36]
    funnel: FunnelRows | None = None  # funnel counts of this call (summed by the funnel step)
    final: bool = False  # the shard's last output: input ended
    emitted_at_ms: int = 0
    latency_ms: float | None = None
    decisions: DecisionColumns | None = None  # the contact policy's; None: no policy
    redis_outages: int = 0  # Redis outages live state and policy met since their last output
    redis_waiting: int = 0  # candidates due and waiting for Redis at this output
    paused: bool = False  # the shard's last output when the input was cut: its end is a pause
