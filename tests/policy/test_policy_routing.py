"""Routing as data: first matching rule, wildcards, the escalation ladder, priority."""

import itertools
import tomllib
from dataclasses import replace

import pytest

from ato.catalog import SEGMENTS, load_catalog
from policy.profiles import VALUE_TIERS, Profile
from policy.routing import ROUTE_CACHE, allowed_tier, route, route_uncached
from policy.settings import for_catalog, load_policy, parse_policy

POLICY = parse_policy(
    tomllib.loads(
        """
[[routing.rules]]
journey = "wealth_purchase"
step = "confirm"
segment = "*"
ladder = ["remote"]
priority = 30

[[routing.rules]]
journey = ["wealth_purchase", "loan_application"]
value_tier = ["diamond", "private"]
ladder = ["ai", "remote", "offline"]
priority = 10

[[routing.rules]]
segment = "senior"
ladder = ["remote", "offline"]
priority = -100

[channels]
ai = ["chat", "push"]
"""
    )
)


def client(segment: str = "savvy_regular", tier: str = "mass", **kw: object) -> Profile:
    return Profile("C1", segment, tier, **kw)  # type: ignore[arg-type]


def test_first_matching_rule_wins() -> None:
    # rule 0 matches before rule 1 even for a diamond client
    r = route(POLICY, "wealth_purchase", "confirm", 3, client(tier="diamond", rm_id="R"), "ai", 50)
    assert (r.tier, r.priority, r.rule) == ("remote", 80, 0)


def test_no_rule_keeps_the_catalog_tier() -> None:
    r = route(POLICY, "open_account", "start", 2, client(), "remote", 60)
    assert (r.tier, r.channel, r.priority, r.rule) == ("remote", "phone", 60, -1)


@pytest.mark.parametrize(
    ("attempt", "tier"), [(0, "ai"), (1, "ai"), (2, "remote"), (3, "offline"), (9, "offline")]
)
def test_escalation_ladder_by_attempt(attempt: int, tier: str) -> None:
    profile = client(tier="private", rm_id="RM1")
    r = route(POLICY, "loan_application", "income", attempt, profile, "ai", 50)
    assert (r.tier, r.rule, r.priority) == (tier, 1, 60)


def test_offline_without_rm_falls_back() -> None:
    r = route(POLICY, "loan_application", "income", 3, client(tier="private"), "ai", 50)
    assert r.tier == "remote"


def test_wildcards_and_lists() -> None:
    senior = client("senior")
    r = route(POLICY, "card_activation", "pin", 1, senior, "ai", 50)
    assert (r.tier, r.priority, r.rule) == ("remote", 0, 2)  # priority kept in 0..100
    r = route(POLICY, "wealth_purchase", "amount", 1, senior, "ai", 50)
    assert r.rule == 2  # a senior on mass tier: rule 1 wants diamond/private


def test_channel_follows_preference_within_the_tier() -> None:
    assert route(POLICY, "x", "y", 1, client(), "ai", 1).channel == "chat"
    assert route(POLICY, "x", "y", 1, client(preferred_channel="push"), "ai", 1).channel == "push"
    # preference of another tier is ignored
    assert route(POLICY, "x", "y", 1, client(preferred_channel="video"), "ai", 1).channel == "chat"


def test_default_policy_routes() -> None:
    policy = load_policy()
    uhnw = Profile("C", "ultra_high_net_worth", "private", rm_id="RM9")
    assert route(policy, "open_account", "start", 1, uhnw, "ai", 60).tier == "remote"
    assert route(policy, "open_account", "start", 2, uhnw, "ai", 60).tier == "offline"
    mass = Profile("C", "savvy_regular", "mass", rm_id="RM9")
    tiers = [route(policy, "open_account", "start", a, mass, "ai", 60).tier for a in (1, 2, 3)]
    assert tiers == ["ai", "remote", "remote"]
    top = Profile("C", "car_owner", "diamond", rm_id="RM9")
    tiers = [route(policy, "loan_application", "offer", a, top, "ai", 60).tier for a in (1, 2, 3)]
    assert tiers == ["ai", "remote", "offline"]


CATALOG = load_catalog()


def test_routing_keeps_to_the_tiers_the_catalog_allows() -> None:
    """A rule's tier that the journey's catalog ``tiers`` leave out becomes the highest
    allowed tier below it: the shipped policy gives platinum clients their RM at the third
    stall, but card activation (tiers ai, remote) is never an RM task."""
    policy = for_catalog(load_policy(), CATALOG)
    platinum = Profile("C", "car_owner", "platinum", rm_id="RM9")
    tiers = [route(policy, "card_activation", "pin", a, platinum, "ai", 60).tier for a in (1, 2, 3)]
    assert tiers == ["ai", "remote", "remote"]
    tiers = [
        route(policy, "loan_application", "offer", a, platinum, "ai", 60).tier for a in (1, 2, 3)
    ]
    assert tiers == ["ai", "remote", "offline"]
    # insurance trusts allow remote and offline: an AI rung is lifted to the lowest allowed
    ai_only = replace(policy, rules=(replace(policy.rules[0], journey=None, ladder=("ai",)),))
    assert route(ai_only, "insurance_trust", "x", 1, platinum, "ai", 60).tier == "remote"


@pytest.mark.parametrize(
    ("tier", "allowed", "has_rm", "expected"),
    [
        ("offline", ("ai", "remote", "offline"), True, "offline"),
        ("offline", ("ai", "remote", "offline"), False, "remote"),  # offline_without_rm
        ("offline", ("ai", "remote"), True, "remote"),
        ("offline", ("ai",), True, "ai"),
        ("remote", ("ai", "offline"), True, "ai"),
        ("ai", ("remote", "offline"), True, "remote"),
        ("ai", ("offline",), True, "offline"),
        ("ai", ("offline",), False, "remote"),  # no RM, so no RM task even here
        ("remote", ("ai", "offline"), False, "ai"),
    ],
)
def test_allowed_tier(tier: str, allowed: tuple[str, ...], has_rm: bool, expected: str) -> None:
    assert allowed_tier(tier, allowed, has_rm, "remote") == expected


def test_remembered_routes_equal_fresh_ones() -> None:
    """``route`` (remembered per policy) answers what ``route_uncached`` computes, for every
    combination the shipped policy distinguishes, asked twice."""
    journeys = [(j.name, s.name) for j in CATALOG.journeys for s in j.steps]
    for _ in range(2):
        for k, (journey, step) in enumerate(journeys):
            for attempt, segment, tier_, rm in itertools.product(
                (1, 2, 3), SEGMENTS, VALUE_TIERS, ("", "RM7")
            ):
                profile = Profile(f"C{k}", segment, tier_, rm, "", "Asia/Shanghai")
                args = (POLICY, journey, step, attempt, profile, "ai", 40 + k % 20)
                assert route(*args) == route_uncached(*args)
    assert 0 < len(POLICY.route_cache) <= ROUTE_CACHE


def test_a_changed_copy_of_a_policy_does_not_reuse_its_routes() -> None:
    profile = Profile("C1", "senior", "mass", "", "", "Asia/Shanghai")
    args = ("loan_application", "apply", 2, profile, "ai", 40)
    assert route(POLICY, *args).tier == "remote"  # senior's offline rung, no RM: the fallback
    copy = replace(POLICY, offline_without_rm="ai")
    assert copy.route_cache is not POLICY.route_cache
    assert route(copy, *args) == route_uncached(copy, *args)
    assert route(copy, *args).tier == "ai"
