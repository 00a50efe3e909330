"""Routing as data: the channel tier, channel and priority of an intervention attempt."""

from dataclasses import dataclass

from ato.catalog import TIERS
from policy.profiles import Profile
from policy.settings import Policy


@dataclass(frozen=True)
class Route:
    """Where an attempt goes; ``rule`` is the index of the matched rule, -1 for none."""

    tier: str
    channel: str
    priority: int
    rule: int


ROUTE_CACHE = 100_000  # remembered routes per policy (the table is cleared when full)


def route(
    policy: Policy,
    journey: str,
    step: str,
    attempt: int,
    profile: Profile,
    tier: str,
    priority: int,
) -> Route:
    """:func:`route_uncached`, remembered per policy for the inputs it depends on."""
    key = (
        journey, step, attempt, profile.segment, profile.value_tier, bool(profile.rm_id),
        profile.preferred_channel, tier, priority,
    )  # fmt: skip
    cache = policy.route_cache
    found = cache.get(key)
    if found is None:
        found = route_uncached(policy, journey, step, attempt, profile, tier, priority)
        if len(cache) >= ROUTE_CACHE:
            cache.clear()
        cache[key] = found
    return found


def route_uncached(
    policy: Policy,
    journey: str,
    step: str,
    attempt: int,
    profile: Profile,
    tier: str,
    priority: int,
) -> Route:
    """Tier, channel and priority of attempt ``attempt`` (1, 2, ...).

    The first rule matching (journey, step, segment, value tier) gives the ladder: attempt n
    takes ``ladder[n - 1]``, the last entry repeating; with no match the candidate keeps
    ``tier`` (its catalog ladder's). The tier is then kept to those the journey allows
    (:func:`allowed_tier`). Priority is ``priority`` plus the rule's adjustment, kept
    in 0..100. The channel is the profile's preferred one when the tier lists it, else the
    tier's first.
    """
    tier, channel, adjust, index = route_parts(
        policy, journey, step, attempt, profile.segment, profile.value_tier,
        bool(profile.rm_id), profile.preferred_channel, tier,
    )  # fmt: skip
    return Route(tier, channel, min(max(priority + adjust, 0), 100), index)


def allowed_tier(tier: str, allowed: tuple[str, ...], has_rm: bool, without_rm: str) -> str:
    """``tier`` kept to the tiers a journey allows (its catalog ``tiers``).

    A client without an RM gets no RM task: ``offline`` becomes ``without_rm`` (the policy's
    ``offline_without_rm``), and ``offline`` is not among its allowed tiers (when it was the
    only one, ``without_rm`` is). A tier not allowed becomes the highest allowed tier below
    it in escalation order (ai, remote, offline), or the lowest allowed when none is below.
    """
    if tier == "offline" and not has_rm:
        tier = without_rm
    if not has_rm:
        allowed = tuple(t for t in allowed if t != "offline") or (without_rm,)
    if tier in allowed:
        return tier
    rank = TIERS.index(tier)
    below = [t for t in allowed if TIERS.index(t) < rank]
    return max(below, key=TIERS.index) if below else min(allowed, key=TIERS.index)


def route_parts(
    policy: Policy,
    journey: str,
    step: str,
    attempt: int,
    segment: str,
    value_tier: str,
    has_rm: bool,
    preferred_channel: str,
    tier: str,
) -> tuple[str, str, int, int]:
    """What :func:`route_uncached` decides from these profile fields: (tier, channel,
    priority adjustment, rule index); the priority is the caller's plus the adjustment."""
    index, adjust = -1, 0
    for rule in policy.rules:
        if rule.matches(journey, step, segment, value_tier):
            tier = rule.ladder[min(max(attempt, 1), len(rule.ladder)) - 1]
            index, adjust = rule.index, rule.priority
            break
    tier = allowed_tier(tier, policy.allowed_tiers(journey), has_rm, policy.offline_without_rm)
    channels = policy.channels[tier]
    channel = preferred_channel if preferred_channel in channels else channels[0]
    return tier, channel, adjust, index
