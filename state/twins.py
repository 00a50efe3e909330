"""Plain-Python twin of ``state/kernels.py``: the same semantics over dicts, one event at a time.

It is the readable statement of what the kernels do and the reference their parity tests
compare against (``tests/state/test_kernel_parity.py``). Records (stalls and outcomes) are
tuples in the order of ``state.layout.O_*`` then ``OF_*``, with the client hash in place of
the slot; effects are (effect, journey, step) per event.
"""

from dataclasses import dataclass, field

import numpy as np

from ato.catalog import FLAG_CALL, FLAG_ERROR, FLAG_SESSION, TERMINAL_SUCCESS, CatalogTables
from state.layout import (
    COUNTER_NAMES,
    EFFECT_ADVANCED,
    EFFECT_COMPLETED,
    EFFECT_COUNTED,
    EFFECT_FAILED,
    EFFECT_NONE,
    EFFECT_STARTED,
    KIND_OUTCOME,
    KIND_STALL,
    OUTCOME_COMPLETED,
    OUTCOME_FAILED,
    OUTCOME_LAPSED,
    OUTCOME_PROGRESSED,
    client_sweep_time,
)

StallRecord = tuple[int | float, ...]  # ints per state.layout.O_*, then the two floats
Effect = tuple[int, int, int]  # EFFECT_*, journey, step


def pack_ids_py(
    src: bytes, off: list[int], length: list[int], used: list[bool]
) -> tuple[bytes, list[int]]:
    """Twin of ``pack_ids``: the id bytes of the used slots back to back, and new offsets
    (unused slots keep theirs)."""
    out, new_off = bytearray(), list(off)
    for s, in_use in enumerate(used):
        if in_use:
            new_off[s] = len(out)
            out += src[off[s] : off[s] + length[s]]
    return bytes(out), new_off


@dataclass
class PyClient:
    """A client's features."""

    last_ts: int
    calls: float = 0.0
    sessions: float = 0.0
    last_instance: tuple[int, int] | None = None
    open: int = 0


@dataclass
class PyInstance:
    """One open journey instance."""

    client: int
    journey: int
    step: int
    start: int
    progress: int
    entered: int
    deadline: int
    last_type: int
    last_channel: int
    events: int = 0
    errors: int = 0
    back: int = 0
    switches: int = 0
    attempt: int = 0
    stalled: int = 0
    abandoned: int = 0
    segment: int = -1
    stalled_at: int = -1
    last_event: int = -1


@dataclass
class PyShard:
    """Journey state of one shard, in dicts."""

    tables: CatalogTables
    half_life_ms: float
    client_ttl_ms: int
    clients: dict[int, PyClient] = field(default_factory=dict)
    instances: dict[tuple[int, int], PyInstance] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTER_NAMES, 0))

    def apply(
        self,
        ckey: np.ndarray,
        ts: np.ndarray,
        channel: np.ndarray,
        type_code: np.ndarray,
        journey: np.ndarray,
        step: np.ndarray,
        flags: np.ndarray,
        segment: np.ndarray,
    ) -> tuple[list[StallRecord], list[Effect]]:
        """Apply events in the given order; return the records they caused and their effects."""
        out: list[StallRecord] = []
        effects: list[Effect] = []
        for e in range(len(ts)):
            effects.append(
                self.apply_one(
                    int(ckey[e]), int(ts[e]), int(channel[e]), int(type_code[e]),
                    int(journey[e]), int(step[e]), int(flags[e]), int(segment[e]), out,
                )
            )  # fmt: skip
        return out, effects

    def apply_one(
        self,
        key: int,
        t: int,
        ch: int,
        tc: int,
        j: int,
        s: int,
        fl: int,
        seg: int,
        out: list[StallRecord],
    ) -> Effect:
        """Apply one event; return its effect."""
        self.counters["events"] += 1
        client = self.clients.get(key)
        if client is None:
            client = self.clients[key] = PyClient(last_ts=t)
        for jj in range(self.tables.step_timeout.shape[0]):  # time passes to t first
            other = self.instances.get((key, jj))
            if other is not None and other.deadline <= t:
                self._settle(other, t, out)
        if client.open == 0 and client.last_ts + self.client_ttl_ms <= t:
            # idle long enough to be forgotten (its last instance may have just closed
            # above), freed yet or not
            client = self.clients[key] = PyClient(last_ts=t)
        ik = (key, j) if j >= 0 else client.last_instance
        inst = self.instances.get(ik) if ik is not None else None

        if t > client.last_ts:
            decay = 2.0 ** (-(t - client.last_ts) / self.half_life_ms)
            client.calls *= decay
            client.sessions *= decay
            client.last_ts = t
        if fl & FLAG_CALL:
            client.calls += 1.0
        if fl & FLAG_SESSION:
            client.sessions += 1.0

        if s >= 0:
            terminal = int(self.tables.step_terminal[j, s])
            if inst is None:
                if terminal:
                    return (EFFECT_NONE, -1, -1)
                inst = PyInstance(key, j, s, t, t, t, 0, 0, ch)
                self.instances[(key, j)] = inst
                client.open += 1
                self.counters["started"] += 1
                effect = EFFECT_STARTED
            else:
                self.counters["advanced"] += 1
                if inst.stalled:
                    if not terminal:
                        outcome = OUTCOME_PROGRESSED
                    elif terminal == TERMINAL_SUCCESS:
                        outcome = OUTCOME_COMPLETED
                    else:
                        outcome = OUTCOME_FAILED
                    out.append(self._outcome(inst, outcome, t, ch))
                    inst.stalled = 0
                    self.counters["resumed"] += 1
                if s < inst.step:
                    inst.back += 1
                if s != inst.step:
                    inst.entered = t
                effect = EFFECT_ADVANCED
            if terminal:
                effect = EFFECT_COMPLETED if terminal == TERMINAL_SUCCESS else EFFECT_FAILED
            if seg >= 0:
                inst.segment = seg
            self._attribute(inst, t, tc, ch, fl)
            inst.step = s
            inst.abandoned = 0
            inst.progress = t
            client.last_instance = (key, j)
            if terminal:
                self.counters["completed" if terminal == TERMINAL_SUCCESS else "failed"] += 1
                self._close(inst)
            else:
                inst.deadline = t + int(self.tables.step_timeout[j, s])
            return (effect, j, s)
        if inst is None:
            return (EFFECT_NONE, -1, -1)
        # an event that moves no step: it counts, and an abandon signal shortens the deadline
        if seg >= 0:
            inst.segment = seg
        self._attribute(inst, t, tc, ch, fl)
        grace = int(self.tables.abandon_grace[inst.journey, tc])
        if grace >= 0 and not inst.stalled:
            self.counters["abandon_signals"] += 1
            if t + grace < inst.deadline:
                inst.deadline = t + grace
                inst.abandoned = 1
        return (EFFECT_COUNTED, inst.journey, inst.step)

    def find(self, key: int, journey: int) -> PyInstance | None:
        """The open instance of (client hash, journey), if any."""
        return self.instances.get((key, journey))

    def expire(self, watermark: int) -> list[StallRecord]:
        """Settle every instance whose deadline is at or before ``watermark``."""
        out: list[StallRecord] = []
        for inst in list(self.instances.values()):
            if inst.deadline <= watermark:
                self._settle(inst, watermark, out)
        return out

    def expire_clients(self, watermark: int) -> int:
        """Forget clients with nothing open, idle for the client TTL by the last sweep time
        (:func:`~state.layout.client_sweep_time`)."""
        sweep = client_sweep_time(watermark)
        idle = [
            k
            for k, c in self.clients.items()
            if c.open == 0 and c.last_ts + self.client_ttl_ms <= sweep
        ]
        for k in idle:
            del self.clients[k]
        return len(idle)

    @staticmethod
    def _attribute(inst: PyInstance, t: int, tc: int, ch: int, fl: int) -> None:
        if inst.events > 0 and inst.last_channel != ch:
            inst.switches += 1
        inst.events += 1
        if fl & FLAG_ERROR:
            inst.errors += 1
        inst.last_type = tc
        inst.last_channel = ch
        inst.last_event = t

    def _settle(self, inst: PyInstance, now: int, out: list[StallRecord]) -> bool:
        if not inst.stalled:
            inst.attempt += 1
            inst.stalled = 1
            out.append(self._record(inst))
            self.counters["stalled"] += 1
            inst.stalled_at = inst.deadline
            inst.deadline += int(self.tables.close_after[inst.journey])
        if inst.deadline <= now:
            out.append(self._outcome(inst, OUTCOME_LAPSED, inst.deadline, -1))
            self._close(inst)
            self.counters["closed"] += 1
            return True
        return False

    def _close(self, inst: PyInstance) -> None:
        del self.instances[(inst.client, inst.journey)]
        client = self.clients[inst.client]
        client.open -= 1
        if client.last_instance == (inst.client, inst.journey):  # to the latest still open
            still_open = [i for i in self.instances.values() if i.client == inst.client]
            latest = max(still_open, key=lambda i: (i.progress, i.journey), default=None)
            client.last_instance = None if latest is None else (latest.client, latest.journey)

    def _record(self, inst: PyInstance) -> StallRecord:
        client = self.clients[inst.client]
        age = inst.deadline - client.last_ts
        decay = 2.0 ** (-age / self.half_life_ms) if age > 0 else 1.0
        return (
            inst.client, inst.journey, inst.step, inst.start, inst.deadline, inst.entered,
            inst.progress, inst.last_type, inst.last_channel, inst.events, inst.errors,
            inst.back, inst.switches, inst.attempt, inst.abandoned,
            KIND_STALL, 0, -1, -1, inst.segment,
            client.calls * decay, client.sessions * decay,
        )  # fmt: skip

    @staticmethod
    def _outcome(inst: PyInstance, outcome: int, resolved_at: int, channel: int) -> StallRecord:
        return (
            inst.client, inst.journey, inst.step, inst.start, inst.stalled_at, inst.entered,
            inst.progress, inst.last_type, inst.last_channel, inst.events, inst.errors,
            inst.back, inst.switches, inst.attempt, inst.abandoned,
            KIND_OUTCOME, outcome, resolved_at, channel, inst.segment, 0.0, 0.0,
        )  # fmt: skip
