"""The JSON-lines file sink's resume: cut back to the snapshot, never padded."""

from pathlib import Path

import pytest

from sinks.exceptions import SinkError
from sinks.jsonl import JsonLinesSink


def test_resume_cuts_the_file_back_to_its_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"a\nb\nc\n")
    part = JsonLinesSink(path).build_part("step", path.name, 4)
    part.write_batch([b"x\n"])
    assert part.snapshot() == 6
    part.close()
    assert path.read_bytes() == b"a\nb\nx\n"


def test_resume_past_the_end_of_the_file_is_an_error_not_padding(tmp_path: Path) -> None:
    """A file removed or cut since the snapshot (or another --out) would lose lines."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"a\n")
    with pytest.raises(SinkError, match=r"snapshot covers 100 bytes but the file holds 2"):
        JsonLinesSink(path).build_part("step", path.name, 100)
    assert path.read_bytes() == b"a\n"
