"""The JSON-lines file source: envelopes, lines too long to hold, a byte order mark, blank
lines, and a resume past the end of a file."""

import hashlib
from pathlib import Path

import pytest

from ato.catalog import load_catalog
from ato.config import EngineSettings
from ato.exceptions import RecoveryError
from operators.batches import RawBatch
from operators.decode import Decoder
from sources.jsonl import BOM, JsonLinesSource

NOW = 1_767_700_000_000
EVENT = b'{"event_id":"e%d","client_id":"C%d","ts":%d,"channel":"app","type":"x"}'


def event(i: int) -> bytes:
    return EVENT % (i, i, NOW - 1_000 + i)


def read_all(source: JsonLinesSource, name: str, resume: int | None = None) -> list[RawBatch]:
    part = source.build_part("in", name, resume)
    out: list[RawBatch] = []
    try:
        while True:
            out.extend(part.next_batch())
    except StopIteration:
        part.close()
    return out


def decode(batches: list[RawBatch]) -> tuple[list[int], list[tuple[str, int]]]:
    """Offsets of the events and (reason, offset) of the dead letters."""
    decoder = Decoder(load_catalog(), EngineSettings(), now_ms=lambda: NOW)
    events: list[int] = []
    dead: list[tuple[str, int]] = []
    for batch in batches:
        out = decoder(batch)
        events.extend(out.events.offset.tolist())
        dead.extend((d.reason, d.offset) for d in out.dead)
    return events, dead


def test_a_line_holding_a_json_array_is_split_into_its_events(tmp_path: Path) -> None:
    """As on the Kafka path (the README's input section says so of any input): its events
    share the line's offset, a bad element is dead-lettered alone."""
    envelope = b"[" + b", ".join([event(1), event(2), b'{"not": "an event"}']) + b"]"
    lines = [event(0), envelope, b" [" + event(3) + b"]", b"[]"]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    at = [0, len(lines[0]) + 1, len(lines[0]) + len(envelope) + 2]
    at.append(at[2] + len(lines[2]) + 1)
    events, dead = decode(read_all(JsonLinesSource([path], 100), "in.jsonl"))
    assert events == [at[0], at[1], at[1], at[2]]
    assert dead == [("missing_field", at[1]), ("not_object", at[3])]


def test_a_line_too_long_to_hold_is_dead_lettered_with_its_length_and_hash(
    tmp_path: Path,
) -> None:
    """A line past the bound is read no further than the bound at a time (a line of
    gigabytes, or a file with CR line endings, would have been held whole)."""
    long_line = b'{"event_id":"' + b"x" * 300_000 + b'"}'
    path = tmp_path / "in.jsonl"
    path.write_bytes(event(0) + b"\n" + long_line + b"\r\n" + event(1) + b"\n")
    source = JsonLinesSource([path], 100, max_line_bytes=1_000, max_envelope_bytes=1_000)
    batches = read_all(source, "in.jsonl")
    letters = [d for b in batches for d in b.unreadable]
    assert len(letters) == 1
    letter = letters[0]
    assert (letter.reason, letter.offset) == ("oversized", len(event(0)) + 1)
    doc = letter.to_doc()
    assert doc["raw_truncated"] is True
    assert doc["raw_bytes"] == len(long_line)
    assert doc["raw_sha256"] == hashlib.sha256(long_line).hexdigest()
    events, dead = decode(batches)
    assert events == [0, len(event(0)) + len(long_line) + 3]
    assert dead == [("oversized", len(event(0)) + 1)]
    # the last line of a file, without a line ending
    path.write_bytes(event(0) + b"\n" + long_line)
    letters = [d for b in read_all(source, "in.jsonl") for d in b.unreadable]
    assert letters[0].to_doc()["raw_bytes"] == len(long_line)


def test_a_byte_order_mark_at_the_start_of_a_file_is_not_part_of_its_first_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(BOM + event(0) + b"\r\n" + event(1) + b"\r\n")
    events, dead = decode(read_all(JsonLinesSource([path], 100), "in.jsonl"))
    assert events == [0, len(BOM) + len(event(0)) + 2]
    assert dead == []


def test_a_batch_of_blank_lines_is_no_end_of_file(tmp_path: Path) -> None:
    """Blank lines count towards a batch but hold no events: a batch of only blank lines
    must not end the file (nor may blank lines make a batch without bound)."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n" * 5 + event(0) + b"\n")
    batches = read_all(JsonLinesSource([path], 2), "in.jsonl")
    assert [(len(b.messages), b.caught_up) for b in batches] == [
        (0, False), (0, False), (1, False), (0, True),
    ]  # fmt: skip


def test_a_resume_past_the_end_of_its_file_is_refused(tmp_path: Path) -> None:
    """The file was cut or replaced by a shorter one since the snapshot: reading on from
    the snapshot's offset read nothing and the run ended as if it had finished."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(event(0) + b"\n")
    with pytest.raises(RecoveryError, match=r"reads on from byte 1,000, but the file holds"):
        JsonLinesSource([path], 100).build_part("in", "in.jsonl", 1_000)


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b""])
def test_a_line_exactly_at_the_bound_is_read_whole_whatever_its_line_ending(
    tmp_path: Path, ending: bytes
) -> None:
    """A CRLF line at the bound was cut after its CR and dead-lettered; a byte order mark
    does not count towards the first line's length."""
    line = event(0)
    path = tmp_path / "in.jsonl"
    for head in (b"", BOM):
        path.write_bytes(head + line + ending)
        source = JsonLinesSource([path], 100, max_line_bytes=len(line))
        batches = read_all(source, "in.jsonl")
        assert [m for b in batches for m in b.messages] == [line]
        assert [d for b in batches for d in b.unreadable] == []
        path.write_bytes(head + line + b"x" + ending)  # one byte past the bound
        letters = [d for b in read_all(source, "in.jsonl") for d in b.unreadable]
        assert [d.whole.size for d in letters if d.whole] == [len(line) + 1]
        assert letters[0].raw == line + b"x"


def test_an_envelope_after_a_carriage_return_is_split_alone_or_not(tmp_path: Path) -> None:
    """Whether a line starting with white space before its array is split did not depend
    on the line alone: only when another line of the batch started like an envelope."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\r[" + event(1) + b"," + event(2) + b"]\n")
    events, dead = decode(read_all(JsonLinesSource([path], 100), "in.jsonl"))
    assert events == [0, 0] and dead == []
