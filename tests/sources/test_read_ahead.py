"""Read-ahead partitions: batches one read late, decoding started, nothing lost on resume."""

from datetime import UTC, datetime, timedelta

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import StatefulSourcePartition
from bytewax.testing import TestingSink, TestingSource, run_main

from ato.catalog import load_catalog
from ato.config import EngineSettings
from operators.batches import RawBatch
from operators.decode import Decoder
from sources.read_ahead import ReadAheadPartition, ReadAheadSource


class Script(StatefulSourcePartition[RawBatch, int]):
    """A partition returning scripted reads; its position counts the batches returned."""

    def __init__(self, reads: list[list[RawBatch] | None], awake: datetime | None = None) -> None:
        self.reads = reads  # None: StopIteration
        self.position = 0
        self.awake = awake
        self.calls = 0

    def next_batch(self) -> list[RawBatch]:
        self.calls += 1
        got = self.reads.pop(0)
        if got is None:
            raise StopIteration
        self.position += len(got)
        return got

    def next_awake(self) -> datetime | None:
        return self.awake

    def snapshot(self) -> int:
        return self.position


def batch(n: int) -> RawBatch:
    return RawBatch("p", [b"%d" % n], n)


def test_batches_come_one_read_late_with_decoding_started_and_the_end_flushes_them() -> None:
    started: list[int] = []
    a, b, c = batch(1), batch(2), batch(3)
    inner = Script([[a, b], [], [c], None])
    part = ReadAheadPartition(inner, lambda x: started.append(x.first_offset))
    assert part.next_batch() == [] and started == [1, 2]
    assert part.next_awake() is None  # held: call again at once
    assert part.snapshot() == 0  # before the held batches: a resume reads them again
    assert part.next_batch() == [a, b]  # nothing new: the held ones go on
    assert part.snapshot() == 2
    assert part.next_batch() == [] and part.snapshot() == 2
    assert part.next_batch() == [c]  # the end: held ones first
    with pytest.raises(StopIteration):
        part.next_batch()
    assert started == [1, 2, 3]


def test_held_batches_go_on_without_a_read_the_inner_partition_does_not_want_yet() -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    inner = Script([[batch(1)]])
    part = ReadAheadPartition(inner, lambda _: None)
    assert part.next_batch() == []
    inner.awake = later  # reached its end: wants to be called in an hour
    assert part.next_batch() == [batch(1)]
    assert inner.calls == 1  # not read early
    assert part.next_awake() == later


def test_a_flow_through_the_source_sees_every_batch_in_order_decoded() -> None:
    catalog = load_catalog()
    decoder = Decoder(catalog, EngineSettings())
    message = b'{"event_id":"e%d","client_id":"c","ts":1767225600000,"channel":"app","type":"x"}'
    batches = [RawBatch("p", [message % i], i) for i in range(5)]
    got: list[int] = []

    flow = Dataflow("read_ahead")
    raw = op.input("in", flow, ReadAheadSource(TestingSource(batches), decoder.start))
    decoded = op.map("decode", raw, decoder)
    op.output(
        "out", op.map("offsets", decoded, lambda d: int(d.events.offset[0])), TestingSink(got)
    )
    run_main(flow)
    assert got == [0, 1, 2, 3, 4]
    assert decoder._ahead == {}  # every started batch was taken  # noqa: SLF001
