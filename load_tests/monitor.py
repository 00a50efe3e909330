"""What ``ato loadtest`` watches while a run goes: the interventions topic and the processes."""

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# librdkafka logs every failed connection; the harness reports broker failures in one line
QUIET = logging.getLogger("load_tests.librdkafka")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


class InterventionReader(threading.Thread):
    """Reads the interventions topic from the beginning: per message its topic timestamp,
    intervention id and stall deadline (both ms)."""

    def __init__(self, brokers: str, topic: str, partitions: int) -> None:
        super().__init__(name="intervention-reader", daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": brokers,
                "group.id": f"{topic}.loadtest-reader",
                "enable.auto.commit": False,
                "fetch.queue.backoff.ms": 10,
                "logger": QUIET,
            }
        )
        self.consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self.topic_ms: list[int] = []
        self.ids: list[str] = []
        self.deadlines: list[int] = []
        self.errors: list[str] = []
        self.last_message = time.monotonic()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for message in self.consumer.consume(10_000, timeout=0.2):
                if message.error() is not None:
                    self.errors.append(str(message.error()))
                    continue
                doc = orjson.loads(message.value() or b"{}")
                self.topic_ms.append(message.timestamp()[1])
                self.ids.append(doc["intervention_id"])
                self.deadlines.append(doc["deadline_ts"])
                self.last_message = time.monotonic()
        self.consumer.close()

    def stop(self) -> None:
        """Stop reading now (a run that failed)."""
        self._halt.set()
        self.join(5)

    def drain(self, quiet_s: float = 2.0, limit_s: float = 30.0) -> None:
        """Wait until no message came for ``quiet_s`` (at most ``limit_s``), then stop."""
        started = time.monotonic()
        while time.monotonic() - max(self.last_message, started) < quiet_s:
            if time.monotonic() - started > limit_s:
                break
            time.sleep(0.1)
        self._halt.set()
        self.join()


def read_proc(pid: int) -> tuple[float, float, float] | None:
    """(RSS MB, peak RSS MB, CPU seconds) of a live process, else None."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    kb = {}
    for line in status.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            kb[line[:5]] = int(line.split()[1])
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
    return kb.get("VmRSS", 0) / 1024, kb.get("VmHWM", 0) / 1024, cpu


def children(pid: int) -> list[int]:
    """Every descendant process of ``pid``."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class ProcessWatch:
    """Peak RSS and CPU time per process role, sampled while the run goes."""

    pids: dict[str, int] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    first: dict[str, tuple[float, float]] = field(default_factory=dict)  # (time, CPU s)
    last: dict[str, tuple[float, float]] = field(default_factory=dict)

    def watch(self, role: str, pid: int) -> None:
        """Follow ``pid`` under ``role``."""
        self.pids[role] = pid

    def sample(self) -> None:
        """Read every followed live process."""
        now = time.monotonic()
        for role, pid in self.pids.items():
            got = read_proc(pid)
            if got is None:
                continue
            _rss, peak, cpu = got
            self.peak_rss_mb[role] = max(self.peak_rss_mb.get(role, 0.0), peak)
            self.first.setdefault(role, (now, cpu))
            self.last[role] = (now, cpu)

    def summary(self) -> list[dict[str, object]]:
        """One row per role: pid, peak RSS (MB), CPU seconds used while watched and CPU %
        (100 = one core busy) over that time."""
        rows: list[dict[str, object]] = []
        for role, pid in self.pids.items():
            (t0, cpu0), (t1, cpu1) = self.first.get(role, (0, 0)), self.last.get(role, (0, 0))
            rows.append(
                {
                    "role": role,
                    "pid": pid,
                    "peak_rss_mb": round(self.peak_rss_mb.get(role, 0.0), 1),
                    "cpu_s": round(cpu1 - cpu0, 1),
                    "cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 1) if t1 > t0 else None,
                }
            )
        return rows
