"""Bytewax source over JSON-lines files: one partition per file, one event per line.

A line holding a JSON array of events (a collector's envelope) is split into its events, as
on the Kafka path (:func:`sources.envelopes.expand_envelopes`). Lines are read up to
``max_line_bytes``: a longer one is never held whole; it becomes an ``oversized`` dead
letter with its first bytes, its length and its SHA-256. A UTF-8 byte order mark at the
start of a file is not part of its first line.
"""

import hashlib
import os
from pathlib import Path

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from ato.exceptions import ConfigError, RecoveryError
from operators.batches import RAW_KEPT_BYTES, DeadLetter, RawBatch, WholeMessage
from operators.decode import OVERSIZED, wall_ms
from sources.envelopes import MAY_START_ENVELOPE, expand_envelopes

BOM = b"\xef\xbb\xbf"
READ_CHUNK = 1 << 20  # the rest of a line too long to hold is read and hashed in these


class _FilePartition(StatefulSourcePartition[RawBatch, int]):
    """Reads whole batches of lines; the snapshot is the byte offset of the next line."""

    def __init__(
        self,
        path: Path,
        batch_size: int,
        resume_offset: int | None,
        max_line_bytes: int,
        max_envelope_bytes: int,
    ) -> None:
        self.path = path
        self.batch_size = batch_size
        self.max_line_bytes = max_line_bytes
        self.max_envelope_bytes = max_envelope_bytes
        self.file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.offset = resume_offset or 0
        size = os.fstat(self.file.fileno()).st_size
        if self.offset > size:
            self.file.close()
            msg = (
                f"input file {path}: the recovery snapshot reads on from byte {self.offset:,},"
                f" but the file holds {size:,} bytes (was it cut or replaced?); resume with the"
                " file the run read, or use a new --recovery-dir"
            )
            raise RecoveryError(msg)
        self.file.seek(self.offset)
        self.ended = False  # the end was reported (see next_batch)

    def next_batch(self) -> list[RawBatch]:
        lines: list[bytes] = []
        offsets: list[int] = []
        too_long: list[DeadLetter] = []
        position = self.offset
        for _ in range(self.batch_size):  # lines, blank ones too
            start = position
            if start == 0 and self.file.peek(len(BOM))[: len(BOM)] == BOM:
                self.file.seek(len(BOM))  # not part of the first line
                position = len(BOM)
            # room for the longest line whole and its line ending (CRLF)
            line = self.file.readline(self.max_line_bytes + 2)
            if not line:
                break
            position += len(line)
            if len(line) == self.max_line_bytes + 2 and not line.endswith(b"\n"):
                rest, letter = self._skip_long_line(line, start)
                position += rest
                too_long.append(letter)
                continue
            body = line.rstrip(b"\r\n")
            if len(body) > self.max_line_bytes:  # held, only just: the bound is the bound
                whole = WholeMessage(len(body), hashlib.sha256(body).hexdigest())
                too_long.append(self._too_long(body, whole, start))
                continue
            if body.strip():  # blank lines are no events
                lines.append(body)
                offsets.append(start)
        if position == self.offset:  # nothing left to read
            if self.ended:
                raise StopIteration
            # once, at the end (an empty file too): caught up, so the watermark stops waiting
            # for this partition once it has been idle, instead of until every input ends
            self.ended = True
            return [
                RawBatch(self.path.name, [], self.offset, wall_ms(), caught_up=True, ended=True)
            ]
        if any([line[:1] in MAY_START_ENVELOPE for line in lines]):
            lines, offsets = expand_envelopes(lines, offsets, self.max_envelope_bytes)
        first = min(offsets[:1] + [d.offset for d in too_long[:1]], default=self.offset)
        self.offset = position
        return [
            RawBatch(self.path.name, lines, first, wall_ms(), offsets, unreadable=tuple(too_long))
        ]

    def _skip_long_line(self, head: bytes, start: int) -> tuple[int, DeadLetter]:
        """Read the rest of a line longer than ``max_line_bytes`` (``head``: its first bytes)
        without holding it; its bytes past ``head``, and its dead letter."""
        digest = hashlib.sha256()
        size = 0  # bytes of the line without its line ending, hashed so far
        pending = b""  # a run of CRs that may end the line, not hashed yet
        chunk, rest = head, 0
        while True:
            data = pending + chunk
            if not chunk or chunk.endswith(b"\n"):  # the end of the line, or of the file
                body = data.rstrip(b"\r\n")
                digest.update(body)
                size += len(body)
                break
            held = data.rstrip(b"\r")
            digest.update(held)
            size += len(held)
            pending = data[len(held) :]
            chunk = self.file.readline(READ_CHUNK)
            rest += len(chunk)
        whole = WholeMessage(size, digest.hexdigest())
        return rest, self._too_long(head[:size], whole, start)

    def _too_long(self, head: bytes, whole: WholeMessage, start: int) -> DeadLetter:
        """The ``oversized`` dead letter of a line past ``max_line_bytes``: the first bytes of
        ``head`` (the line's start, without its line ending), and the line's length and
        SHA-256."""
        detail = f"line of {whole.size} bytes > {self.max_line_bytes}, the longest read whole"
        kept = head[:RAW_KEPT_BYTES]
        return DeadLetter(OVERSIZED, detail, kept, self.path.name, start, whole)

    def snapshot(self) -> int:
        return self.offset

    def close(self) -> None:
        self.file.close()


class JsonLinesSource(FixedPartitionedSource[RawBatch, int]):
    """Each file is a partition; offsets on dead letters are byte offsets of the line.

    ``max_line_bytes`` bounds the line read whole; ``max_envelope_bytes`` the line that is
    split when it holds a JSON array of events.
    """

    def __init__(
        self,
        paths: list[Path],
        batch_size: int,
        max_line_bytes: int = 16 << 20,
        max_envelope_bytes: int = 16 << 20,
    ) -> None:
        self.paths = {p.name: p for p in map(Path, paths)}
        if len(self.paths) != len(paths):
            names = [Path(p).name for p in paths]
            same = sorted({str(p) for p in paths if names.count(Path(p).name) > 1})
            msg = (
                "input files must have distinct names (a file's name is its partition, which"
                f" recovery and the watermark track): {', '.join(same)}; rename or link them"
            )
            raise ConfigError(msg)
        self.batch_size = batch_size
        self.max_line_bytes = max_line_bytes
        self.max_envelope_bytes = max_envelope_bytes

    def list_parts(self) -> list[str]:
        """One partition per file."""
        return list(self.paths)

    def input_partitions(self) -> list[str]:
        """Partition names the watermark waits for."""
        return self.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _FilePartition:
        """Open the file at the snapshotted offset."""
        return _FilePartition(
            self.paths[for_part],
            self.batch_size,
            resume_state,
            self.max_line_bytes,
            self.max_envelope_bytes,
        )
