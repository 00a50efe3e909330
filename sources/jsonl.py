"""Bytewax source over JSON-lines files: one partition per file, one event per line."""

from pathlib import Path

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from ato.exceptions import ConfigError
from operators.batches import RawBatch
from operators.decode import wall_ms


class _FilePartition(StatefulSourcePartition[RawBatch, int]):
    """Reads whole batches of lines; the snapshot is the byte offset of the next line."""

    def __init__(self, path: Path, batch_size: int, resume_offset: int | None) -> None:
        self.path = path
        self.batch_size = batch_size
        self.file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.offset = resume_offset or 0
        self.file.seek(self.offset)
        self.ended = False  # the end was reported (see next_batch)

    def next_batch(self) -> list[RawBatch]:
        lines: list[bytes] = []
        offsets: list[int] = []
        position = self.offset
        for line in self.file:
            offsets.append(position)
            position += len(line)
            body = line.rstrip(b"\r\n")
            lines.append(body)
            if len(lines) >= self.batch_size:
                break
        if not lines:
            if self.ended:
                raise StopIteration
            # once, at the end (an empty file too): caught up, so the watermark stops waiting
            # for this partition once it has been idle, instead of until every input ends
            self.ended = True
            return [RawBatch(self.path.name, [], self.offset, wall_ms(), caught_up=True)]
        self.offset = position
        keep = [i for i, body in enumerate(lines) if body.strip()]  # blank lines are no events
        if len(keep) != len(lines):
            lines = [lines[i] for i in keep]
            offsets = [offsets[i] for i in keep]
        return [RawBatch(self.path.name, lines, offsets[0] if offsets else 0, wall_ms(), offsets)]

    def snapshot(self) -> int:
        return self.offset

    def close(self) -> None:
        self.file.close()


class JsonLinesSource(FixedPartitionedSource[RawBatch, int]):
    """Each file is a partition; offsets on dead letters are byte offsets of the line."""

    def __init__(self, paths: list[Path], batch_size: int) -> None:
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

    def list_parts(self) -> list[str]:
        """One partition per file."""
        return list(self.paths)

    def input_partitions(self) -> list[str]:
        """Partition names the watermark waits for."""
        return self.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _FilePartition:
        """Open the file at the snapshotted offset."""
        return _FilePartition(self.paths[for_part], self.batch_size, resume_state)
