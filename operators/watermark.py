"""Event-time watermark over input partitions (BRIEF §3).

``watermark = min over active partitions of (partition max event time - allowed lateness)``.
A partition is *idle*, and stops holding the watermark back, when it has delivered no valid
event for ``idle_timeout_ms`` and either its source said it is caught up (it read everything
there was: a live input with nothing new; an *unsure* report, a broker gone, undoes that)
and keeps saying so (its last report within ``report_timeout_ms``, unless it said it
*ended*: it reads nothing more), or it keeps delivering only bad messages (for a
whole ``idle_timeout_ms``, the last of them within it). Silence
alone never makes a partition idle: a source that is merely behind (another process catching
up, a worker held back by Bytewax's epoch gating) still has events queued, and releasing the
watermark past them would make them late; a caught-up source held back that way stops
reporting, so it holds the watermark again. A partition never heard of holds the watermark.
When every partition is idle, a live clock lets the watermark follow the wall clock (minus
the lateness); a replay clock keeps it where it is. The watermark never goes back. With a
live clock a partition's event time counts at most up to the wall clock when it reports, so
the watermark never runs ahead of the wall clock: an event stamped in the future waits,
pending, until the wall clock reaches it, and the on-time events around it are not late.
Replayed, the time a batch arrived at the source system (Kafka's message timestamp, when
the source knows it) plays the wall clock's part, so a replay finds the same events late as
the live run did.

Idleness is timed on an *idle clock*: wall time, except that one gap between two calls counts
at most ``max_gap_ms``. A worker blocked for seconds (a kernel compiling, a long batch in
another shard, a GC pause) could not hear from any partition meanwhile, so that pause must
not make a partition look idle.
"""

from dataclasses import dataclass
from typing import Any

MIN_WATERMARK = -(2**62)


@dataclass
class _Partition:
    max_ts: int | None
    last_valid_ms: int  # idle clock of the last batch with a valid event
    last_report_ms: int | None = None  # idle clock of the last batch of any kind
    caught_up: bool = False  # what the source said with its last batch
    bad_since_ms: int | None = None  # idle clock of the first batch of only bad messages
    # since the last valid event (None: none since)
    ended: bool = False  # its source reads nothing more from it

    def idle(self, idle_now: int, timeout: int, report_timeout: int | None = None) -> bool:
        if self.last_report_ms is None or idle_now - self.last_valid_ms < timeout:
            return False
        if self.ended:
            return True
        if self.caught_up:  # and still saying so: not a source held back since it said it
            return report_timeout is None or idle_now - self.last_report_ms < report_timeout
        # only bad messages for a whole timeout, the last of them within it: one bad batch
        # and then silence is a source that is behind, not one that keeps sending bad input
        return (
            self.bad_since_ms is not None
            and idle_now - self.bad_since_ms >= timeout
            and idle_now - self.last_report_ms < timeout
        )


class WatermarkTracker:
    """Tracks per-partition event time and derives the watermark; the clock is passed in."""

    def __init__(
        self,
        partitions: list[str],
        allowed_lateness_ms: int,
        idle_timeout_ms: int,
        live: bool,
        now_ms: int,
        max_gap_ms: int | None = None,
        report_timeout_ms: int | None = None,
    ) -> None:
        self.lateness = allowed_lateness_ms
        self.idle_timeout = idle_timeout_ms
        self.live = live
        self.max_gap = max_gap_ms
        # a caught-up partition idles only while it reported within this (None: for ever)
        self.report_timeout = report_timeout_ms
        self.idle_ms = 0  # the idle clock
        self.last_wall_ms = now_ms
        self.parts = {p: _Partition(None, 0) for p in partitions}
        self.current = MIN_WATERMARK

    def elapse(self, now_ms: int) -> int:
        """Move the idle clock to wall time ``now_ms`` (one gap counts at most ``max_gap_ms``)."""
        gap = max(0, now_ms - self.last_wall_ms)
        if self.max_gap is not None:
            gap = min(gap, self.max_gap)
        self.idle_ms += gap
        self.last_wall_ms = max(self.last_wall_ms, now_ms)
        return self.idle_ms

    def observe(
        self,
        partition: str,
        max_ts: int | None,
        now_ms: int,
        caught_up: bool = False,
        arrived_ms: int | None = None,
        unsure: bool = False,
        ended: bool = False,
    ) -> None:
        """Record that ``partition`` delivered a batch whose greatest event time is ``max_ts``.

        ``caught_up``: the source had nothing more to read for it after this batch.
        ``arrived_ms``: when the batch's newest message reached the source system (Kafka's
        message timestamp), if known: replayed, event time counts at most up to it.
        ``unsure``: an empty report that the source cannot tell whether more is there (its
        broker does not answer): not caught up, and not bad input either.
        ``ended``: the source's last batch of the partition: it reads nothing more from it.
        """
        idle_now = self.elapse(now_ms)
        part = self.parts.get(partition)
        if part is None:
            part = self.parts[partition] = _Partition(None, idle_now)
        part.last_report_ms = idle_now
        part.caught_up = caught_up
        part.ended = part.ended or ended
        if unsure:
            part.caught_up = False
            return
        if max_ts is None:  # a batch without valid events is no sign of event-time progress
            if part.bad_since_ms is None and not caught_up:  # an empty read is not bad input
                part.bad_since_ms = idle_now
            return
        part.last_valid_ms = idle_now
        part.bad_since_ms = None
        if self.live:
            # live, event time cannot be ahead of the wall clock: an event stamped ahead (a
            # skewed device clock) counts as now, else it would hold its partition's event
            # time there and make every on-time event after it late
            max_ts = min(max_ts, now_ms)
        elif arrived_ms is not None:
            # replayed, the same for the time the batch arrived then: an event stamped hours
            # ahead would otherwise move the watermark past the on-time events after it, and
            # the replay would differ from the live run
            max_ts = min(max_ts, arrived_ms)
        if part.max_ts is None or max_ts > part.max_ts:
            part.max_ts = max_ts

    def advance(self, now_ms: int) -> int:
        """Recompute the watermark at wall time ``now_ms`` and return it."""
        idle_now = self.elapse(now_ms)
        timeouts = (self.idle_timeout, self.report_timeout)
        active = [p for p in self.parts.values() if not p.idle(idle_now, *timeouts)]
        if active:
            if all(p.max_ts is not None for p in active):
                candidate = min(p.max_ts for p in active if p.max_ts is not None) - self.lateness
            else:
                candidate = MIN_WATERMARK
        elif self.live:
            candidate = now_ms - self.lateness
        else:
            candidate = self.current
        self.current = max(self.current, candidate)
        return self.current

    def is_late(self, ts: int) -> bool:
        """Whether an event at ``ts`` is behind the watermark."""
        return ts < self.current

    def final(self) -> int:
        """The watermark once every input has ended: the greatest event time seen."""
        greatest = self.max_event_ts()
        if greatest is not None:
            self.current = max(self.current, greatest)
        return self.current

    def max_event_ts(self) -> int | None:
        """Greatest event time seen on any partition."""
        seen = [p.max_ts for p in self.parts.values() if p.max_ts is not None]
        return max(seen) if seen else None

    def snapshot(self) -> dict[str, Any]:
        """Picklable state; wall-clock idleness is not kept across restarts."""
        return {"current": self.current, "max_ts": {k: p.max_ts for k, p in self.parts.items()}}

    def restore(self, snap: dict[str, Any], now_ms: int) -> None:
        """Resume from :meth:`snapshot`; every partition holds until its source reports."""
        self.current = snap["current"]
        idle_now = self.elapse(now_ms)
        for name, max_ts in snap["max_ts"].items():
            self.parts[name] = _Partition(max_ts, idle_now)
