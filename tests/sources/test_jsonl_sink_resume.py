"""The JSON-lines file sink's resume: cut back to the snapshot, never padded."""

import hashlib
from pathlib import Path

import pytest

from sinks.exceptions import SinkError
from sinks.jsonl import JsonLinesSink


def test_resume_cuts_the_file_back_to_its_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"a\nb\nc\n")
    part = JsonLinesSink(path).build_part("step", path.name, None)
    part.write_batch([b"a\n", b"b\n"])
    snapshot = part.snapshot()
    part.write_batch([b"c\n"])
    part.close()
    assert snapshot == (4, hashlib.sha256(b"a\nb\n").hexdigest())
    part = JsonLinesSink(path).build_part("step", path.name, snapshot)
    part.write_batch([b"x\n"])
    assert part.snapshot()[0] == 6
    part.close()
    assert path.read_bytes() == b"a\nb\nx\n"


def test_a_snapshot_of_the_size_alone_still_resumes(tmp_path: Path) -> None:
    """Snapshots written before the tail's hash was added hold the size alone."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"a\nb\nc\n")
    part = JsonLinesSink(path).build_part("step", path.name, 4)
    part.write_batch([b"x\n"])
    part.close()
    assert path.read_bytes() == b"a\nb\nx\n"


def test_resume_into_another_runs_longer_file_is_refused_not_cut(tmp_path: Path) -> None:
    """--out of another run, whose file is longer than the snapshot: cutting it at the
    snapshot's size left a line cut in the middle; it is refused and left as it is."""
    path = tmp_path / "out.jsonl"
    part = JsonLinesSink(path).build_part("step", path.name, None)
    part.write_batch([b'{"id":"first"}\n'])
    snapshot = part.snapshot()
    part.close()
    other = b'{"id":"another run"}\n{"id":"and more"}\n'
    path.write_bytes(other)
    with pytest.raises(SinkError, match=r"not what the run wrote \(is --out another run"):
        JsonLinesSink(path).build_part("step", path.name, snapshot)
    assert path.read_bytes() == other


def test_resume_past_the_end_of_the_file_is_an_error_not_padding(tmp_path: Path) -> None:
    """A file removed or cut since the snapshot (or another --out) would lose lines."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"a\n")
    with pytest.raises(SinkError, match=r"snapshot covers 100 bytes but the file holds 2"):
        JsonLinesSink(path).build_part("step", path.name, 100)
    assert path.read_bytes() == b"a\n"


def test_a_write_that_fails_at_a_snapshot_or_close_names_the_file(tmp_path: Path) -> None:
    """A full disk found when the buffered lines are flushed (at a snapshot, or at close):
    a SinkError naming the file, not an OSError Bytewax turns into an abort."""
    path = tmp_path / "out.jsonl"
    part = JsonLinesSink(path).build_part("step", path.name, None)
    part.write_batch([b"x\n"])
    part.file.close()  # swapped for /dev/full, where every write fails as on a full disk
    part.file = open("/dev/full", "ab")  # noqa: SIM115 - closed by part.close()
    part.write_batch([b"y\n"])  # buffered
    with pytest.raises(SinkError, match=r"cannot write to .*out.jsonl: .*No space left"):
        part.snapshot()
    part.close()  # after a failure: closes without raising again

    # close never raises (Bytewax may close while it unwinds from another failure, and an
    # error raised then aborted the process): the sink keeps it for after the run
    sink = JsonLinesSink(tmp_path / "last.jsonl")
    part = sink.build_part("step", "last.jsonl", None)
    part.file.close()
    part.file = open("/dev/full", "ab")  # noqa: SIM115
    part.write_batch([b"z\n"])
    sink.raise_failure()  # nothing failed yet
    part.close()
    with pytest.raises(SinkError, match=r"cannot write to .*last.jsonl: .*No space left"):
        sink.raise_failure()
