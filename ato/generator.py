"""Seeded, deterministic ATO traffic with its ground truth.

Clients of the eight segments run journeys from the catalog across channels: most start in
the app (app sessions), the personal segments often with an agent or their RM; between steps
come noise (page views, AI chat), errors, abandon signals the client beats, steps back, now
and then a step the AI bot takes; some instances are declined (a failure terminal), some
stall at a chosen step (sometimes after an abandon signal), some of those resume later
through the remote-agent or branch channel (a hand-off; a second one goes from the call to the
branch) and may stall again further on (attempt 2). Every gap between progress events is
below the deadline in force except at a chosen stall, so the catalog's timeouts define
exactly which instances stall; the generator records those stalls (``TruthStall``) and their
deadlines.

Events of a partition arrive in event-time order shuffled by up to ``disorder_ms``.
"""

import gc
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import orjson

from ato.catalog import SEGMENTS, Catalog, Journey, Step
from ato.config import GeneratorSettings

TRAFFIC_VERSION = 2  # raised whenever the same options give other traffic (caches key on it)
SEGMENT_WEIGHTS = (3, 1, 8, 14, 30, 16, 20, 8)
# the type of a generated event that reaches a step no event type maps to (it names the
# journey and step instead)
STEP_EVENT_TYPE = "ato_step_reached"
# journeys a segment favours (weight x3); others keep weight 1
SEGMENT_FAVOURITES: dict[str, tuple[str, ...]] = {
    "executive": ("wealth_purchase", "large_transfer"),
    "ultra_high_net_worth": ("insurance_trust", "wealth_purchase"),
    "small_business_owner": ("loan_application", "large_transfer"),
    "wealth_white_collar": ("wealth_purchase", "risk_assessment"),
    "savvy_regular": ("card_activation", "open_account"),
    "senior": ("pension_account", "card_activation"),
    "young_trendsetter": ("credit_limit_increase", "open_account"),
    "car_owner": ("loan_application", "card_activation"),
}


@dataclass(frozen=True)
class TruthStall:
    """A stall the generator made: the engine should raise exactly this intervention."""

    client_id: str
    journey: str
    step: str
    instance_start: int
    attempt: int
    deadline: int
    resumed_at: int = -1  # event time the client moved on again; -1: it never did
    resume_channel: str = ""  # the channel it came back through


@dataclass(frozen=True)
class StallBurst:
    """An outage at one step: instances reaching ``journey``/``step`` at an event time in
    ``[from_ms, to_ms)`` stall there with probability ``share`` (on top of ``stall_share``)."""

    journey: str
    step: str
    from_ms: int
    to_ms: int
    share: float


@dataclass(frozen=True)
class TrafficShape:
    """How load tests bend the traffic: when journeys start, and an optional stall burst.

    ``start_fraction`` maps a uniform draw in [0, 1) to a journey's start as a fraction of
    ``span_s`` (default: uniform over the first 80 %).
    """

    start_fraction: Callable[[float], float] | None = None
    burst: StallBurst | None = None


@dataclass
class GeneratedTraffic:
    """Encoded events per partition (arrival order) and the stalls they contain."""

    partitions: dict[str, list[bytes]]
    arrival_ts: dict[str, list[int]]
    stalls: list[TruthStall]
    end_ts: int
    clients: dict[str, str] = field(default_factory=dict)  # client id -> segment

    @property
    def n_events(self) -> int:
        """Events over all partitions."""
        return sum(len(v) for v in self.partitions.values())

    def detectable_stalls(self) -> list[TruthStall]:
        """Stalls whose deadline is at or before the last event time (what a run can see)."""
        return [s for s in self.stalls if s.deadline <= self.end_ts]


class _Instance:
    """Builds the events of one journey instance."""

    def __init__(self, gen: "_Generator", client: str, segment: str, journey: Journey, t: int):
        self.gen = gen
        self.client = client
        self.segment = segment
        self.journey = journey
        self.start = t
        self.seq = 0

    def emit(
        self, t: int, channel: str, event_type: str, journey: bool = True, step: str = ""
    ) -> None:
        self.seq += 1
        doc: dict[str, object] = {
            "event_id": f"{self.client}-{self.journey.index}-{self.seq}",
            "client_id": self.client,
            "ts": t,
            "channel": channel,
            "type": event_type,
        }
        if journey:
            doc["journey"] = self.journey.name
        if step:
            doc["step"] = step
        doc["session_id"] = f"{self.client}-s{self.journey.index}"
        doc["attrs"] = {"segment": self.segment}
        self.gen.events.append((t, self.client, _compact(orjson.dumps(doc))))

    def reach(self, t: int, channel: str, step: Step) -> None:
        """An event of ``step``: its first ``on`` type, or, for a step no type maps to, one
        naming the step (``STEP_EVENT_TYPE``, with ``journey`` and ``step``)."""
        if step.on:
            self.emit(t, channel, step.on[0])
        else:
            self.emit(t, channel, STEP_EVENT_TYPE, step=step.name)

    def run(self) -> None:
        rng = self.gen.rng
        steps = [s for s in self.journey.steps if s.terminal is None]
        success = next(s for s in self.journey.steps if s.terminal == "success")
        failure = next((s for s in self.journey.steps if s.terminal == "failure"), None)
        stall_at = rng.randrange(len(steps)) if rng.random() < self.gen.cfg.stall_share else -1
        t = self.start
        channel = _start_channel(rng, self.segment)
        attempt = 0  # stalls of this instance so far (a burst can add one before stall_at)
        if channel == "app" and rng.random() < 0.5 and self.gen.session_type:
            self.emit(t - 1, "app", self.gen.session_type, journey=False)
        self.reach(t, channel, steps[0])
        for i, step in enumerate(steps):
            after = steps[i + 1] if i + 1 < len(steps) else success
            deadline = t + step.timeout_ms
            # a step of under 2 ms always stalls: progress would share its millisecond
            if i != stall_at and not self._in_burst(step, t) and step.timeout_ms >= 2:
                gap = max(1, int(step.timeout_ms * rng.uniform(0.05, 0.7)))
                self._between(steps, i, t, gap, channel)
                t += gap
                if after is success and failure is not None and rng.random() < 0.2:
                    self.reach(t, channel, failure)  # declined: closed, no stall
                    return
                # now and then the bot takes a step, in the app or beside an agent
                self.reach(t, "ai" if rng.random() < 0.05 else channel, after)
                continue
            deadline = self._maybe_abandon(step, t, deadline)
            attempt += 1
            stall = TruthStall(
                self.client, self.journey.name, step.name, self.start, attempt, deadline
            )
            # resumes come within close_after: under 2 ms leaves no millisecond for one
            if rng.random() >= self.gen.cfg.resume_share or self.journey.close_after_ms < 2:
                self.gen.stalls.append(stall)
                return
            # hand-off: the client comes back through an agent call or a branch visit (a
            # second hand-off goes on from the call to the branch)
            t = deadline + 1 + int((self.journey.close_after_ms - 2) * rng.uniform(0.05, 0.9))
            channel = _handoff_channel(rng, self.segment, channel)
            self.gen.stalls.append(replace(stall, resumed_at=t, resume_channel=channel))
            if channel == "call" and self.gen.call_types:
                self.emit(t - 1, "call", self.gen.call_types[0], journey=False)
            self.reach(t, channel, after)
            if i + 1 < len(steps) and rng.random() < 0.3:  # stalls again further on
                stall_at = rng.randrange(i + 1, len(steps))

    def _between(self, steps: list[Step], i: int, t: int, gap: int, channel: str) -> None:
        """What happens on step ``i`` (entered at ``t``) before the next progress at
        ``t + gap``, none of which makes it stall: noise, an error, an abandon signal whose
        grace the progress beats, or a step back whose timeout it beats."""
        rng = self.gen.rng
        roll = rng.random()
        if roll < 0.25:
            noise = "ai_chat_message" if rng.random() < 0.3 else "page_view"
            if noise not in self.gen.claimed:
                self.emit(t + gap // 2, "ai" if noise == "ai_chat_message" else channel, noise)
        elif roll < 0.3:
            if self.gen.error_type:
                self.emit(t + gap // 2, channel, self.gen.error_type)
        elif roll < 0.4 and self.journey.abandon_ms:
            signal = rng.choice(sorted(self.journey.abandon_ms))
            grace = self.journey.abandon_ms[signal]
            at = t + gap - grace + 1 + int((grace - 2) * rng.random())  # t + gap < at + grace
            if t < at < t + gap:
                self.emit(at, "call" if signal == "ivr_hangup" else channel, signal)
        elif roll < 0.45 and i > 1:  # not to the first step: its event starts an instance
            back = t + gap // 3
            if t < back and t + gap < back + steps[i - 1].timeout_ms:  # beats the old timeout
                self.reach(back, channel, steps[i - 1])

    def _in_burst(self, step: Step, t: int) -> bool:
        """Whether the shape's stall burst makes this instance stall at ``step``."""
        burst = self.gen.shape.burst
        if burst is None or step.name != burst.step or self.journey.name != burst.journey:
            return False
        return burst.from_ms <= t < burst.to_ms and self.gen.rng.random() < burst.share

    def _maybe_abandon(self, step: Step, t: int, deadline: int) -> int:
        rng = self.gen.rng
        if not self.journey.abandon_ms or rng.random() >= 0.5:
            return deadline
        signal = rng.choice(sorted(self.journey.abandon_ms))
        at = t + max(1, int(step.timeout_ms * rng.uniform(0.05, 0.4)))
        channel = "call" if signal == "ivr_hangup" else "app"
        self.emit(at, channel, signal)
        return min(deadline, at + self.journey.abandon_ms[signal])


# segments that reach the bank through people more than through the app
PERSONAL_SEGMENTS = ("senior", "ultra_high_net_worth", "executive")


def _start_channel(rng: random.Random, segment: str) -> str:
    """Where a journey starts: mostly the app; a personal segment often with an agent or RM."""
    if segment in PERSONAL_SEGMENTS and rng.random() < 0.3:
        return "call" if rng.random() < 0.6 else "branch"
    return "app"


def _handoff_channel(rng: random.Random, segment: str, current: str) -> str:
    """Where a stalled client comes back: a call, else the branch; after a call, the branch."""
    if current == "call":
        return "branch"
    branch_share = 0.5 if segment in PERSONAL_SEGMENTS else 0.3
    return "branch" if rng.random() < branch_share else "call"


class _Generator:
    def __init__(
        self, catalog: Catalog, cfg: GeneratorSettings, start_ms: int, shape: TrafficShape
    ) -> None:
        self.catalog = catalog
        self.cfg = cfg
        self.shape = shape
        self.start_ms = start_ms
        self.rng = random.Random(cfg.seed)
        self.events: list[tuple[int, str, bytes]] = []
        self.stalls: list[TruthStall] = []
        self.weights = {
            seg: [3 if j.name in SEGMENT_FAVOURITES.get(seg, ()) else 1 for j in catalog.journeys]
            for seg in SEGMENTS
        }
        # the types of the noise, errors, calls and app sessions it sends: the catalog's own,
        # and never one a journey maps to a step or an abandon signal (that would move
        # journeys the ground truth does not know of; such events are left out)
        self.claimed = {t for j in catalog.journeys for s in j.steps for t in s.on} | {
            t for j in catalog.journeys for t in j.abandon_ms
        }
        self.error_type = next((t for t in catalog.error_types if t not in self.claimed), "")
        self.call_types = [t for t in catalog.call_types if t not in self.claimed]
        self.session_type = next((t for t in catalog.session_types if t not in self.claimed), "")

    def run(self) -> GeneratedTraffic:
        cfg, rng, shape = self.cfg, self.rng, self.shape
        span_ms = cfg.span_s * 1000
        clients: dict[str, str] = {}
        for c in range(cfg.clients):
            client = f"C{cfg.seed:02d}{c:09d}"
            segment = rng.choices(SEGMENTS, SEGMENT_WEIGHTS)[0]
            clients[client] = segment
            n = min(_poisson(rng, cfg.journeys_per_client), len(self.catalog.journeys))
            chosen: set[int] = set()
            while len(chosen) < n:
                chosen.add(rng.choices(range(len(self.catalog.journeys)), self.weights[segment])[0])
            if rng.random() < 0.2:
                self._background_call(client, segment, rng.randrange(span_ms))
            for j in sorted(chosen):
                if shape.start_fraction is None:
                    start = self.start_ms + int(rng.random() * span_ms * 0.8)
                else:
                    start = self.start_ms + int(shape.start_fraction(rng.random()) * span_ms)
                _Instance(self, client, segment, self.catalog.journeys[j], start).run()
        return self._partition(clients)

    def _background_call(self, client: str, segment: str, offset: int) -> None:
        first = self.rng.random() < 0.7
        if not self.call_types:
            return
        doc = {
            "event_id": f"{client}-call-{offset}",
            "client_id": client,
            "ts": self.start_ms + offset,
            "channel": "call",
            "type": self.call_types[0 if first else min(1, len(self.call_types) - 1)],
            "attrs": {"segment": segment},
        }
        self.events.append((self.start_ms + offset, client, _compact(orjson.dumps(doc))))

    def _partition(self, clients: dict[str, str]) -> GeneratedTraffic:
        cfg, rng = self.cfg, self.rng
        names = [f"gen-{p}" for p in range(cfg.partitions)]
        client_part = {c: names[i % cfg.partitions] for i, c in enumerate(clients)}
        keyed: dict[str, list[tuple[float, int, bytes]]] = {n: [] for n in names}
        for ts, client, line in self.events:
            keyed[client_part[client]].append((ts + rng.random() * cfg.disorder_ms, ts, line))
        partitions: dict[str, list[bytes]] = {}
        arrival: dict[str, list[int]] = {}
        for name, rows in keyed.items():
            rows.sort(key=lambda r: r[0])
            partitions[name] = [r[2] for r in rows]
            arrival[name] = [r[1] for r in rows]
        end_ts = max((ts for ts, _, _ in self.events), default=self.start_ms)
        return GeneratedTraffic(partitions, arrival, self.stalls, end_ts, clients)


def _poisson(rng: random.Random, mean: float) -> int:
    """Journeys per client: at least one, Poisson-distributed extra ones around ``mean``."""
    extra, limit, p = 0, pow(2.718281828459045, -(mean - 1)), rng.random()
    while p > limit:
        extra += 1
        p *= rng.random()
    return 1 + extra


def generate(
    catalog: Catalog,
    cfg: GeneratorSettings,
    start_ms: int | None = None,
    shape: TrafficShape | None = None,
) -> GeneratedTraffic:
    """Generate traffic; the same catalog, settings, start and shape give the same bytes."""
    enabled = gc.isenabled()
    gc.disable()  # millions of long-lived tuples: cyclic collections would rescan them all
    try:
        start = cfg.start_ms if start_ms is None else start_ms
        return _Generator(catalog, cfg, start, shape or TrafficShape()).run()
    finally:
        if enabled:
            gc.enable()


def _compact(encoded: bytes) -> bytes:
    """A right-sized copy: orjson's output keeps a ~4 KiB buffer behind every small document."""
    return bytes(memoryview(encoded))
