"""File and generator partitions say when they have ended, so the watermark stops waiting
for them (an empty or short file held every other file's events until all input ended)."""

from pathlib import Path

import pytest

from ato.catalog import load_catalog
from ato.config import GeneratorSettings
from ato.generator import generate
from operators.batches import RawBatch
from operators.watermark import WatermarkTracker
from sources.generator import GeneratorSource
from sources.jsonl import JsonLinesSource


def drain(part: object) -> list[RawBatch]:
    out: list[RawBatch] = []
    while True:
        try:
            out.extend(part.next_batch())  # type: ignore[attr-defined]
        except StopIteration:
            part.close()  # type: ignore[attr-defined]
            return out


def test_a_file_ends_with_one_caught_up_batch_and_an_empty_file_too(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(b'{"x": 1}\n{"x": 2}\n{"x": 3}\n')
    (tmp_path / "empty.jsonl").write_bytes(b"")
    source = JsonLinesSource([tmp_path / "a.jsonl", tmp_path / "empty.jsonl"], batch_size=2)
    a = drain(source.build_part("in", "a.jsonl", None))
    assert [(len(b.messages), b.caught_up) for b in a] == [(2, False), (1, False), (0, True)]
    assert [b.ended for b in a] == [False, False, True]  # its end: it idles for good
    assert a[-1].first_offset == len(b'{"x": 1}\n{"x": 2}\n{"x": 3}\n')
    empty = drain(source.build_part("in", "empty.jsonl", None))
    assert [(len(b.messages), b.caught_up) for b in empty] == [(0, True)]
    resumed = drain(source.build_part("in", "a.jsonl", a[-1].first_offset))
    assert [(len(b.messages), b.caught_up) for b in resumed] == [(0, True)]


def test_a_generator_partition_ends_with_one_caught_up_batch() -> None:
    traffic = generate(load_catalog(), GeneratorSettings(clients=20, partitions=2, span_s=600))
    source = GeneratorSource(traffic, 10_000, 0.0, False, None)
    for name in source.list_parts():
        batches = drain(source.build_part("in", name, None))
        assert batches[-1].messages == [] and batches[-1].caught_up and batches[-1].ended
        assert sum(len(b.messages) for b in batches) == len(traffic.partitions[name])


@pytest.mark.parametrize("short_ends", [True, False])
def test_an_ended_partition_stops_holding_the_watermark_once_idle(short_ends: bool) -> None:
    tracker = WatermarkTracker(["short", "long"], 0, idle_timeout_ms=1_000, live=False, now_ms=0)
    tracker.observe("short", 1_000, 0)
    tracker.observe("short", None, 10, caught_up=short_ends)  # its end, if it says so
    tracker.observe("long", 50_000, 20)
    tracker.observe("long", 90_000, 2_000)
    assert tracker.advance(2_000) == (90_000 if short_ends else 1_000)
