"""Pure decisions with boundary times: quiet hours across zones and midnight, caps, cooldown."""

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.localtime import (
    Window,
    local,
    periods,
    quiet_until,
    quiet_until_many,
    wall,
    wall_ms_many,
)
from policy.profiles import Profile, zone
from policy.rules import (
    DEFERRED,
    SENT,
    SUPPRESSED,
    Candidate,
    Decision,
    Usage,
    client_resumed,
    decide,
    decisions_of_columns,
    usage_of,
)
from policy.settings import Policy

At = Callable[[str, str], int]
HOUR = 3_600_000
POLICY = Policy(
    quiet_segments={"senior": Window.parse("20:00-09:00"), "executive": None},
    per_day=2,
    per_week=3,
    cooldown_ms=6 * HOUR,
    cooldown_journeys={"card_activation": 0},
    max_delay_ms=24 * HOUR,
)
LONDON = Profile("L1", "car_owner", tz="Europe/London")
SHANGHAI = Profile("S1", "car_owner", tz="Asia/Shanghai")


def cand(now: int, deadline: int | None = None, **kw: object) -> Candidate:
    values: dict = {"journey": "open_account", "step": "kyc", "attempt": 1, **kw}
    dl = now if deadline is None else deadline
    return Candidate("id-1", "C1", deadline_ms=dl, now_ms=now, **values)


@pytest.mark.parametrize(
    ("local", "outcome"),
    [
        ("2026-01-05 20:59:59.999", SENT),
        ("2026-01-05 21:00:00.000", DEFERRED),
        ("2026-01-05 23:59:59.999", DEFERRED),
        ("2026-01-06 00:00:00.000", DEFERRED),
        ("2026-01-06 07:59:59.999", DEFERRED),
        ("2026-01-06 08:00:00.000", SENT),
    ],
)
@pytest.mark.parametrize("profile", [LONDON, SHANGHAI], ids=["london", "shanghai"])
def test_quiet_hour_edges_in_the_clients_zone(
    at: At, local: str, outcome: str, profile: Profile
) -> None:
    now = at(local, profile.tz)
    d = decide(cand(now), profile, POLICY, Usage())
    assert d.outcome == outcome
    if outcome == DEFERRED:
        assert d.reason == "quiet_hours"
        assert d.recheck_at_ms == at("2026-01-06 08:00:00.000", profile.tz)
    else:
        assert (d.reason, d.recheck_at_ms) == ("", 0)


def test_same_instant_differs_by_zone(at: At) -> None:
    now = at("2026-01-05 13:30", "UTC")  # 21:30 in Shanghai, 13:30 in London
    assert decide(cand(now), SHANGHAI, POLICY, Usage()).outcome == DEFERRED
    assert decide(cand(now), LONDON, POLICY, Usage()).outcome == SENT
    d = decide(cand(now), SHANGHAI, POLICY, Usage())
    assert d.recheck_at_ms == at("2026-01-06 00:00", "UTC")  # 08:00 Shanghai


def test_segment_quiet_hours_override(at: At) -> None:
    senior = Profile("C1", "senior", tz="Europe/London")
    executive = Profile("C1", "executive", tz="Europe/London")
    now = at("2026-01-05 20:00", "Europe/London")
    assert decide(cand(now), senior, POLICY, Usage()).recheck_at_ms == at(
        "2026-01-06 09:00", "Europe/London"
    )
    late = at("2026-01-06 03:00", "Europe/London")
    assert decide(cand(late), executive, POLICY, Usage()).outcome == SENT  # "none"


def test_window_within_one_day() -> None:
    window = Window.parse("01:00-06:00")
    tz = zone("UTC")
    assert quiet_until(3_599_999, tz, window) is None
    assert quiet_until(3_600_000, tz, window) == 6 * HOUR
    assert quiet_until(6 * HOUR, tz, window) is None
    assert str(window) == "01:00-06:00"


def test_quiet_end_on_a_dst_change_day(at: At) -> None:
    # Europe/London springs forward on 2026-03-29 01:00 UTC: the night is an hour shorter
    now = at("2026-03-28 22:00", "Europe/London")
    until = quiet_until(now, zone("Europe/London"), Window.parse("21:00-08:00"))
    assert until == at("2026-03-29 07:00", "UTC")
    assert until - now == 9 * HOUR


def test_quiet_hours_ending_in_a_repeated_hour_end_at_its_second_pass(at: At) -> None:
    """New York falls back on 2026-11-01 at 06:00 UTC (02:00 EDT -> 01:00 EST), so 01:00-01:59
    comes twice. Inside the second pass the end, 01:30, is the second 01:30, not the first
    (already past: the candidate was re-deferred by a millisecond at a time, a million
    times an hour). The batch path agrees."""
    tz, window = zone("America/New_York"), Window.parse("21:00-01:30")
    second_pass = at("2026-11-01 06:10", "UTC")  # 01:10 EST
    assert quiet_until(second_pass, tz, window) == at("2026-11-01 06:30", "UTC")
    first_pass = at("2026-11-01 05:10", "UTC")  # 01:10 EDT: ends at the first 01:30
    assert quiet_until(first_pass, tz, window) == at("2026-11-01 05:30", "UTC")
    now = np.array([second_pass, first_pass], np.int64)
    zone_no = np.zeros(2, np.int64)
    got = quiet_until_many(
        now, wall_ms_many(now, zone_no, [tz]), zone_no, [tz],
        np.full(2, window.start_ms, np.int64), np.full(2, window.end_ms, np.int64),
    )  # fmt: skip
    assert got.tolist() == [at("2026-11-01 06:30", "UTC"), at("2026-11-01 05:30", "UTC")]


def test_quiet_hours_ending_in_a_skipped_hour_end_at_the_change(at: At) -> None:
    """New York springs forward on 2026-03-08 at 07:00 UTC (02:00 EST -> 03:00 EDT): 02:30
    never shows. Quiet hours until 02:30 end at the change, 03:00 EDT, when the wall clock
    first shows a later time (not at 03:30 EDT, half an hour after 03:05 is already no longer
    quiet). The batch path agrees."""
    tz, window = zone("America/New_York"), Window.parse("21:00-02:30")
    night = at("2026-03-08 06:00", "UTC")  # 01:00 EST
    change = at("2026-03-08 07:00", "UTC")
    assert quiet_until(night, tz, window) == change
    assert quiet_until(change + 5 * 60_000, tz, window) is None  # 03:05 EDT
    now = np.array([night], np.int64)
    zone_no = np.zeros(1, np.int64)
    got = quiet_until_many(
        now, wall_ms_many(now, zone_no, [tz]), zone_no, [tz],
        np.full(1, window.start_ms, np.int64), np.full(1, window.end_ms, np.int64),
    )  # fmt: skip
    assert got.tolist() == [change]


def test_do_not_contact_beats_everything(at: At) -> None:
    profile = Profile("C1", "car_owner", tz="Europe/London", do_not_contact=True)
    d = decide(
        cand(at("2026-01-05 22:00", "Europe/London"), resumed=True), profile, POLICY, Usage()
    )
    assert (d.outcome, d.reason) == (SUPPRESSED, "do_not_contact")


def test_resumed_is_suppressed_even_in_quiet_hours(at: At) -> None:
    d = decide(cand(at("2026-01-05 22:00", "Europe/London"), resumed=True), LONDON, POLICY, Usage())
    assert (d.outcome, d.reason) == (SUPPRESSED, "resumed")


def test_stale_edges(at: At) -> None:
    deadline = at("2026-01-05 10:00", "Europe/London")
    ok = decide(cand(deadline + 24 * HOUR, deadline), LONDON, POLICY, Usage())
    assert ok.outcome == SENT
    late = decide(cand(deadline + 24 * HOUR + 1, deadline), LONDON, POLICY, Usage())
    assert (late.outcome, late.reason) == (SUPPRESSED, "stale")
    # deferring past the limit is stale at once: stalled 07:59 yesterday, now 22:00
    deadline = at("2026-01-05 07:59", "Europe/London")
    d = decide(cand(at("2026-01-05 22:00", "Europe/London"), deadline), LONDON, POLICY, Usage())
    assert (d.outcome, d.reason) == (SUPPRESSED, "stale")
    deadline = at("2026-01-05 08:00", "Europe/London")
    d = decide(cand(at("2026-01-05 22:00", "Europe/London"), deadline), LONDON, POLICY, Usage())
    assert d.outcome == DEFERRED


def test_caps_at_exactly_n() -> None:
    now = 1_767_600_000_000
    assert decide(cand(now), LONDON, POLICY, Usage(day=1, week=1)).outcome == SENT
    d = decide(cand(now), LONDON, POLICY, Usage(day=2, week=2))
    assert (d.outcome, d.reason) == (SUPPRESSED, "daily_cap")
    d = decide(cand(now), LONDON, POLICY, Usage(day=0, week=3))
    assert (d.outcome, d.reason) == (SUPPRESSED, "weekly_cap")
    assert decide(cand(now), LONDON, POLICY, Usage(day=0, week=2)).outcome == SENT


def test_cooldown_edges() -> None:
    now = 1_767_600_000_000
    at_edge = Usage(nearest_sent_ms=now - 6 * HOUR)
    assert decide(cand(now), LONDON, POLICY, at_edge).outcome == SENT
    d = decide(cand(now), LONDON, POLICY, Usage(nearest_sent_ms=now - 6 * HOUR + 1))
    assert (d.outcome, d.reason) == (SUPPRESSED, "cooldown")
    later = Usage(nearest_sent_ms=now + 6 * HOUR - 1)  # a send after now counts the same way
    assert decide(cand(now), LONDON, POLICY, later).reason == "cooldown"
    assert decide(cand(now), LONDON, POLICY, Usage(nearest_sent_ms=now + 6 * HOUR)).outcome == SENT
    no_cooldown = cand(now, journey="card_activation")
    assert decide(no_cooldown, LONDON, POLICY, Usage(nearest_sent_ms=now)).outcome == SENT


def test_usage_counts_local_day_and_week(at: At) -> None:
    tz = "Asia/Shanghai"
    sends = [
        (at("2026-01-04 23:59:59.999", tz), "a"),  # Sunday: previous week
        (at("2026-01-05 00:00:00.000", tz), "a"),  # Monday
        (at("2026-01-07 12:00", tz), "b"),
        (at("2026-01-11 23:59:59.999", tz), "a"),  # Sunday: same week
        (at("2026-01-12 00:00:00.000", tz), "b"),  # next Monday
    ]
    u = usage_of(sends, "a", at("2026-01-11 23:59:59.999", tz), tz)
    assert (u.day, u.week, u.nearest_sent_ms) == (1, 3, at("2026-01-11 23:59:59.999", tz))
    u = usage_of(sends, "a", at("2026-01-12 00:00:00.000", tz), tz)
    assert (u.day, u.week) == (1, 1)
    u = usage_of(sends, "a", at("2026-01-07 11:59", tz), tz)  # later sends count too
    assert (u.day, u.week, u.nearest_sent_ms) == (1, 3, at("2026-01-05 00:00:00.000", tz))
    u = usage_of(sends, "a", at("2026-01-10 12:00", tz), tz)  # the nearest send of "a"
    assert u.nearest_sent_ms == at("2026-01-11 23:59:59.999", tz)


def test_periods_are_local(at: At) -> None:
    p = periods(at("2026-01-07 03:00", "Asia/Shanghai"), zone("Asia/Shanghai"))
    assert (p.day, p.week) == ("2026-01-07", "2026-W02")
    assert p.day_start == at("2026-01-07 00:00", "Asia/Shanghai")
    assert p.week_start == at("2026-01-05 00:00", "Asia/Shanghai")
    assert p.week_end - p.week_start == 7 * 24 * HOUR
    dst = periods(at("2026-03-29 12:00", "Europe/London"), zone("Europe/London"))
    assert dst.day_end - dst.day_start == 23 * HOUR


def test_client_resumed() -> None:
    policy = Policy()
    assert client_resumed(policy, 1000, 1000, "app")
    assert not client_resumed(policy, 1000, 999, "app")  # before the deadline: no stall yet
    branch_only = Policy(resume_channels=("branch",))
    assert client_resumed(branch_only, 1000, 5000, "branch")
    assert not client_resumed(branch_only, 1000, 5000, "app")


def test_decision_fields(at: At) -> None:
    profile = Profile("C1", "ultra_high_net_worth", "private", "RM3", "video", "Europe/London")
    now = at("2026-01-05 12:00", "Europe/London")
    d = decide(cand(now, attempt=2, priority=70, tier="offline"), profile, POLICY, Usage())
    assert (d.outcome, d.tier, d.channel, d.rm_id, d.segment) == (
        SENT,
        "offline",
        "rm_task",
        "RM3",
        "ultra_high_net_worth",
    )
    assert (d.decided_at_ms, d.priority, d.attempt) == (now, 70, 2)


DST_ZONES = ["Europe/London", "America/New_York", "Australia/Lord_Howe", "Asia/Shanghai"]


@settings(max_examples=300, deadline=None)
@given(
    tz=st.sampled_from(DST_ZONES),
    base=st.sampled_from(
        [1_774_746_000_000, 1_793_512_800_000, 1_775_314_800_000, 1_767_600_000_000]
    ),  # 2026 DST changes in London, New York, Lord Howe; and an ordinary day
    delta=st.integers(-2 * HOUR, 2 * HOUR),
)
def test_cached_wall_time_equals_the_exact_conversion(tz: str, base: int, delta: int) -> None:
    """``wall`` (offset cached per quarter hour) shows what ``local`` computes exactly, also
    in the quarter hours around DST changes (including Lord Howe's half-hour one)."""
    now = base + delta
    assert wall(now, zone(tz)) == local(now, zone(tz)).replace(tzinfo=None)
    p = periods(now, zone(tz))
    assert p.day_start <= now < p.day_end and p.week_start <= now < p.week_end


def test_decisions_of_columns_equal_decisions_made_by_init() -> None:
    rows = [
        Decision("i1", "C1", "open_account", "kyc", 1, "senior", SENT, "", "ai", "push", 50, "",
                 1, 0, False),
        Decision("i2", "C2", "loan_application", "offer", 2, "executive", DEFERRED,
                 "quiet_hours", "offline", "rm_task", 80, "RM7", 2, 99, True),
    ]  # fmt: skip
    columns = {name: [getattr(d, name) for d in rows] for name in Decision.__annotations__}
    made = decisions_of_columns(columns)
    assert made == rows
    assert [hash(d) for d in made] == [hash(d) for d in rows]
    with pytest.raises(AttributeError):
        made[0].outcome = SUPPRESSED  # type: ignore[misc]
