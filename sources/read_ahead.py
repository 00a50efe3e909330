"""Read-ahead: each partition's next batch is decoded in the background while the flow works.

:class:`ReadAheadSource` wraps any fixed-partitioned source of :class:`RawBatch`. Each of its
partitions holds back the batches of one read and hands them on at the next read, after
``start`` (the decoder's :meth:`~operators.decode.Decoder.start`) began decoding them on a
thread of their own; the decode step then finds them decoded, or nearly. The flow works on
batch ``k`` while batch ``k + 1`` is decoded (the numba scanner releases the GIL), instead of
waiting for each decode in turn.

Nothing is read ahead of what the wrapped partition would have read anyway, and nothing
waits for a next read that is not due: when the wrapped partition has nothing new, or asks
to be called later (``next_awake``), the held batches go on at once; at the end of input
they go on before ``StopIteration``. The snapshot is the wrapped partition's position from
before the held batches were read, so a resumed run reads them again.
"""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from operators.batches import RawBatch


class ReadAheadSource(FixedPartitionedSource[RawBatch, Any]):
    """``inner``'s partitions, each one read ahead (see the module docstring)."""

    def __init__(
        self, inner: FixedPartitionedSource[RawBatch, Any], start: Callable[[RawBatch], object]
    ) -> None:
        self.inner = inner
        self.start = start

    def list_parts(self) -> list[str]:
        """The wrapped source's partitions."""
        return list(self.inner.list_parts())

    def build_part(
        self, step_id: str, for_part: str, resume_state: Any | None
    ) -> "ReadAheadPartition":
        """The wrapped partition, read ahead."""
        inner = self.inner.build_part(step_id, for_part, resume_state)
        return ReadAheadPartition(inner, self.start)


class ReadAheadPartition(StatefulSourcePartition[RawBatch, Any]):
    """One partition's batches, handed on one read late, their decoding started."""

    def __init__(
        self, inner: StatefulSourcePartition[RawBatch, Any], start: Callable[[RawBatch], object]
    ) -> None:
        self.inner = inner
        self.start = start
        self.held: list[RawBatch] = []
        self.held_from: Any = None  # the inner snapshot from before the held batches
        self.ended = False

    def next_batch(self) -> list[RawBatch]:
        """The batches held since the last call; the new read is held in their place."""
        if self.ended:
            raise StopIteration
        if self.held and not self._inner_due():
            return self._release()
        before = self.inner.snapshot()
        try:
            got = list(self.inner.next_batch())
        except StopIteration:
            self.ended = True
            if self.held:
                return self._release()
            raise
        out = self._release()
        if got:
            for batch in got:
                self.start(batch)
            self.held, self.held_from = got, before
        return out

    def next_awake(self) -> datetime | None:
        """At once while batches are held; else when the wrapped partition says."""
        return None if self.held else self.inner.next_awake()

    def snapshot(self) -> Any:
        """The wrapped partition's position before the held batches (read again on resume)."""
        return self.held_from if self.held else self.inner.snapshot()

    def close(self) -> None:
        """Close the wrapped partition."""
        self.inner.close()

    def _inner_due(self) -> bool:
        awake = self.inner.next_awake()
        return awake is None or awake <= datetime.now(UTC)

    def _release(self) -> list[RawBatch]:
        out, self.held, self.held_from = self.held, [], None
        return out
