"""The columnar contact-policy checks (policy.batch_checks) agree with the reference
policy.rules.precheck row by row, across zones, DST changes, quiet-hour edges and routing."""

import tomllib
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from ato.catalog import SEGMENTS, TIERS, load_catalog
from policy.batch_checks import PASS, QUIET, REASONS, BatchChecks, ProfileTable
from policy.caps import CapStore
from policy.localtime import Window, periods, wall, wall_ms_many
from policy.profiles import CONTACT_CHANNELS, VALUE_TIERS, Profile, zone
from policy.rules import DEFERRED, Candidate, precheck
from policy.settings import Policy, parse_policy

CATALOG = load_catalog()
HOUR = 3_600_000
ROUTED = parse_policy(
    tomllib.loads(
        """
[[routing.rules]]
journey = "wealth_purchase"
step = "confirm"
ladder = ["remote"]
priority = 30

[[routing.rules]]
value_tier = ["diamond", "private"]
ladder = ["ai", "remote", "offline", "offline", "remote"]
priority = 10

[[routing.rules]]
segment = "senior"
ladder = ["offline"]
priority = -100
"""
    )
)
POLICIES = [
    Policy(),
    Policy(
        rules=ROUTED.rules,
        offline_without_rm="ai",
        quiet_default=Window.parse("08:30-12:15"),
        quiet_segments={"senior": Window.parse("20:00-09:00"), "executive": None},
        max_delay_ms=6 * HOUR,
    ),
    Policy(rules=ROUTED.rules, quiet_default=None, max_delay_ms=0),
]
ZONES = ["Asia/Shanghai", "Europe/London", "America/New_York", "Australia/Sydney", "UTC"]
# three days from the day before each 2026 DST change of New York, London and Sydney, and a
# plain week
STARTS = [
    datetime(2026, month, day, tzinfo=ZoneInfo("UTC"))
    for month, day in ((3, 7), (3, 28), (10, 3), (10, 24), (10, 31), (1, 5))
]
JOURNEYS = CATALOG.journeys

profiles = st.builds(
    Profile,
    client_id=st.sampled_from(["C1", "C2", "C3"]),
    segment=st.sampled_from(SEGMENTS),
    value_tier=st.sampled_from(VALUE_TIERS),
    rm_id=st.sampled_from(["", "RM0001"]),
    preferred_channel=st.sampled_from(["", *CONTACT_CHANNELS]),
    tz=st.sampled_from(ZONES),
    do_not_contact=st.booleans(),
)


QUARTER = 900_000
quarters = st.integers(0, 3 * 24 * 4).map(lambda q: q * QUARTER)
# quiet-hour edges and DST changes fall on quarter hours: hit them, and a ms either side
jitters = st.sampled_from([0, 0, 0, -1, 1, 59_999])


@st.composite
def candidates(draw: st.DrawFn) -> tuple[int, int, int, int, int, int, bool, Profile]:
    """(journey, step, attempt, deadline, now, priority, resumed, profile)."""
    j = draw(st.integers(0, len(JOURNEYS) - 1))
    s = draw(st.integers(0, len(JOURNEYS[j].steps) - 1))
    start = int(draw(st.sampled_from(STARTS)).timestamp() * 1000)
    deadline = start + draw(quarters) + draw(jitters)
    delays = st.sampled_from([0, 6 * HOUR, 6 * HOUR + 1, 24 * HOUR, 24 * HOUR + 1])
    now = draw(
        st.one_of(
            delays.map(lambda d: deadline + d),
            st.tuples(quarters, jitters).map(lambda q: start + sum(q)),
            st.integers(0, 30 * HOUR).map(lambda d: deadline + d),
        )
    )
    return (
        j, s, draw(st.integers(1, 6)), deadline, now, draw(st.integers(0, 100)),
        draw(st.booleans()), draw(profiles),
    )  # fmt: skip


CHECKS = [
    BatchChecks(p, CATALOG, ProfileTable()) for p in POLICIES
]  # routes cached across examples

Row = tuple[int, int, int, int, int, int, bool, Profile]


def assert_agree(which: int, rows: list[Row]) -> None:
    """BatchChecks of ``rows`` equal precheck (and periods) row by row."""
    policy, checks = POLICIES[which], CHECKS[which]
    j, s, attempt, deadline, now, priority, resumed, profs = map(list, zip(*rows, strict=True))
    arrays = [np.array(c, np.int64) for c in (j, s, attempt, deadline, now, priority)]
    profile = checks.profiles.encode([p.values() for p in profs])
    got = checks.check(*arrays, np.array(resumed, bool), profile)
    day_start, day_end, week_start, week_end = checks.period_bounds(arrays[4], profile)
    for i, (jj, ss, att, dl, t, prio, res, prof) in enumerate(rows):
        journey = JOURNEYS[jj]
        tier = journey.tiers[min(att, 3, len(journey.tiers)) - 1]
        c = Candidate(
            "id", prof.client_id, journey.name, journey.steps[ss].name, att, dl, t, prio, tier, res
        )
        route, early = precheck(c, prof, policy)
        assert TIERS[got.tier[i]] == route.tier
        assert CONTACT_CHANNELS[got.channel[i]] == route.channel
        assert got.priority[i] == route.priority
        if early is None:
            assert got.reason[i] == PASS
        else:
            assert REASONS[got.reason[i]] == early.reason
            assert (got.reason[i] == QUIET) == (early.outcome == DEFERRED)
            assert got.recheck[i] == early.recheck_at_ms
        p = periods(t, zone(prof.tz))
        bounds = (day_start[i], day_end[i], week_start[i], week_end[i])
        assert bounds == (p.day_start, p.day_end, p.week_start, p.week_end)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(range(len(POLICIES))), st.lists(candidates(), min_size=1, max_size=40))
def test_batch_checks_agree_with_precheck(which: int, rows: list[Row]) -> None:
    assert_agree(which, rows)


def test_every_attempt_of_a_ladder_routes_as_precheck_in_one_batch() -> None:
    wealth = next(i for i, j in enumerate(JOURNEYS) if j.name == "wealth_purchase")
    deadline = int(datetime(2026, 1, 5, 3, tzinfo=ZoneInfo("UTC")).timestamp() * 1000)
    for rm_id in ("", "RM0001"):
        prof = Profile("C1", "executive", "diamond", rm_id=rm_id, tz="UTC")
        rows = [(wealth, 0, a, deadline, deadline, 50, False, prof) for a in (3, 4, 5, 6, 1, 2)]
        for which in range(len(POLICIES)):
            assert_agree(which, rows)


def test_quiet_hours_ending_exactly_at_the_latest_dispatch_time_defer() -> None:
    at = lambda text: int(datetime.fromisoformat(text + "+00:00").timestamp() * 1000)  # noqa: E731
    prof = Profile("C1", "car_owner", tz="Europe/London")  # 08:30-12:15 in policy 1, UTC in January
    now = at("2026-01-05 09:00:00")
    rows = [
        (0, 0, 1, at("2026-01-05 06:15:00"), now, 50, False, prof),  # latest = 12:15: deferred
        (0, 0, 1, at("2026-01-05 06:14:59.999"), now, 50, False, prof),  # stale
    ]
    assert_agree(1, rows)
    got = CHECKS[1].check(
        *(np.array(c, np.int64) for c in list(zip(*rows, strict=True))[:6]),
        np.zeros(2, bool),
        CHECKS[1].profiles.encode([prof.values()] * 2),
    )
    assert [REASONS[r] for r in got.reason] == ["quiet_hours", "stale"]


def test_wall_times_across_an_offset_change_inside_a_quarter_hour() -> None:
    """Shanghai left local mean time (+8:05:43) at 1901-01-01 00:00 local, 15:54:17 UTC:
    the quarter hour around it takes the slow path, row by row."""
    tz = ZoneInfo("Asia/Shanghai")
    change = int(datetime(1900, 12, 31, 15, 54, 17, tzinfo=ZoneInfo("UTC")).timestamp() * 1000)
    now = change + np.arange(-40, 40, dtype=np.int64) * 30_000 + 7
    epoch = datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC")).replace(tzinfo=None)
    ms = timedelta(milliseconds=1)
    zone_no = np.zeros(len(now), np.int64)
    assert wall_ms_many(now, zone_no, [tz]).tolist() == [
        (wall(t, tz) - epoch) // ms for t in now.tolist()
    ]


def test_profile_table_numbers_each_distinct_profile_once_and_starts_over_when_full() -> None:
    a = Profile("C1", "senior", tz="Europe/London").values()
    b = Profile("C2", "executive", "private", rm_id="RM7", do_not_contact=True).values()
    table = ProfileTable(max_entries=2)
    assert table.encode([a, b, a]).tolist() == [0, 1, 0]
    segment, value_tier, has_rm, preferred, zone_no, dnc = table.arrays()
    assert [SEGMENTS[x] for x in segment] == ["senior", "executive"]
    assert [VALUE_TIERS[x] for x in value_tier] == ["mass", "private"]
    assert has_rm.tolist() == [0, 1] and dnc.tolist() == [0, 1] and preferred.tolist() == [0, 0]
    assert [table.zone_names[z] for z in zone_no] == ["Europe/London", "Asia/Shanghai"]
    assert table.rm_ids(np.array([1, 0])) == ["RM7", ""]
    c = Profile("C3", "car_owner", preferred_channel="chat").values()
    assert table.encode([c]).tolist() == [2]  # three held, more than max_entries from now on
    assert table.encode([c, a]).tolist() == [0, 1]  # started over before this batch
    assert table.arrays()[3].tolist() == [CONTACT_CHANNELS.index("chat") + 1, 0]


def test_cap_rows_from_columns_match_the_reference_rows() -> None:
    store = CapStore(redis.Redis(), Policy(cooldown_journeys={"card_activation": 0}))  # no I/O
    prof = Profile("C9", "senior", tz="America/New_York")
    now = int(datetime(2026, 3, 8, 6, 59, tzinfo=ZoneInfo("UTC")).timestamp() * 1000)
    c = Candidate("id-9", "C9", "card_activation", "start", 1, now, now)
    p = periods(now, zone(prof.tz))
    rows = CapStore.rows(
        ["C9"], ["card_activation"], ["id-9"], [now],
        [p.day_start], [p.day_end], [p.week_start], [p.week_end], [0],
    )  # fmt: skip
    assert rows == [store._row(c, prof)]
    assert rows[0][:3] == ["ato:sent:{C9}", "card_activation\x1fid-9", "card_activation\x1f"]
