"""JSON-lines file sink, exactly-once across Bytewax recovery.

Install: nothing beyond ato-stream. Use: ``JsonLinesSink(path)`` takes ``(key, line_bytes)``
items, each line ending in a newline. How it works: one partition (one writer) appends whole
batches; at each epoch boundary it flushes and snapshots its file size. Delivery guarantee:
on resume the file is truncated back to the snapshotted size and the replayed epoch writes
the same lines again, so the file holds every line exactly once.
"""

import os
from pathlib import Path

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from sinks.exceptions import SinkError


class _JsonLinesPartition(StatefulSinkPartition[bytes, int]):
    def __init__(self, path: Path, resume_size: int | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = open(path, "ab")  # noqa: SIM115 - closed by close()
        size = self.file.seek(0, os.SEEK_END)
        if resume_size is not None and resume_size > size:
            self.file.close()
            msg = (
                f"cannot resume {path}: the snapshot covers {resume_size} bytes but the file"
                f" holds {size} (was it removed, cut, or is --out another directory?)"
            )
            raise SinkError(msg)
        self.file.truncate(resume_size or 0)
        self.file.seek(0, os.SEEK_END)

    def write_batch(self, values: list[bytes]) -> None:
        try:
            self.file.write(b"".join(values))
        except OSError as exc:
            msg = f"cannot write to {self.path}: {exc}"
            raise SinkError(msg) from exc

    def snapshot(self) -> int:
        self.file.flush()
        os.fsync(self.file.fileno())  # what the snapshot covers survives a host crash
        return self.file.tell()

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


class JsonLinesSink(FixedPartitionedSink[bytes, int]):
    """Appends lines to ``path``; a fresh run (no resume state) starts the file empty."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def list_parts(self) -> list[str]:
        """One partition: the file."""
        return [self.path.name]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _JsonLinesPartition:
        """Open the file, cut back to the resume position."""
        return _JsonLinesPartition(self.path, resume_state)
