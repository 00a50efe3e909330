"""Bytewax source over generated traffic: one partition per generator partition.

Replay clock: batches go out as fast as the flow takes them, or paced at ``rate`` events/s.
Live clock: an event goes out when the wall clock reaches its event time (the traffic's
shuffle only reorders events within ``disorder_ms``).
Resumes from the snapshotted position after a crash.
"""

import time
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from ato.generator import GeneratedTraffic
from operators.batches import RawBatch
from operators.decode import wall_ms

HEARTBEAT_MS = 100  # a live partition waiting for its next event says it is caught up this often


class _GeneratorPartition(StatefulSourcePartition[RawBatch, int]):
    def __init__(
        self,
        name: str,
        lines: list[bytes],
        arrival_ts: list[int],
        batch_size: int,
        rate_per_partition: float,
        live: bool,
        position: int,
        stop_at: float | None,
        cut: set[str],
    ) -> None:
        self.name = name
        self.lines = lines
        self.arrival_ts = arrival_ts
        self.batch_size = batch_size
        self.rate = rate_per_partition
        self.live = live
        self.position = position
        self.stop_at = stop_at
        self.cut = cut
        self.started = time.monotonic()
        self.start_position = position
        self.awake: datetime | None = None
        self.ended = False  # the end was reported (see next_batch)

    def next_batch(self) -> list[RawBatch]:
        if self.position >= len(self.lines):
            if self.ended:
                raise StopIteration
            # once, at the end (an empty partition too): caught up, so the watermark stops
            # waiting for this partition once it has been idle, instead of until all input ends
            self.ended = True
            return [RawBatch(self.name, [], self.position, wall_ms(), caught_up=True, ended=True)]
        if self.stop_at is not None and time.monotonic() >= self.stop_at:
            if self.ended:
                raise StopIteration
            # --duration ran out before the traffic did: say so (once), then stop
            self.ended = True
            self.cut.add(self.name)
            return [RawBatch(self.name, [], self.position, wall_ms(), cut=True)]
        end = min(self.position + self.batch_size, len(self.lines))
        caught_up = False
        if self.live:
            now = wall_ms()
            while end > self.position and self.arrival_ts[end - 1] > now:
                end = self.position + (end - self.position) // 2
            caught_up = end == len(self.lines) or self.arrival_ts[end] > now
            if end == self.position:
                # until the next event, saying it is caught up at least every HEARTBEAT_MS: a
                # partition that stops saying so holds the watermark (it may be held back)
                wait_ms = min(self.arrival_ts[self.position] - now, HEARTBEAT_MS)
                self.awake = datetime.now(UTC) + timedelta(milliseconds=max(wait_ms, 1))
                return [RawBatch(self.name, [], self.position, now, caught_up=True)]
        elif self.rate > 0:
            allowed = self.start_position + int((time.monotonic() - self.started) * self.rate)
            end = min(end, max(allowed, self.position))
            if end == self.position:
                self.awake = datetime.now(UTC) + timedelta(milliseconds=10)
                return []
        self.awake = None
        lines = self.lines[self.position : end]
        batch = RawBatch(self.name, lines, self.position, wall_ms(), caught_up=caught_up)
        self.position = end
        return [batch]

    def next_awake(self) -> datetime | None:
        if self.awake is not None and self.stop_at is not None:
            until_stop = timedelta(seconds=max(self.stop_at - time.monotonic(), 0.0))
            return min(self.awake, datetime.now(UTC) + until_stop)
        return self.awake

    def snapshot(self) -> int:
        return self.position


class GeneratorSource(FixedPartitionedSource[RawBatch, int]):
    """Serves :class:`GeneratedTraffic` as raw batches."""

    def __init__(
        self,
        traffic: GeneratedTraffic,
        batch_size: int,
        rate: float = 0.0,
        live: bool = False,
        duration_s: float | None = None,
    ) -> None:
        self.traffic = traffic
        self.batch_size = batch_size
        self.rate = rate
        self.live = live
        self.duration_s = duration_s
        self.stop_at: float | None = None
        # partitions this process stopped before their end (the run summary then has no
        # precision and recall: the ground truth is of the whole traffic)
        self.cut: set[str] = set()

    def list_parts(self) -> list[str]:
        """Generator partitions."""
        return list(self.traffic.partitions)

    def input_partitions(self) -> list[str]:
        """Partition names the watermark waits for."""
        return self.list_parts()

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _GeneratorPartition:
        """Serve one partition from its snapshotted position."""
        if self.duration_s is not None and self.stop_at is None:
            self.stop_at = time.monotonic() + self.duration_s
        return _GeneratorPartition(
            for_part,
            self.traffic.partitions[for_part],
            self.traffic.arrival_ts[for_part],
            self.batch_size,
            self.rate / max(len(self.traffic.partitions), 1),
            self.live,
            resume_state or 0,
            self.stop_at,
            self.cut,
        )
