"""The first error a step of this process raised, kept for when Bytewax loses it.

A Bytewax cluster of several processes (``cluster_main`` with addresses) loses the error
that stopped it: the failing worker's panic takes down the threads that talk to the other
processes, and joining them raises ``PanicException: Send thread panic`` in place of the
step's error (Bytewax 0.21.1; ``run_main`` and threads of one process are not affected).
The journey flow's steps therefore run through :mod:`flows.ops`, which records here the
first exception any of them raises (:func:`recorded`); the runner raises that one instead
(:func:`take`).

``StopIteration`` is how a source partition says it is done, not an error: never recorded.
"""

import functools
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from bytewax.inputs import (
    DynamicSource,
    FixedPartitionedSource,
    Source,
    StatefulSourcePartition,
    StatelessSourcePartition,
)
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    Sink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)

F = TypeVar("F", bound=Callable[..., Any])

_lock = threading.Lock()
_first: list[Exception] = []


def record(exc: Exception) -> None:
    """Keep ``exc`` unless an error was recorded before it (or it ends a source)."""
    if isinstance(exc, StopIteration):
        return
    with _lock:
        if not _first:
            _first.append(exc)


def take() -> Exception | None:
    """The first recorded error, if any, forgetting it (the next run starts clean)."""
    with _lock:
        return _first.pop() if _first else None


def recorded(fn: F) -> F:
    """``fn``, recording what it raises (:func:`record`) before it reaches Bytewax."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            record(exc)
            raise

    return call  # type: ignore[return-value]


class RecordedLogic(StatefulBatchLogic[Any, Any, Any]):
    """A stateful step's logic whose errors are recorded."""

    def __init__(self, logic: StatefulBatchLogic[Any, Any, Any]) -> None:
        self.logic = logic

    @recorded
    def on_batch(self, values: list[Any]) -> tuple[Any, bool]:
        return self.logic.on_batch(values)

    @recorded
    def on_notify(self) -> tuple[Any, bool]:
        return self.logic.on_notify()

    @recorded
    def on_eof(self) -> tuple[Any, bool]:
        return self.logic.on_eof()

    @recorded
    def notify_at(self) -> datetime | None:
        return self.logic.notify_at()

    @recorded
    def snapshot(self) -> Any:
        return self.logic.snapshot()


def recorded_builder(
    builder: Callable[[Any], StatefulBatchLogic[Any, Any, Any]],
) -> Callable[[Any], StatefulBatchLogic[Any, Any, Any]]:
    """``builder`` of a stateful step, making logic whose errors are recorded."""

    @recorded
    def build(resume_state: Any) -> StatefulBatchLogic[Any, Any, Any]:
        return RecordedLogic(builder(resume_state))

    return build


class _StatefulSourcePart(StatefulSourcePartition[Any, Any]):
    def __init__(self, part: StatefulSourcePartition[Any, Any]) -> None:
        self.part = part

    @recorded
    def next_batch(self) -> Any:
        return self.part.next_batch()

    @recorded
    def next_awake(self) -> datetime | None:
        return self.part.next_awake()

    @recorded
    def snapshot(self) -> Any:
        return self.part.snapshot()

    @recorded
    def close(self) -> None:
        self.part.close()


class _StatelessSourcePart(StatelessSourcePartition[Any]):
    def __init__(self, part: StatelessSourcePartition[Any]) -> None:
        self.part = part

    @recorded
    def next_batch(self) -> Any:
        return self.part.next_batch()

    @recorded
    def next_awake(self) -> datetime | None:
        return self.part.next_awake()

    @recorded
    def close(self) -> None:
        self.part.close()


class _FixedSource(FixedPartitionedSource[Any, Any]):
    def __init__(self, source: FixedPartitionedSource[Any, Any]) -> None:
        self.source = source

    @recorded
    def list_parts(self) -> list[str]:
        return self.source.list_parts()

    @recorded
    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _StatefulSourcePart:
        return _StatefulSourcePart(self.source.build_part(step_id, for_part, resume_state))


class _DynamicSource(DynamicSource[Any]):
    def __init__(self, source: DynamicSource[Any]) -> None:
        self.source = source

    @recorded
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StatelessSourcePart:
        return _StatelessSourcePart(self.source.build(step_id, worker_index, worker_count))


def recorded_source(source: Source[Any]) -> Source[Any]:
    """``source``, its partitions' errors recorded."""
    if isinstance(source, FixedPartitionedSource):
        return _FixedSource(source)
    if isinstance(source, DynamicSource):
        return _DynamicSource(source)
    msg = f"not a Bytewax source: {source!r}"
    raise TypeError(msg)


class _StatefulSinkPart(StatefulSinkPartition[Any, Any]):
    def __init__(self, part: StatefulSinkPartition[Any, Any]) -> None:
        self.part = part

    @recorded
    def write_batch(self, values: list[Any]) -> None:
        self.part.write_batch(values)

    @recorded
    def snapshot(self) -> Any:
        return self.part.snapshot()

    @recorded
    def close(self) -> None:
        self.part.close()


class _StatelessSinkPart(StatelessSinkPartition[Any]):
    def __init__(self, part: StatelessSinkPartition[Any]) -> None:
        self.part = part

    @recorded
    def write_batch(self, items: list[Any]) -> None:
        self.part.write_batch(items)

    @recorded
    def close(self) -> None:
        self.part.close()


class _FixedSink(FixedPartitionedSink[Any, Any]):
    def __init__(self, sink: FixedPartitionedSink[Any, Any]) -> None:
        self.sink = sink

    @recorded
    def list_parts(self) -> list[str]:
        return self.sink.list_parts()

    @recorded
    def part_fn(self, item_key: str) -> int:
        return self.sink.part_fn(item_key)

    @recorded
    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _StatefulSinkPart:
        return _StatefulSinkPart(self.sink.build_part(step_id, for_part, resume_state))


class _DynamicSink(DynamicSink[Any]):
    def __init__(self, sink: DynamicSink[Any]) -> None:
        self.sink = sink

    @recorded
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StatelessSinkPart:
        return _StatelessSinkPart(self.sink.build(step_id, worker_index, worker_count))


def recorded_sink(sink: Sink[Any]) -> Sink[Any]:
    """``sink``, its partitions' errors recorded."""
    if isinstance(sink, FixedPartitionedSink):
        return _FixedSink(sink)
    if isinstance(sink, DynamicSink):
        return _DynamicSink(sink)
    msg = f"not a Bytewax sink: {sink!r}"
    raise TypeError(msg)
