"""JSON-lines file sink, exactly-once across Bytewax recovery.

Install: nothing beyond ato-stream. Use: ``JsonLinesSink(path)`` takes ``(key, line_bytes)``
items, each line ending in a newline. How it works: one partition (one writer) appends whole
batches; at each epoch boundary it flushes and snapshots its file size and the SHA-256 of
the bytes just before it. Delivery guarantee: on resume the file is truncated back to the
snapshotted size and the replayed epoch writes the same lines again, so the file holds every
line exactly once. A file whose bytes before that size differ (another run's file: a resume
into another --out) is refused, not cut. Failing writes (a full disk) fail the run with an
error naming the file.
"""

import contextlib
import hashlib
import os
from pathlib import Path

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from sinks.exceptions import SinkError

TAIL_BYTES = 4_096  # the bytes before a snapshot's end that it names by their SHA-256
# the snapshot: the file's size, and the SHA-256 of its last TAIL_BYTES bytes (older
# snapshots hold the size alone)
Position = tuple[int, str]


def _tail_sha256(fd: int, size: int) -> str:
    """SHA-256 of the (up to) ``TAIL_BYTES`` bytes before ``size`` of the open file ``fd``."""
    start = max(size - TAIL_BYTES, 0)
    return hashlib.sha256(os.pread(fd, size - start, start)).hexdigest()


class _JsonLinesPartition(StatefulSinkPartition[bytes, Position]):
    def __init__(
        self, path: Path, resume: Position | int | None, close_failures: list[SinkError]
    ) -> None:
        self.path = path
        self.close_failures = close_failures
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "a+b")  # noqa: SIM115 - closed by close(); read: tail hash
            size = self.file.seek(0, os.SEEK_END)
        except OSError as exc:
            msg = f"cannot open {path}: {exc}"
            raise SinkError(msg) from exc
        resume_size, tail = (resume, None) if not isinstance(resume, tuple) else resume
        if resume_size is not None and resume_size > size:
            self.file.close()
            msg = (
                f"cannot resume {path}: the snapshot covers {resume_size} bytes but the file"
                f" holds {size} (was it removed, cut, or is --out another directory?)"
            )
            raise SinkError(msg)
        if resume_size is not None and tail is not None:
            if _tail_sha256(self.file.fileno(), resume_size) != tail:
                self.file.close()
                msg = (
                    f"cannot resume {path}: its bytes before the snapshot's end ({resume_size})"
                    " are not what the run wrote (is --out another run's directory?)"
                )
                raise SinkError(msg)
        self.file.truncate(resume_size or 0)
        self.file.seek(0, os.SEEK_END)
        self.failed = False  # a write failed: the run stops, and close() must not raise again

    def write_batch(self, values: list[bytes]) -> None:
        try:
            self.file.write(b"".join(values))
        except OSError as exc:
            raise self._failure(exc) from exc

    def snapshot(self) -> Position:
        self._flush()  # what the snapshot covers survives a host crash
        size = self.file.tell()
        return size, _tail_sha256(self.file.fileno(), size)

    def close(self) -> None:
        """Flush and close, never raising: Bytewax closes partitions also as it unwinds from
        another failure, and an error raised then aborts the process. A failed flush is kept
        for :meth:`JsonLinesSink.raise_failure`."""
        try:
            if not self.failed:
                self._flush()
        except SinkError as exc:
            self.close_failures.append(exc)
        finally:
            with contextlib.suppress(OSError):  # a failed flush raised already
                self.file.close()

    def _flush(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as exc:
            raise self._failure(exc) from exc

    def _failure(self, exc: OSError) -> SinkError:
        self.failed = True
        return SinkError(f"cannot write to {self.path}: {exc}")


class JsonLinesSink(FixedPartitionedSink[bytes, Position]):
    """Appends lines to ``path``; a fresh run (no resume state) starts the file empty."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.close_failures: list[SinkError] = []

    def raise_failure(self) -> None:
        """Once the run has ended: raise the first failure of a partition's last flush (a
        full disk at the end loses the last lines; the run must not end as if it had not)."""
        if self.close_failures:
            raise self.close_failures[0]

    def list_parts(self) -> list[str]:
        """One partition: the file."""
        return [self.path.name]

    def build_part(
        self, step_id: str, for_part: str, resume_state: Position | int | None
    ) -> _JsonLinesPartition:
        """Open the file, cut back to the resume position."""
        return _JsonLinesPartition(self.path, resume_state, self.close_failures)
