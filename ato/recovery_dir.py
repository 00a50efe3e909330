"""Bytewax recovery directories: create them, and clear what an aborted run left before a resume.

Bytewax 0.21 resumes from the *resume epoch* R: the last epoch every worker of the latest
execution finished. For each (step, key) it loads the newest snapshot from before R. Snapshots
that an aborted execution wrote at R or later stay in the database. The resumed execution
overwrites only those of keys it wakes in the same epochs (Bytewax snapshots a key only in an
epoch in which it was woken). A key it leaves alone in epoch E keeps the aborted execution's
snapshot at E. Once the resumed execution finishes E, the *next* resume loads that snapshot:
state from a timeline that was rolled back, next to the other steps' state from the replayed
one. The SIGKILL recovery test caught it: the funnel step restored shard watermarks an hour
ahead of the shards' own, and closed the same minutes twice.

:func:`drop_unfinished_snapshots` deletes every snapshot at or after R before a resume. This
resume can load none of them, and the resumed execution writes again every one it needs.
"""

import hashlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path

import orjson
from bytewax.recovery import init_db_dir

from ato.exceptions import RecoveryError

LIVE_START_FILE = "live_start_ms"  # beside Bytewax's *.sqlite3 files, which it never opens
GENERATOR_FILE = "generator.json"
KAFKA_TOPICS_FILE = "kafka_topics.json"
STATE_LAYOUT_FILE = "state_layout.json"  # engine.shards, engine.lanes, the catalog's codes
INPUT_FILES_FILE = "input_files.json"
OUT_DIR_FILE = "out_dir"  # + ".<process id>": the output directory a run's snapshots cover
# the record each kind of input keeps in a recovery directory
INPUT_RECORDS = {"files": INPUT_FILES_FILE, "generator": GENERATOR_FILE, "kafka": KAFKA_TOPICS_FILE}
HEAD_BYTES = 65_536  # an input file is known again by the SHA-256 of its first bytes
INPUT_STEP = "journeys.input"  # the flow's input step, whose state keys are the partitions


def _recorded(file: Path, value: bytes) -> bytes:
    """What ``file`` holds; if it does not exist yet, ``value``, recorded in it first (whole:
    the processes of a cluster may race to record the same value)."""
    try:
        return file.read_bytes()
    except FileNotFoundError:
        _replace(file, value)
        return value


def live_start_ms(path: Path, now_ms: int) -> int:
    """Event time of the first generated event of a live run recovering into ``path``: the
    one the run that made the directory recorded, else ``now_ms`` (recorded now). The
    generator makes the same traffic again from it, so the positions in the snapshots point
    at the same events. ``path`` must be prepared (:func:`prepare_recovery_dir`)."""
    file = path / LIVE_START_FILE
    try:
        return int(_recorded(file, str(now_ms).encode()))
    except ValueError as exc:
        msg = f"{file}: not a start time ({exc}); remove it only with the whole directory"
        raise RecoveryError(msg) from exc


def check_generator_options(path: Path, options: dict[str, object]) -> None:
    """Record in ``path`` the options that shape a run's generated traffic, or refuse a
    resumed run whose options differ: it would generate other traffic, so the snapshots'
    positions would point into it (late events, missed stalls). ``path`` must be prepared."""
    file = path / GENERATOR_FILE
    try:
        recorded = orjson.loads(_recorded(file, orjson.dumps(options)))
    except orjson.JSONDecodeError as exc:
        msg = f"{file}: not generator options ({exc}); remove it only with the whole directory"
        raise RecoveryError(msg) from exc
    differ = [
        f"{name} {recorded.get(name, '(none)')!r} -> {options.get(name, '(none)')!r}"
        for name in sorted(recorded.keys() | options.keys())
        if recorded.get(name) != options.get(name)
    ]
    if differ:
        msg = (
            f"{path} holds a run of other generated traffic ({', '.join(differ)}); resume it"
            " with the same generator options, or use a new --recovery-dir"
        )
        raise RecoveryError(msg)


def check_state_layout(path: Path, layout: dict[str, object], fresh: bool) -> None:
    """Record the layout of a ``fresh`` run's shard state in ``path`` (``shards``, ``lanes``
    and the catalog's codes fingerprint, ``catalog``), or refuse a resumed run whose layout
    differs, before its flow starts. Each shard refuses such a snapshot too, but in a
    cluster that refusal ended in Bytewax panics naming nothing. A directory from before
    this record is left to the shards' own check. ``path`` must be prepared."""
    file = path / STATE_LAYOUT_FILE
    if fresh:
        _replace(file, orjson.dumps(layout))
        return
    try:
        recorded = orjson.loads(file.read_bytes())
    except FileNotFoundError:
        return
    except orjson.JSONDecodeError as exc:
        msg = f"{file}: not a state layout ({exc}); remove it only with the whole directory"
        raise RecoveryError(msg) from exc
    for name in ("shards", "lanes"):
        taken = recorded.get(name)
        if taken != layout[name]:
            msg = (
                f"{path} holds a run with engine.{name} = {taken}, this run has"
                f" {layout[name]}: resume with the same {name} (--{name} {taken}), or use a"
                " new --recovery-dir"
            )
            raise RecoveryError(msg)
    if recorded.get("catalog") != layout["catalog"]:
        msg = (
            f"{path} holds a run of another journey catalog (its journeys, steps or event"
            " types differ from this run's): resume with that catalog, or use a new"
            " --recovery-dir"
        )
        raise RecoveryError(msg)


def check_out_dir(path: Path, out: Path | None, fresh: bool, process_id: int = 0) -> None:
    """Record the output directory of a ``fresh`` run's process ``process_id`` (``out``;
    None: outputs elsewhere, as Kafka topics), or refuse a resumed run whose process writes
    to another: the resume cuts each output file back to its snapshot's size, and a file
    that was still empty then has no bytes to tell another run's file by, so a wrong
    ``--out`` emptied another run's files. One record per process (``out_dir.<id>``): the
    processes of a cluster on several machines may write to different paths. A directory
    from before this record is not checked. ``path`` must be prepared."""
    file = path / f"{OUT_DIR_FILE}.{process_id}"
    where = str(out.resolve()) if out is not None else ""
    if fresh:
        _replace(file, where.encode())
        return
    if not file.exists():
        return
    recorded = file.read_text(errors="replace")
    if recorded != where:
        msg = (
            f"{path} holds a run whose outputs went to {recorded or 'Kafka topics'}, not to"
            f" {where or 'Kafka topics'} as this run's do: resume with the same --out, or use"
            " a new --recovery-dir"
        )
        raise RecoveryError(msg)


def check_input_topics(path: Path, topics: Sequence[str], fresh: bool) -> None:
    """Refuse a resumed run over ``path`` that does not read a topic whose partitions' read
    positions the snapshots hold: Bytewax cannot resume the snapshot of a partition no
    worker lists (it stopped with a panic). The partitions of a topic added on resume are
    read from their earliest offsets. Records the topics (``kafka_topics.json``, which tells
    a Kafka run's directory from the others'). ``path`` must be prepared."""
    wanted = sorted(set(topics))
    if not fresh:
        # a partition's key is "topic#N", and topic names hold no "#"
        held = {key.rsplit("#", 1)[0] for key in input_positions(path)}
        missing = sorted(held - set(wanted))
        if missing:
            msg = (
                f"{path} holds the read positions of topics {missing}, which"
                " kafka.input_topics no longer lists; resume with them, or use a new"
                " --recovery-dir"
            )
            raise RecoveryError(msg)
    _replace(path / KAFKA_TOPICS_FILE, orjson.dumps(wanted))


def check_input_partitions(path: Path, partitions: Sequence[str], fresh: bool) -> None:
    """Refuse a resumed run over ``path`` whose input topics no longer have every partition
    (``topic#N``) whose read position the snapshots hold: a topic made again with fewer
    partitions stopped Bytewax with a panic ("not in this worker's routing map")."""
    if fresh:
        return
    gone = sorted(input_positions(path) - set(partitions), key=_partition_order)
    if gone:
        msg = (
            f"{path} holds the read positions of partitions {gone}, which the input topics"
            " no longer have (a topic made again with fewer partitions?); use a new"
            " --recovery-dir"
        )
        raise RecoveryError(msg)


def _partition_order(key: str) -> tuple[str, int]:
    topic, _, number = key.rpartition("#")
    return topic, int(number) if number.isdigit() else -1


def check_input_kind(path: Path, kind: str, fresh: bool) -> None:
    """Refuse to resume a run of ``kind`` input (``files``, ``generator``, ``kafka``) from
    ``path`` when it holds a run of another kind (Bytewax stopped with a panic on the
    snapshots of partitions this run does not list); a ``fresh`` run drops the records of
    other kinds, which it does not resume. ``path`` must be prepared."""
    others = {other: path / name for other, name in INPUT_RECORDS.items() if other != kind}
    if fresh:
        for file in others.values():
            file.unlink(missing_ok=True)
        return
    held = sorted(other for other, file in others.items() if file.exists())
    if held and not (path / INPUT_RECORDS[kind]).exists():
        msg = (
            f"{path} holds a run that read {held[0]} input, and this run reads {kind} input;"
            " resume it with the same input, or use a new --recovery-dir"
        )
        raise RecoveryError(msg)


def file_head_sha256(file: Path, size: int = HEAD_BYTES) -> tuple[int, str]:
    """How many of ``file``'s first ``size`` bytes it holds, and their SHA-256."""
    with file.open("rb") as f:
        head = f.read(size)
    return len(head), hashlib.sha256(head).hexdigest()


def check_input_files(path: Path, files: Sequence[Path], fresh: bool) -> None:
    """Refuse a resumed run over ``path`` that lacks an input file whose read position the
    snapshots hold (Bytewax stopped with a panic), or whose file of that name starts
    otherwise than the file the run read (replaced or rotated: the positions would point
    into other lines). Files are known by the SHA-256 of their first bytes, recorded when a
    run first reads them (``input_files.json``); a file added on resume is read from its
    start. ``path`` must be prepared."""
    file = path / INPUT_FILES_FILE
    heads = {}
    for input_file in files:
        size, digest = file_head_sha256(input_file)
        heads[input_file.name] = {"head_bytes": size, "head_sha256": digest}
    if fresh:
        _replace(file, orjson.dumps(heads))
        return
    read = input_positions(path)
    missing = sorted(read - set(heads))
    if missing:
        msg = (
            f"{path} holds the read positions of input files {missing}, which this run does not"
            " read; resume with them, or use a new --recovery-dir"
        )
        raise RecoveryError(msg)
    try:
        recorded = orjson.loads(file.read_bytes()) if file.exists() else {}
        known = {
            str(name): (int(h["head_bytes"]), str(h["head_sha256"]))
            for name, h in recorded.items()
            if name in read
        }
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        msg = (
            f"{file}: not a record of input files ({exc!r}); remove it only with the whole"
            " directory"
        )
        raise RecoveryError(msg) from exc
    by_name = {f.name: f for f in files}
    for name, (size, digest) in sorted(known.items()):
        if file_head_sha256(by_name[name], size) != (size, digest):
            msg = (
                f"input file {by_name[name]} does not start as the file {name} the run in"
                f" {path} read (its first {size:,} bytes differ): it was replaced or"
                " rotated, so the run's read positions would point into other lines; resume"
                " with the file it read, or use a new --recovery-dir"
            )
            raise RecoveryError(msg)
    # files read before keep their record; the others are (again) read from their start
    now = {**heads, **{name: recorded[name] for name in known}}
    if now != recorded:
        _replace(file, orjson.dumps(now))


def input_positions(path: Path) -> set[str]:
    """Input partitions whose read position a resume from ``path`` loads: the newest
    snapshot of the input step's key before :func:`resume_epoch` holds a state (not a
    discarded one)."""
    epoch = resume_epoch(path)
    if epoch is None:
        return set()
    keys: set[str] = set()
    for part in part_files(path):
        with _open(part) as db:
            rows = db.execute(
                "SELECT state_key, ser_change IS NOT NULL FROM snaps AS s"
                " WHERE step_id = ? AND snap_epoch = (SELECT max(snap_epoch) FROM snaps"
                " WHERE step_id = s.step_id AND state_key = s.state_key AND snap_epoch < ?)",
                (INPUT_STEP, epoch),
            )
            keys.update(str(key) for key, held in rows if held)
    return keys


def _replace(file: Path, value: bytes) -> None:
    """Write ``file`` whole (through a file of this process's own, then a rename)."""
    part = file.with_name(f"{file.name}.{os.getpid()}")
    part.write_bytes(value)
    os.replace(part, file)


def prepare_recovery_dir(path: Path) -> None:
    """Create and initialise a Bytewax recovery directory unless it is one already. An
    existing empty directory is initialised (Bytewax failed on it: "no recovery
    partitions"); a file, or a directory of other files, is refused."""
    if not path.exists():
        path.mkdir(parents=True)
    elif not path.is_dir():
        msg = f"{path}: not a directory; give --recovery-dir a new or empty directory"
        raise RecoveryError(msg)
    elif part_files(path):
        return
    elif any(path.iterdir()):
        msg = (
            f"{path}: holds files but no recovery partitions (*.sqlite3): not a recovery"
            " directory; give --recovery-dir a new or empty directory"
        )
        raise RecoveryError(msg)
    init_db_dir(path, 1)


def part_files(path: Path) -> list[Path]:
    """The recovery partition files Bytewax opens in ``path`` (every ``*.sqlite3``)."""
    return sorted(p for p in path.iterdir() if p.suffix == ".sqlite3")


def resume_epoch(path: Path) -> int | None:
    """The epoch Bytewax will resume from, as its ``resume_from`` computes it over all
    partition files; None before the first execution."""
    executions: dict[int, tuple[int, int]] = {}  # ex_num: (worker_count, resume_epoch)
    fronts: dict[tuple[int, int], int] = {}  # (ex_num, worker): greatest frontier
    for part in part_files(path):
        with _open(part) as db:
            for ex_num, workers, epoch in db.execute(
                "SELECT ex_num, worker_count, resume_epoch FROM exs"
            ):
                executions[ex_num] = (workers, epoch)
            for ex_num, worker, frontier in db.execute(
                "SELECT ex_num, worker_index, worker_frontier FROM fronts"
            ):
                fronts[ex_num, worker] = max(frontier, fronts.get((ex_num, worker), frontier))
    if not executions:
        return None
    last = max(executions)
    workers, started_at = executions[last]
    return min(max(started_at, fronts.get((last, w), started_at)) for w in range(workers))


def has_snapshots(path: Path) -> bool:
    """Whether a partition file of ``path`` holds a snapshot a resume keeps (of an epoch
    before :func:`resume_epoch`; :func:`drop_unfinished_snapshots` drops the others): a run
    that resumes from it resumes something. A run killed before its first epoch was
    finished leaves an execution, perhaps snapshots of that epoch, and nothing to resume:
    the next run starts afresh."""
    epoch = resume_epoch(path) if path.is_dir() else None
    if epoch is None:
        return False
    for part in part_files(path):
        with _open(part) as db:
            kept = db.execute("SELECT 1 FROM snaps WHERE snap_epoch < ? LIMIT 1", (epoch,))
            if kept.fetchone() is not None:
                return True
    return False


def drop_unfinished_snapshots(path: Path) -> int:
    """Delete the snapshots of epochs no worker finished (at or after the resume epoch) from
    every partition file of ``path``; returns how many were deleted. Call it once before a
    resume, before any process of the flow writes a snapshot (the processes of a cluster
    wait for each other before their first epoch, so the first may call it)."""
    epoch = resume_epoch(path)
    if epoch is None:
        return 0
    dropped = 0
    for part in part_files(path):
        with _open(part) as db:
            dropped += db.execute("DELETE FROM snaps WHERE snap_epoch >= ?", (epoch,)).rowcount
    return dropped


@contextmanager
def _open(part: Path) -> Iterator[sqlite3.Connection]:
    """A connection to one partition file, committed and closed after use; SQLite errors
    name the file."""
    try:
        with closing(sqlite3.connect(part, timeout=30.0)) as db, db:
            yield db
    except sqlite3.Error as exc:
        msg = f"recovery file {part}: {exc} (is it a Bytewax recovery partition?)"
        raise RecoveryError(msg) from exc
