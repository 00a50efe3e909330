"""The first error of a step, recorded for when a cluster of processes loses it."""

from datetime import datetime
from typing import Any

import pytest
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.testing import TestingSink, TestingSource, run_main

from ato.exceptions import ClusterError
from ato.runner import cluster_failure
from flows import first_error
from flows import ops as op


@pytest.fixture(autouse=True)
def _clean() -> None:
    first_error.take()


def test_only_the_first_error_is_kept_and_taking_it_forgets_it() -> None:
    first, second = ValueError("first"), RuntimeError("second")
    first_error.record(StopIteration())  # a source's end, not an error
    first_error.record(first)
    first_error.record(second)
    assert first_error.take() is first
    assert first_error.take() is None


def test_a_recorded_function_records_and_still_raises() -> None:
    @first_error.recorded
    def step(x: int) -> int:
        if x < 0:
            msg = f"negative {x}"
            raise ValueError(msg)
        return x

    assert step(1) == 1
    assert first_error.take() is None
    with pytest.raises(ValueError, match="negative -1"):
        step(-1)
    got = first_error.take()
    assert isinstance(got, ValueError) and str(got) == "negative -1"


class _Count(StatefulBatchLogic[int, int, int]):
    def __init__(self, resume: int | None) -> None:
        self.total = resume or 0

    def on_batch(self, values: list[int]) -> tuple[list[int], bool]:
        self.total += sum(values)
        if self.total > 100:
            msg = f"total {self.total} too large"
            raise OverflowError(msg)
        return [self.total], False

    def on_eof(self) -> tuple[list[int], bool]:
        return [-self.total], True

    def notify_at(self) -> datetime | None:
        return None

    def snapshot(self) -> int:
        return self.total


def _flow(items: list[int], out: list[Any], fail_in: str = "") -> Dataflow:
    def mapper(x: int) -> int:
        if fail_in == "map" and x == 3:
            msg = "map failed at 3"
            raise KeyError(msg)
        return x

    def generator(x: int) -> Any:  # raises while Bytewax iterates, after the call returned
        yield x
        if fail_in == "flat_map" and x == 3:
            msg = "flat_map failed at 3"
            raise LookupError(msg)

    flow = Dataflow("recorded")
    stream = op.map("map", op.input("in", flow, TestingSource(items)), mapper)
    stream = op.flat_map("flat_map", stream, generator)
    keyed = op.map("key", stream, lambda x: ("k", x))
    counted = op.stateful_batch("count", keyed, _Count)
    op.output("out", counted, TestingSink(out))
    return flow


def test_a_flow_of_recorded_steps_gives_what_bytewax_steps_give() -> None:
    out: list[Any] = []
    run_main(_flow([1, 2, 3], out))
    assert out == [("k", 1), ("k", 3), ("k", 6), ("k", -6)]
    assert first_error.take() is None


@pytest.mark.parametrize(
    ("fail_in", "kind", "message"),
    [
        ("map", KeyError, "map failed at 3"),
        ("flat_map", LookupError, "flat_map failed at 3"),
        ("count", OverflowError, "total 103 too large"),
    ],
)
def test_the_error_of_any_step_is_recorded(fail_in: str, kind: type, message: str) -> None:
    """A function, a generator run by flat_map and a stateful logic: each failing step's
    own error is recorded (Bytewax raises its own, wrapping it)."""
    items = [1, 2, 100] if fail_in == "count" else [1, 2, 3]
    with pytest.raises(Exception):  # noqa: B017, PT011 - Bytewax's wrapper of the error
        run_main(_flow(items, [], fail_in))
    got = first_error.take()
    assert type(got) is kind and message in str(got)


class PanicException(BaseException):  # noqa: N818 - the name pyo3 gives its type
    """Stands in for pyo3's type, which cluster_failure knows by name."""


def test_a_cluster_panic_gives_the_step_error_or_a_lost_peer() -> None:
    panic = PanicException("Send thread panic: Any { .. }")
    step = ValueError("the step's own error")
    assert cluster_failure(panic, step) is step
    lost = cluster_failure(panic, None)
    assert isinstance(lost, ClusterError)
    assert "another process of the cluster" in str(lost)
    other = PanicException("something else")
    assert cluster_failure(other, step) is other  # not the lost error: kept as it is
    plain = RuntimeError("Bytewax's own error")
    assert cluster_failure(plain, step) is plain


def test_the_exit_after_a_report_is_asked_by_the_error_itself() -> None:
    """The mark travels with the error: a later error of the same process (another run,
    a test) does not end the process."""
    from ato.panic_text import exit_after_report, exit_after_report_asked, reported

    marked, other = ValueError("a failed cluster run"), ValueError("later")
    exit_after_report(marked)
    assert exit_after_report_asked(marked)
    assert not exit_after_report_asked(other)
    reported(other, 2)  # returns: the process goes on
