"""Run progress: counters fed by the flow, a progress line on the terminal, a final summary."""

import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from operators.shard_levels import ShardLevels


@dataclass
class RunStats:
    """Counters of one process's run; sinks on every worker thread add to it."""

    events_in: int = 0
    dead_letters: int = 0
    applied: int = 0
    late: int = 0
    interventions: int = 0
    max_event_ts: int | None = None
    levels: ShardLevels = field(default_factory=ShardLevels)
    redis_outages: int = 0  # Redis outages met by each shard's live state and policy step
    started: float = field(default_factory=time.perf_counter)  # the flow's start (set by the run)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, item: dict[str, Any]) -> None:
        """Add one progress item (from the decode step or a shard step)."""
        with self.lock:
            self.events_in += item.get("in", 0)
            self.dead_letters += item.get("dead", 0)
            self.applied += item.get("applied", 0)
            self.late += item.get("late", 0)
            self.interventions += item.get("interventions", 0)
            ts = item.get("max_ts")
            if ts is not None and (self.max_event_ts is None or ts > self.max_event_ts):
                self.max_event_ts = ts
            if item.get("shard") is not None:
                self.levels.update(item)
                self.redis_outages += item.get("redis_outages", 0)

    def elapsed(self) -> float:
        """Seconds since the flow started (traffic generation and set-up before it do not
        count, as in the run summary's ``seconds``)."""
        return time.perf_counter() - self.started

    def line(self) -> str:
        """One progress line."""
        elapsed = max(self.elapsed(), 1e-9)
        wm = self.levels.slowest_watermark()
        if wm is not None and self.max_event_ts is not None and wm > 0:
            lag = f"{max(self.max_event_ts - wm, 0) / 1000:.1f}s"
        else:
            lag = "-"
        line = (
            f"[{elapsed:6.1f}s] events {self.events_in:,} ({self.events_in / elapsed:,.0f}/s)"
            f" | interventions {self.interventions:,} | dead letters {self.dead_letters:,}"
            f" | late {self.late:,} | watermark lag {lag}"
            f" | open {self.levels.total_open():,}"
            f" | state {self.levels.total_bytes() / 1e6:,.1f} MB"
        )
        waiting = self.levels.total_waiting()
        if self.redis_outages or waiting:
            line += f" | redis outages {self.redis_outages:,}, decisions waiting {waiting:,}"
        return line


class _ProgressPartition(StatelessSinkPartition[dict[str, Any]]):
    def __init__(self, stats: RunStats, out: TextIO | None, every_s: float) -> None:
        self.stats = stats
        self.out = out
        self.every_s = every_s
        self.last = time.perf_counter()

    def write_batch(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            self.stats.add(item)
        now = time.perf_counter()
        if self.out is not None and now - self.last >= self.every_s:
            self.last = now
            print(self.stats.line(), file=self.out, flush=True)


class ProgressSink(DynamicSink[dict[str, Any]]):
    """Adds progress items into ``stats``; prints a line every ``every_s`` seconds if ``out``."""

    def __init__(self, stats: RunStats, out: TextIO | None = None, every_s: float = 1.0):
        self.stats = stats
        self.out = out
        self.every_s = every_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProgressPartition:
        """One partition per worker, all adding into the same stats."""
        return _ProgressPartition(self.stats, self.out, self.every_s)
