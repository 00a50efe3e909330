"""Pure contact-policy decisions: sent, deferred to the end of quiet hours, or suppressed.

Time comes in with the candidate (``now_ms``, event time), never from the wall clock, so a
replay repeats every decision. Checks run in this order, the first that fails decides:

1. ``do_not_contact``: the profile says so (suppressed);
2. ``resumed``: the client resumed by themselves before dispatch (suppressed);
3. ``stale``: ``now`` (or the end of quiet hours) is later than the stall deadline plus
   ``dispatch.max_delay`` (suppressed);
4. ``quiet_hours``: ``now`` is in the client's local quiet hours (deferred to their end);
5. ``cooldown``: a send of the journey to the client is less than its cooldown away from
   ``now``, before or after it (suppressed);
6. ``daily_cap`` / ``weekly_cap``: the client's local day / ISO week of ``now`` already has
   the capped number of sent interventions, before or after ``now`` (suppressed).

:class:`policy.caps.CapStore` adds ``history_pruned`` (suppressed) for a candidate whose
day, week or cooldown reaches back before sends its Redis history no longer holds.

Sends after ``now`` in event time count too, so a cap holds however the sends were ordered
(two flows at different event times, a retried pipeline); see :mod:`policy.caps` for why
replays still decide the same way.

Checks 5-6 need the client's send history: :func:`decide` takes it as :class:`Usage` (the
reference), :class:`policy.caps.CapStore` applies them atomically in Redis.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from policy.localtime import periods, quiet_until
from policy.profiles import Profile, zone
from policy.routing import Route, route
from policy.settings import Policy

SENT, DEFERRED, SUPPRESSED = "sent", "deferred", "suppressed"
OUTCOMES = (SENT, DEFERRED, SUPPRESSED)
DEFER_REASONS = ("quiet_hours",)
SUPPRESS_REASONS = (
    "do_not_contact", "resumed", "stale", "cooldown", "daily_cap", "weekly_cap", "history_pruned",
)  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    """A stalled journey the engine would like to intervene on, as of ``now_ms``.

    ``tier`` is the one its catalog ladder gives (used when no routing rule matches);
    ``resumed`` is :func:`client_resumed` of the instance as the flow sees it at ``now_ms``.
    """

    intervention_id: str
    client_id: str
    journey: str
    step: str
    attempt: int
    deadline_ms: int
    now_ms: int
    priority: int = 50
    tier: str = "ai"
    resumed: bool = False


@dataclass(frozen=True)
class Decision:
    """What happened to a candidate. ``reason`` is empty for sent; ``recheck_at_ms`` is the
    epoch ms to decide again for deferred (else 0); ``replayed`` marks an id already sent."""

    intervention_id: str
    client_id: str
    journey: str
    step: str
    attempt: int
    segment: str
    outcome: str
    reason: str
    tier: str
    channel: str
    priority: int
    rm_id: str
    decided_at_ms: int
    recheck_at_ms: int = 0
    replayed: bool = False


_DECISION_FIELDS = tuple(f.name for f in fields(Decision))


def decisions_of_columns(columns: Mapping[str, Sequence[object]]) -> list[Decision]:
    """Decisions from one equal-length column per field of :class:`Decision` (values as
    ``__init__`` takes them), made without its per-field cost."""
    new = object.__new__
    out = []
    for row in zip(*(columns[name] for name in _DECISION_FIELDS), strict=True):
        d = new(Decision)
        d.__dict__.update(zip(_DECISION_FIELDS, row, strict=True))
        out.append(d)
    return out


@dataclass(frozen=True)
class Usage:
    """A client's sent interventions in the local day and week of ``now``, and the time of
    the one sent for the candidate's journey nearest to ``now``, before or after it (None if
    none is remembered)."""

    day: int = 0
    week: int = 0
    nearest_sent_ms: int | None = None


def client_resumed(policy: Policy, deadline_ms: int, event_ms: int, channel: str) -> bool:
    """Did the client resume before dispatch? ``event_ms`` is the instance's first event at
    or after the stall deadline (the flow's outcome record: a move, a back-step, the stalled
    step again, a completion or a failure), ``channel`` its channel, which must be one of
    ``resume.channels``."""
    return channel in policy.resume_channels and event_ms >= deadline_ms


def decision(
    c: Candidate,
    profile: Profile,
    r: Route,
    outcome: str,
    reason: str = "",
    recheck_at_ms: int = 0,
    replayed: bool = False,
) -> Decision:
    """A :class:`Decision` of candidate ``c`` routed by ``r``."""
    return Decision(
        intervention_id=c.intervention_id,
        client_id=c.client_id,
        journey=c.journey,
        step=c.step,
        attempt=c.attempt,
        segment=profile.segment,
        outcome=outcome,
        reason=reason,
        tier=r.tier,
        channel=r.channel,
        priority=r.priority,
        rm_id=profile.rm_id if r.tier == "offline" else "",
        decided_at_ms=c.now_ms,
        recheck_at_ms=recheck_at_ms,
        replayed=replayed,
    )


def precheck(c: Candidate, profile: Profile, policy: Policy) -> tuple[Route, Decision | None]:
    """Checks 1-4 (no send history needed): the route and the decision, or None when only
    the cooldown and caps stand between the candidate and ``sent``."""
    r = route(policy, c.journey, c.step, c.attempt, profile, c.tier, c.priority)
    if profile.do_not_contact:
        return r, decision(c, profile, r, SUPPRESSED, "do_not_contact")
    if c.resumed:
        return r, decision(c, profile, r, SUPPRESSED, "resumed")
    latest = c.deadline_ms + policy.max_delay_ms if policy.max_delay_ms else None
    if latest is not None and c.now_ms > latest:
        return r, decision(c, profile, r, SUPPRESSED, "stale")
    until = quiet_until(c.now_ms, zone(profile.tz), policy.quiet_window(profile.segment))
    if until is not None:
        if latest is not None and until > latest:
            return r, decision(c, profile, r, SUPPRESSED, "stale")
        return r, decision(c, profile, r, DEFERRED, "quiet_hours", recheck_at_ms=until)
    return r, None


def usage_reason(policy: Policy, journey: str, now_ms: int, usage: Usage) -> str:
    """Checks 5-6 against ``usage``: ``cooldown``, ``daily_cap``, ``weekly_cap`` or ``""``."""
    cooldown = policy.cooldown_for(journey)
    if usage.nearest_sent_ms is not None and abs(now_ms - usage.nearest_sent_ms) < cooldown:
        return "cooldown"
    if usage.day >= policy.per_day:
        return "daily_cap"
    if usage.week >= policy.per_week:
        return "weekly_cap"
    return ""


def decide(c: Candidate, profile: Profile, policy: Policy, usage: Usage) -> Decision:
    """The full decision given the client's send history ``usage`` (pure reference of
    :meth:`policy.caps.CapStore.decide`)."""
    r, early = precheck(c, profile, policy)
    if early is not None:
        return early
    reason = usage_reason(policy, c.journey, c.now_ms, usage)
    if reason:
        return decision(c, profile, r, SUPPRESSED, reason)
    return decision(c, profile, r, SENT)


def usage_of(sends: list[tuple[int, str]], journey: str, now_ms: int, tz: str) -> Usage:
    """:class:`Usage` from a list of (sent at ms, journey): what Redis counts, in Python."""
    p = periods(now_ms, zone(tz))
    same = [t for t, j in sends if j == journey]
    return Usage(
        day=sum(p.day_start <= t < p.day_end for t, _ in sends),
        week=sum(p.week_start <= t < p.week_end for t, _ in sends),
        nearest_sent_ms=min(same, key=lambda t: abs(now_ms - t)) if same else None,
    )
