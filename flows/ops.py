"""Bytewax's operators as the journey flow uses them: the same steps, with every function,
logic, source and sink partition they call recording the first error it raises
(:mod:`flows.first_error`), which a cluster of processes would otherwise lose."""

from collections.abc import Callable, Iterable
from typing import Any

import bytewax.operators as bytewax_op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from flows.first_error import recorded, recorded_builder, recorded_sink, recorded_source

merge = bytewax_op.merge


def input(step_id: str, flow: Dataflow, source: Source[Any]) -> Stream[Any]:  # noqa: A001
    """:func:`bytewax.operators.input`."""
    return bytewax_op.input(step_id, flow, recorded_source(source))


def output(step_id: str, up: Stream[Any], sink: Sink[Any]) -> None:
    """:func:`bytewax.operators.output`."""
    bytewax_op.output(step_id, up, recorded_sink(sink))


def map(step_id: str, up: Stream[Any], mapper: Callable[[Any], Any]) -> Stream[Any]:  # noqa: A001
    """:func:`bytewax.operators.map`."""
    return bytewax_op.map(step_id, up, recorded(mapper))


def flat_map(step_id: str, up: Stream[Any], mapper: Callable[[Any], Iterable[Any]]) -> Stream[Any]:
    """:func:`bytewax.operators.flat_map` (a mapper's generator is run to its end inside
    the recording, so that what it raises is recorded too)."""

    def listed(item: Any) -> Iterable[Any]:
        items = mapper(item)
        return items if isinstance(items, list | tuple) else list(items)

    return bytewax_op.flat_map(step_id, up, recorded(listed))


def stateful_batch(
    step_id: str,
    up: Stream[tuple[str, Any]],
    builder: Callable[[Any], StatefulBatchLogic[Any, Any, Any]],
) -> Stream[tuple[str, Any]]:
    """:func:`bytewax.operators.stateful_batch`."""
    return bytewax_op.stateful_batch(step_id, up, recorded_builder(builder))
