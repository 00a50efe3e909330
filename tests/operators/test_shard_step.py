"""ShardLogic driven directly: event-time stalls, lateness, end of input, resume (BRIEF §3).

Default catalog: wealth_purchase/confirm times out after 90 s (abandon: app_backgrounded 1 m,
payment_failed 30 s; close_after 2 d), large_transfer/otp after 60 s. Default lateness 500 ms.
"""

import json
import pickle
import random
import uuid
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import orjson
import pytest

from ato.catalog import load_catalog
from ato.columns import EventColumns, client_id_texts
from ato.config import EngineSettings
from ato.exceptions import ConfigError
from operators.batches import RawBatch, ShardInput, ShardOutput
from operators.decode import Decoder
from operators.interventions import SCHEMA, intervention_id
from operators.route import Router
from operators.shard_step import ShardContext, ShardLogic
from operators.watermark import MIN_WATERMARK

CATALOG = load_catalog()
T0 = 1_767_600_000_000
LATE = EngineSettings().allowed_lateness_ms
WEALTH = CATALOG.journey("wealth_purchase")
CONFIRM = WEALTH.step("confirm").timeout_ms
OTP = CATALOG.journey("large_transfer").step("otp").timeout_ms
SHARD = "shard-0000"
DECODER = Decoder(CATALOG, EngineSettings(), now_ms=lambda: T0 + 10**10)
ROUTER = Router(1)

Event = tuple[str, int, str] | tuple[str, int, str, dict[str, Any]]


@dataclass
class Clock:
    """An injected wall clock."""

    now: int = T0

    def __call__(self) -> int:
        return self.now


def logic(
    wall: Clock | None = None,
    partitions: tuple[str, ...] = ("p0",),
    resume: dict[str, Any] | None = None,
    **engine: Any,
) -> ShardLogic:
    ctx = ShardContext(CATALOG, EngineSettings(**engine), list(partitions), wall or Clock())
    return ShardLogic(ctx, resume)


def raw_event(client: str, ts: int, kind: str, extra: dict[str, Any] | None = None) -> bytes:
    doc = {"event_id": f"{client}@{ts}", "client_id": client, "ts": ts, "channel": "app"}
    return json.dumps({**doc, "type": kind, **(extra or {})}).encode()


def batch(events: list[Event], partition: str = "p0") -> ShardInput:
    """Decode (client, ts, type[, extra fields]) events and route them to the single shard."""
    decoded = DECODER.decode(RawBatch(partition, [raw_event(*e) for e in events]))
    assert decoded.dead == []
    ((key, item),) = ROUTER(decoded)
    assert key == item.shard == SHARD
    return item


def tick(max_ts: int, partition: str = "p0") -> ShardInput:
    """An item with no events of this shard that moves ``partition`` to ``max_ts``."""
    return ShardInput(SHARD, partition, EventColumns.empty(), max_ts, 0)


def heartbeat(partition: str = "p0") -> ShardInput:
    """What a source sends for a partition with nothing to read."""
    return ShardInput(SHARD, partition, EventColumns.empty(), None, 0, caught_up=True)


def run(shard: ShardLogic, items: list[ShardInput]) -> list[ShardOutput]:
    out: list[ShardOutput] = []
    for item in items:
        emitted, retain = shard.on_batch([item])
        assert retain is shard.RETAIN
        out.extend(emitted)
    return out


def interventions(outputs: list[ShardOutput]) -> list[dict[str, Any]]:
    return [doc for o in outputs for doc in o.interventions.docs()]


def ids(outputs: list[ShardOutput]) -> list[str]:
    return [doc["intervention_id"] for doc in interventions(outputs)]


def stall_id(client: str, journey: str, start: int, step: str, attempt: int = 1) -> str:
    return intervention_id(client, journey, start, step, attempt)


# ------------------------------------------------------------------ stalls and deadlines


def test_progress_before_deadline_gives_no_intervention() -> None:
    """A client who pays 1 ms before the confirm deadline is never contacted."""
    shard = logic()
    out = run(
        shard,
        [
            batch([("c1", T0, "order_confirm_viewed")]),
            batch([("c1", T0 + CONFIRM - 1, "order_paid")]),
            tick(T0 + 10 * 86_400_000),
        ],
    )
    assert interventions(out) == []
    assert out[-1].open_instances == 0


def test_stall_emitted_once_when_watermark_reaches_deadline() -> None:
    """The stall waits for watermark >= deadline, i.e. max event time >= deadline + lateness."""
    shard = logic()
    deadline = T0 + CONFIRM
    out = run(shard, [batch([("c1", T0, "order_confirm_viewed")]), tick(deadline + LATE - 1)])
    assert interventions(out) == []
    assert out[-1].watermark == deadline - 1
    out = run(shard, [tick(deadline + LATE)])
    assert out[-1].watermark == deadline
    assert ids(out) == [stall_id("c1", "wealth_purchase", T0, "confirm")]
    later = run(shard, [tick(deadline + LATE + k * 3_600_000) for k in range(1, 60)])
    assert interventions(later) == []  # once only, also past close_after


def test_large_transfer_otp_stall() -> None:
    """The otp step stalls 60 s after it was entered; the id names the instance start."""
    shard = logic()
    deadline = T0 + 20_000 + OTP
    out = run(
        shard,
        [
            batch(
                [
                    ("c7", T0, "transfer_start"),
                    ("c7", T0 + 10_000, "payee_added"),
                    ("c7", T0 + 20_000, "otp_sent"),
                ]
            ),
            tick(deadline + LATE - 1),
        ],
    )
    assert interventions(out) == []
    (doc,) = interventions(run(shard, [tick(deadline + LATE)]))
    assert doc["intervention_id"] == stall_id("c7", "large_transfer", T0, "otp")
    assert (doc["step"], doc["deadline_ts"], doc["reason"]) == ("otp", deadline, "step_timeout")
    assert doc["features"]["time_on_step_ms"] == OTP == 60_000
    assert doc["features"]["elapsed_ms"] == deadline - T0
    assert doc["features"]["events"] == 3


@pytest.mark.parametrize(("paid_after", "stalls"), [(CONFIRM - 1, 0), (CONFIRM, 1)])
def test_progress_must_be_strictly_before_the_deadline(paid_after: int, stalls: int) -> None:
    """An event exactly at the deadline is too late: the step had stalled."""
    shard = logic()
    out = run(
        shard,
        [
            batch([("c1", T0, "order_confirm_viewed"), ("c1", T0 + paid_after, "order_paid")]),
            tick(T0 + 3 * CONFIRM),
        ],
    )
    expected = [stall_id("c1", "wealth_purchase", T0, "confirm")] * stalls
    assert ids(out) == expected


def test_abandon_signal_shortens_the_deadline() -> None:
    """app_backgrounded 10 s into confirm: deadline min(90 s, 10 s + 1 m) = 70 s."""
    shard = logic()
    out = run(
        shard,
        [
            batch([("c1", T0, "order_confirm_viewed"), ("c1", T0 + 10_000, "app_backgrounded")]),
            tick(T0 + 70_000 + LATE - 1),
        ],
    )
    assert interventions(out) == []
    (doc,) = interventions(run(shard, [tick(T0 + 70_000 + LATE)]))
    assert doc["reason"] == "abandon_signal"
    assert doc["deadline_ts"] == T0 + 70_000
    assert doc["intervention_id"] == stall_id("c1", "wealth_purchase", T0, "confirm")
    assert doc["last_event"] == {"type": "app_backgrounded", "channel": "app"}
    assert doc["priority"] == WEALTH.priority + 8  # + abandoned


def test_abandon_signal_never_extends_the_deadline() -> None:
    """A grace longer than what is left leaves the step deadline and the reason alone."""
    shard = logic()
    out = run(
        shard,
        [
            batch([("c1", T0, "order_confirm_viewed"), ("c1", T0 + 80_000, "app_backgrounded")]),
            tick(T0 + 10 * CONFIRM),
        ],
    )
    (doc,) = interventions(out)
    assert (doc["deadline_ts"], doc["reason"]) == (T0 + CONFIRM, "step_timeout")


def test_resume_then_second_stall_is_attempt_two_on_the_next_tier() -> None:
    """Stall, come back to the step, stall again: attempt 2, tier remote, same instance start."""
    shard = logic()
    first = interventions(
        run(shard, [batch([("c1", T0, "order_confirm_viewed")]), tick(T0 + CONFIRM + LATE)])
    )
    back = T0 + 600_000
    second = interventions(
        run(shard, [batch([("c1", back, "order_confirm_viewed")]), tick(back + CONFIRM + LATE)])
    )
    assert [(d["attempt"], d["tier"]) for d in first] == [(1, "ai")]
    assert [(d["attempt"], d["tier"]) for d in second] == [(2, "remote")]
    assert second[0]["intervention_id"] == stall_id("c1", "wealth_purchase", T0, "confirm", 2)
    assert second[0]["instance_start_ts"] == T0
    assert second[0]["last_progress_ts"] == back
    assert second[0]["priority"] == first[0]["priority"] + 10


def test_attempts_beyond_the_ladder_stay_on_the_last_tier() -> None:
    """large_transfer only has tiers ai and remote; a third stall stays on remote."""
    shard = logic()
    tiers = []
    for k in range(3):
        ts = T0 + k * 600_000
        docs = interventions(run(shard, [batch([("c1", ts, "otp_sent")]), tick(ts + OTP + LATE)]))
        tiers += [(d["attempt"], d["tier"]) for d in docs]
    assert tiers == [(1, "ai"), (2, "remote"), (3, "remote")]


# ------------------------------------------------------------------ arrival order and lateness


_JOURNEY_TYPES = (
    (
        "product_viewed",
        "risk_level_checked",
        "amount_entered",
        "order_confirm_viewed",
        "order_paid",
    ),
    ("transfer_start", "payee_added", "otp_sent", "transfer_confirm_viewed", "transfer_completed"),
)
_SIDE_EVENTS = ("app_backgrounded", "call_started", "error", "otp_failed", "page_view")
_GAPS = (100, 250, 1_000, 20_000, 44_000, 59_999, 60_000, 70_000, 89_999, 100_000, 600_000)


def _traffic(seed: int) -> list[tuple[str, int, str]]:
    """Clients through one or two journeys with side events, some stalling; distinct ts."""
    rng = random.Random(seed)
    events = []
    for c in range(12):
        for types in rng.sample(_JOURNEY_TYPES, rng.randrange(1, 3)):
            ts = T0 + rng.randrange(0, 120_000)
            for kind in types[: rng.randrange(1, 6)]:
                events.append((f"c{c}", ts, kind))
                if rng.random() < 0.3:
                    side = rng.choice(_SIDE_EVENTS)
                    after = rng.choice([rng.randrange(1, LATE), rng.randrange(1, 50_000)])
                    events.append((f"c{c}", ts + after, side))
                ts += rng.choice(_GAPS)
    # make every event time distinct: ties of one client's events would keep arrival order
    events.sort(key=lambda e: e[1])
    return [(c, ts + i, kind) for i, (c, ts, kind) in enumerate(events)]


@pytest.mark.parametrize("seed", range(6))
def test_out_of_order_within_lateness_matches_sorted_arrival(seed: int) -> None:
    """Shuffling arrival by less than the allowed lateness changes no intervention."""
    events = _traffic(seed)
    rng = random.Random(1000 + seed)
    shuffled = sorted(events, key=lambda e: e[1] + rng.randrange(LATE))
    sizes = [rng.randrange(1, 6) for _ in events]

    def replay(order: list[tuple[str, int, str]], chunks: list[int]) -> list[dict[str, Any]]:
        shard, out, i = logic(), [], 0
        for size in chunks:
            if i < len(order):
                out += run(shard, [batch(order[i : i + size])])
                i += size
        out += run(shard, [tick(order[-1][1] + 10 * 86_400_000)])
        assert sum(o.late_count for o in out) == 0
        return sorted(interventions(out), key=lambda d: d["intervention_id"])

    expected = replay(events, [len(events)])
    assert expected  # the traffic does stall somewhere
    assert replay(shuffled, sizes) == expected
    assert replay(events, [1] * len(events)) == expected


def test_events_of_a_batch_are_applied_in_event_time_order() -> None:
    """A client's steps arriving backwards in one batch count as forward progress."""
    forward = [
        ("c1", T0, "product_viewed"),
        ("c1", T0 + 100, "risk_level_checked"),
        ("c1", T0 + 200, "amount_entered"),
        ("c1", T0 + 300, "order_confirm_viewed"),
    ]
    docs = []
    for order in (forward, forward[::-1]):
        docs.append(interventions(run(logic(), [batch(order), tick(T0 + 10 * CONFIRM)])))
    assert docs[0] == docs[1]
    (doc,) = docs[1]
    assert (doc["step"], doc["features"]["back_steps"]) == ("confirm", 0)


@pytest.mark.parametrize("policy", ["output", "count"])
def test_event_behind_the_watermark_is_late(policy: str) -> None:
    """Behind the watermark: counted (and output per policy), never applied; at it: on time."""
    shard = logic(late_events=policy)
    run(shard, [batch([("c1", T0 + 10_000, "product_viewed")])])
    assert shard.tracker.current == T0 + 10_000 - LATE
    (out,) = run(
        shard,
        [
            batch(
                [
                    ("c2", T0 + 10_000 - LATE - 1, "order_confirm_viewed"),
                    ("c3", T0 + 10_000 - LATE, "order_confirm_viewed"),
                ]
            )
        ],
    )
    assert out.late_count == 1
    if policy == "output":
        assert out.late is not None
        assert client_id_texts(out.late.client_id) == ["c2"]
        assert out.late.ts.tolist() == [T0 + 10_000 - LATE - 1]
    else:
        assert out.late is None
    assert out.pending == 2  # c1 and c3 wait for the watermark; c2 is gone
    eof = shard.on_eof()[0][0]
    assert eof.applied == 2
    assert eof.open_instances == 2


def test_on_eof_applies_pending_and_expires_to_last_event_time() -> None:
    """End of input: everything pending is applied and deadlines up to max event time expire."""
    shard = logic()
    (out,) = run(
        shard,
        [
            batch(
                [
                    ("c1", T0, "order_confirm_viewed"),
                    ("c2", T0 + CONFIRM, "product_viewed"),
                    ("c3", T0 + CONFIRM - 10, "order_confirm_viewed"),
                ]
            )
        ],
    )
    assert (out.applied, out.pending, len(out.interventions)) == (1, 2, 0)
    (final,), retain = shard.on_eof()
    assert retain is shard.RETAIN
    assert (final.applied, final.pending, final.watermark) == (2, 0, T0 + CONFIRM)
    assert ids([final]) == [stall_id("c1", "wealth_purchase", T0, "confirm")]
    assert final.open_instances == 3


def test_on_eof_with_nothing_to_do_still_reports() -> None:
    """A shard that saw no events reports once at end of input, with no interventions."""
    shard = logic()
    (final,), _ = shard.on_eof()
    assert (final.applied, len(final.interventions), final.late_count) == (0, 0, 0)
    assert final.watermark == MIN_WATERMARK


# ------------------------------------------------------------------ snapshots


def _script() -> list[ShardInput]:
    return [
        batch([("a", T0, "order_confirm_viewed"), ("b", T0 + 5, "otp_sent")]),
        batch([("c", T0 + 1_000, "transfer_start"), ("a", T0 + 400, "app_backgrounded")]),
        tick(T0 + 40_000),
        batch([("b", T0 + 60_000 + LATE + 20, "otp_sent"), ("c", T0 + 61_000, "payee_added")]),
        batch([("z", T0 + 39_000, "product_viewed")]),  # late
        tick(T0 + 75_000),
        batch([("a", T0 + 200_000, "order_confirm_viewed")]),
        tick(T0 + 400_000),
        batch([("d", T0 + 500_000, "risk_quiz_start")]),
    ]


def _summary(outputs: list[ShardOutput]) -> list[tuple[Any, ...]]:
    return [
        (o.shard, o.interventions.docs(), o.late_count, o.applied, o.watermark, o.pending,
         o.open_instances, None if o.late is None else o.late.ts.tolist())
        for o in outputs
    ]  # fmt: skip


@pytest.mark.parametrize("cut", range(len(_script()) + 1))
def test_resume_from_snapshot_matches_uninterrupted_run(cut: int) -> None:
    """Snapshot after any item, restore in a new ShardLogic: the same outputs follow."""
    script = _script()
    whole = logic()
    expected = run(whole, script) + whole.on_eof()[0]
    assert len(interventions(expected)) >= 3

    first = logic()
    before = run(first, script[:cut])
    snap = pickle.loads(pickle.dumps(first.snapshot()))
    second = logic(resume=snap)
    after = run(second, script[cut:]) + second.on_eof()[0]
    assert _summary(before + after) == _summary(expected)


def test_snapshot_is_independent_of_later_work() -> None:
    """Work done after a snapshot does not leak into it."""
    shard = logic()
    run(shard, [batch([("a", T0, "order_confirm_viewed")])])
    snap = shard.snapshot()
    run(shard, [tick(T0 + 10 * CONFIRM)])
    resumed = logic(resume=snap)
    assert ids(run(resumed, [tick(T0 + 10 * CONFIRM)])) == [
        stall_id("a", "wealth_purchase", T0, "confirm")
    ]


def test_snapshot_with_text_client_ids_restores() -> None:
    """Snapshots taken before client ids became UTF-8 bytes hold pending events with ``U``
    ids; a restored shard turns them into bytes and goes on as before."""
    shard = logic()
    run(shard, [batch([("a", T0, "order_confirm_viewed")])])
    snap = shard.snapshot()
    assert snap is not None and len(snap["pending"]) == 1
    old = snap["pending"]
    object.__setattr__(old, "client_id", old.client_id.astype(str))  # the earlier layout
    resumed = logic(resume=pickle.loads(pickle.dumps(snap)))
    assert resumed.pending.all().client_id.dtype.kind == "S"
    assert ids(run(resumed, [tick(T0 + 10 * CONFIRM)])) == [
        stall_id("a", "wealth_purchase", T0, "confirm")
    ]


def test_no_snapshot_without_recovery() -> None:
    """Bytewax asks for snapshots at every epoch end even without recovery: the shard then
    copies nothing (at 10 M instances a copy stalled the flow for seconds every epoch)."""
    ctx = ShardContext(CATALOG, EngineSettings(), ["p0"], Clock(), snapshots=False)
    shard = ShardLogic(ctx, None)
    run(shard, [batch([("a", T0, "order_confirm_viewed")])])
    assert shard.snapshot() is None
    assert logic().snapshot() is not None  # the default: recovery may use it


# ------------------------------------------------------------------ wall clock


def test_live_clock_idle_inputs_let_watermark_follow_wall_clock() -> None:
    """Live, all partitions idle (caught up, and saying so as sources do while they wait):
    the watermark follows wall clock - lateness."""
    clock = Clock(T0)
    shard = logic(clock, partitions=("p0", "p1"), clock="live", idle_timeout_ms=1_000)
    first = replace(batch([("c1", T0, "order_confirm_viewed")], "p0"), caught_up=True)
    assert run(shard, [first, heartbeat("p1")]) == []

    def beat(at: int) -> list[ShardOutput]:
        clock.now = at
        return run(shard, [heartbeat("p0"), heartbeat("p1")])

    assert beat(T0 + 999) == []  # p0 has not been silent long enough
    (out,) = beat(T0 + 1_000)
    assert (out.watermark, out.applied, len(out.interventions)) == (T0 + 1_000 - LATE, 1, 0)
    for at in range(T0 + 1_500, T0 + CONFIRM + LATE, 500):  # caught up, and saying so
        assert interventions(beat(at)) == []
    (out,) = beat(T0 + CONFIRM + LATE)
    assert ids([out]) == [stall_id("c1", "wealth_purchase", T0, "confirm")]
    assert out.interventions.docs()[0]["emitted_at_ms"] == T0 + CONFIRM + LATE
    assert shard.on_notify() == ([], shard.RETAIN)  # nothing moved


def test_live_a_caught_up_partition_that_stops_reporting_holds_the_watermark() -> None:
    """A source held back (Bytewax lets a worker read only once every worker's sources left
    the epoch) stops reporting; it said it was caught up, but its next events are due: the
    watermark no longer follows the wall clock past them (with two workers, live, they came
    late: false stalls and lost abandon signals). A partition that ended idles for good."""
    clock = Clock(T0)
    shard = logic(clock, partitions=("p0", "p1"), clock="live", idle_timeout_ms=1_000)
    assert run(shard, [heartbeat("p0"), heartbeat("p1")]) == []
    clock.now = T0 + 2_000
    run(shard, [heartbeat("p0"), heartbeat("p1")])
    assert shard.tracker.current == T0 + 2_000 - LATE  # both idle: the wall clock
    for at in range(T0 + 2_200, T0 + 4_001, 200):  # p1 keeps saying so, p0 is held back
        clock.now = at
        run(shard, [heartbeat("p1")])
        shard.on_notify()
    assert shard.tracker.current < T0 + 3_500 - LATE  # held where p0 stopped reporting
    held = shard.tracker.current
    clock.now = T0 + 4_100
    out = run(shard, [batch([("c1", T0 + 3_900, "product_viewed")], "p0")])
    assert held <= T0 + 3_900 - LATE  # the held-back partition's event is on time
    assert sum(o.late_count for o in out) == 0 and len(shard.pending) == 1
    ended = replace(heartbeat("p0"), ended=True)
    clock.now = T0 + 9_000
    run(shard, [ended])
    clock.now = T0 + 20_000  # p0 ended: silent, and idle for good
    run(shard, [heartbeat("p1")])
    assert shard.tracker.current == T0 + 20_000 - LATE


def test_live_an_event_stamped_an_hour_ahead_makes_nothing_late() -> None:
    """A skewed device clock, live: the event waits, pending, until the wall clock reaches
    it, and the on-time events after it are applied in their turn, not late."""
    clock = Clock(T0)
    shard = logic(clock, clock="live")
    ahead = T0 + 3_600_000
    out = run(shard, [batch([("c2", ahead, "order_confirm_viewed"), ("c1", T0, "product_viewed")])])
    clock.now = T0 + 2_000
    out += run(shard, [batch([("c1", T0 + 1_000, "order_confirm_viewed")])])
    assert sum(o.late_count for o in out) == 0
    assert (shard.tracker.current, sum(o.applied for o in out)) == (T0 + 1_000 - LATE, 1)
    clock.now = ahead + LATE + 1
    out = run(shard, [batch([("c3", ahead + LATE + 1, "product_viewed")])])
    assert (out[0].late_count, out[0].applied, out[0].pending) == (0, 2, 1)  # c3 waits


def test_replay_an_event_stamped_ahead_of_its_arrival_makes_nothing_late() -> None:
    """Replayed from Kafka, the same skewed event counts up to when its batch arrived there
    (the message timestamp), so the replay matches the live run: the client who paid on time
    gets no intervention and nothing is late. Without arrival times it would be both."""

    def replay(arrived: bool) -> tuple[int, list[dict[str, Any]]]:
        shard = logic(Clock(T0 + 10**9))
        first: list[Event] = [
            ("A", T0, "product_viewed"),
            ("A", T0 + 1_000, "amount_entered"),
            ("A", T0 + 2_000, "order_confirm_viewed"),
            ("B", T0 + 6 * 3_600_000, "page_view"),  # a device clock 6 h ahead
        ]
        items = [batch(first), batch([("A", T0 + 30_000, "order_paid")])]
        if arrived:
            items = [
                replace(items[0], arrived_ms=T0 + 3_000),
                replace(items[1], arrived_ms=T0 + 31_000),
            ]
        out = run(shard, items)
        out += shard.on_eof()[0]
        return sum(o.late_count for o in out), interventions(out)

    assert replay(arrived=True) == (0, [])
    late, docs = replay(arrived=False)
    assert late == 1 and [d["client_id"] for d in docs] == ["A"]


def test_replay_clock_idle_inputs_hold_the_watermark() -> None:
    """Replay: however long the inputs are silent, on_notify moves nothing."""
    clock = Clock(T0)
    shard = logic(clock, clock="replay", idle_timeout_ms=1_000)
    run(shard, [batch([("c1", T0, "order_confirm_viewed")])])
    clock.now = T0 + 10 * 86_400_000
    assert shard.on_notify() == ([], shard.RETAIN)
    assert shard.tracker.current == T0 - LATE


def test_notify_at_is_one_tick_ahead() -> None:
    """Bytewax is asked to call back after ``tick_ms`` of wall time."""
    from datetime import UTC, datetime, timedelta

    shard = logic(tick_ms=250)
    at = shard.notify_at()
    assert at is not None
    now = datetime.now(UTC)
    assert now < at <= now + timedelta(milliseconds=250)


# ------------------------------------------------------------------ the intervention document


def test_intervention_document_fields() -> None:
    """Schema, id, tier, priority, breakpoint context and features of one stall."""
    clock = Clock(T0 + 5_000_000)
    shard = logic(clock)
    events: list[Event] = [
        ("c9", T0, "product_viewed"),
        ("c9", T0 + 1_000, "risk_level_checked", {"channel": "call"}),
        ("c9", T0 + 2_000, "call_started", {"channel": "call"}),
        ("c9", T0 + 3_000, "amount_entered", {"channel": "app"}),
        ("c9", T0 + 4_000, "order_confirm_viewed", {"channel": "app"}),
        ("c9", T0 + 5_000, "error", {"channel": "ai"}),
    ]
    (doc,) = interventions(run(shard, [batch(events), tick(T0 + 4_000 + CONFIRM + LATE)]))
    assert doc["schema"] == SCHEMA == "ato.intervention/1"
    assert uuid.UUID(doc["intervention_id"]).version == 5
    assert doc["intervention_id"] == stall_id("c9", "wealth_purchase", T0, "confirm")
    assert doc["client_id"] == "c9"
    assert (doc["journey"], doc["step"], doc["step_index"]) == ("wealth_purchase", "confirm", 3)
    assert (doc["attempt"], doc["tier"], doc["reason"]) == (1, "ai", "step_timeout")
    assert doc["instance_start_ts"] == T0
    assert doc["deadline_ts"] == T0 + 4_000 + CONFIRM
    assert doc["last_progress_ts"] == T0 + 4_000
    assert doc["last_event"] == {"type": "error", "channel": "ai"}
    assert doc["emitted_at_ms"] == clock.now
    features = doc["features"]
    assert features["events"] == 6
    assert features["errors"] == 1
    assert features["back_steps"] == 0
    assert features["channel_switches"] == 3  # app -> call, call -> app, app -> ai
    assert features["time_on_step_ms"] == CONFIRM
    assert features["elapsed_ms"] == 4_000 + CONFIRM
    assert 0.99 < features["recent_calls"] <= 1.0
    assert features["recent_app_sessions"] == 0.0
    assert 0 <= doc["priority"] <= 100
    # 80 + 6 errors + 4*3 switches + 8*~1 call, rounded
    assert doc["priority"] == 100
    json.dumps(doc)  # JSON-ready as it is


def test_router_splits_clients_across_shards_with_empty_items() -> None:
    """Every shard gets an item per batch (carrying max_ts) even when none of its clients."""
    messages = [raw_event(f"c{i}", T0 + i, "page_view") for i in range(40)]
    decoded = DECODER.decode(RawBatch("p0", messages))
    items = Router(4)(decoded)
    assert [k for k, _ in items] == ["shard-0000", "shard-0001", "shard-0002", "shard-0003"]
    assert all(item.max_ts == T0 + 39 for _, item in items)
    assert sum(len(item.events) for _, item in items) == 40
    empty = replace(decoded, events=EventColumns.empty(), max_ts=None)
    assert all(len(item.events) == 0 for _, item in Router(4)(empty))


def test_router_items_know_their_original_bytes_also_when_pickled() -> None:
    """Shard items share the batch's bytes in process and carry only their own in pickles
    (to another worker process); either way each event's bytes are its message's."""
    messages = [raw_event(f"c{i}", T0 + i, "page_view") for i in range(40)]
    by_client = {orjson.loads(m)["client_id"].encode(): m for m in messages}
    for _, item in Router(4)(DECODER.decode(RawBatch("p0", messages))):
        sent = pickle.loads(pickle.dumps(item))
        assert sent.raw is not None and len(sent.raw) == len(item.events)  # its own only
        for got in (item, sent):
            everything = np.ones(len(got.events), np.bool_)
            expected = [by_client[c] for c in got.events.client_id.tolist()]
            assert list(got.raw_of(everything)) == expected
        assert sent.events.client_id.tolist() == item.events.client_id.tolist()


def test_a_blocked_worker_does_not_release_a_quiet_partition() -> None:
    """12 s without calls (compiling, another shard's long batch) is not 12 s of idleness,
    even for a partition whose source said it was caught up."""
    clock = Clock(T0)
    shard = logic(clock, partitions=("p0", "p1"), idle_timeout_ms=10_000)
    run(shard, [batch([("a", T0, "order_confirm_viewed")], "p0")])
    run(shard, [replace(batch([("b", T0, "order_confirm_viewed")], "p1"), caught_up=True)])
    clock.now = T0 + 12_000
    run(shard, [tick(T0 + 20 * CONFIRM, "p0")])
    assert shard.tracker.current == T0 - LATE  # p1 still holds the watermark
    late = run(shard, [batch([("b", T0 + 1_000, "order_confirm_viewed")], "p1")])
    assert sum(out.late_count for out in late) == 0


def test_a_partition_behind_its_source_holds_however_long_it_is_silent() -> None:
    """Catch-up: the other process's partition is silent (its source is held back), not idle."""
    clock = Clock(T0)
    shard = logic(clock, partitions=("p0", "p1"), idle_timeout_ms=10_000)
    run(shard, [batch([("a", T0, "order_confirm_viewed")], "p0")])
    run(shard, [batch([("b", T0, "order_confirm_viewed")], "p1")])  # more queued behind it
    for k in range(1, 60):
        clock.now = T0 + k * 500
        run(shard, [tick(T0 + k * CONFIRM, "p0")])
        shard.on_notify()
    assert shard.tracker.current == T0 - LATE
    late = run(shard, [batch([("b", T0 + 1_000, "order_confirm_viewed")], "p1")])
    assert sum(out.late_count for out in late) == 0


def test_with_metrics_a_quiet_shard_reports_each_minute_its_watermark_passes() -> None:
    """The funnel step closes a minute only once every shard passed it: quiet ones must say."""
    ctx = ShardContext(CATALOG, EngineSettings(allowed_lateness_ms=0), ["p0"], Clock(), True)
    shard = ShardLogic(ctx, None)
    minute = 60_000
    start = T0 - T0 % minute
    outs = run(shard, [tick(start + 10), tick(start + 20), tick(start + minute + 5)])
    assert [o.watermark // minute for o in outs] == [start // minute, start // minute + 1]
    assert all(o.funnel is not None and len(o.funnel) == 0 for o in outs)
    (last,), _ = shard.on_eof()
    assert last.final
    quiet = ShardLogic(ShardContext(CATALOG, EngineSettings(), ["p0"], Clock()), None)
    assert run(quiet, [tick(start + 10), tick(start + minute + 5)]) == []  # no metrics: silent


def test_a_snapshot_of_another_catalog_or_shard_count_is_refused() -> None:
    """Codes are positions in the catalog's vocabularies: state saved under one catalog would
    name other journeys under another."""
    ctx = ShardContext(CATALOG, EngineSettings(), ["p0"], Clock())
    snap = ShardLogic(ctx, None).snapshot()
    assert snap is not None
    ShardLogic(ctx, pickle.loads(pickle.dumps(snap)))  # same catalog and shards: resumes
    other = load_catalog(CATALOG.source)
    assert other.codes_fingerprint == CATALOG.codes_fingerprint
    with pytest.raises(ConfigError, match="another journey catalog"):
        ShardLogic(ctx, {**snap, "catalog": "0" * 16})
    with pytest.raises(ConfigError, match="engine.shards = 4, this run has 16"):
        ShardLogic(ctx, {**snap, "shards": 4})
    older = {k: v for k, v in snap.items() if k not in ("catalog", "shards")}
    ShardLogic(ctx, older)  # snapshots from before the check carry neither
