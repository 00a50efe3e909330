"""Caps and cooldowns in Redis: exact limits, local weeks, idempotent ids, shared processes."""

import multiprocessing
import random
import threading
from collections.abc import Callable
from typing import Any

import redis

from policy.caps import HORIZON, SEPARATOR, CapStore, sent_key
from policy.profiles import Profile
from policy.rules import SENT, SUPPRESSED, Candidate, decide, usage_of
from policy.settings import Policy

At = Callable[[str, str], int]
HOUR = 3_600_000
TZ = "Asia/Shanghai"
POLICY = Policy(quiet_default=None, per_day=3, per_week=5, cooldown_ms=0)
PROFILE = Profile("C1", "car_owner", tz=TZ)


def cand(iid: str, now: int, journey: str = "open_account", client: str = "C1") -> Candidate:
    return Candidate(iid, client, journey, "kyc", 1, deadline_ms=now, now_ms=now)


def outcomes(store: CapStore, items: list[Candidate], profile: Profile = PROFILE) -> list[str]:
    return [d.reason or d.outcome for d in store.decide([(c, profile) for c in items])]


def test_daily_cap_at_exactly_n_in_one_round_trip(counting: Any, at: At) -> None:
    store = CapStore(counting.client, POLICY)
    outcomes(store, [cand("warm", at("2026-01-01 12:00", TZ), client="W")])  # loads the script
    counting.reset()
    now = at("2026-01-05 12:00", TZ)
    got = outcomes(store, [cand(f"i{k}", now + k) for k in range(5)])
    assert got == [SENT, SENT, SENT, "daily_cap", "daily_cap"]
    assert counting.sends == 1
    assert counting.client.zcard(sent_key("C1")) == 3


def test_day_and_week_boundaries_are_local(r: redis.Redis, at: At) -> None:
    store = CapStore(r, POLICY)
    monday = at("2026-01-05 00:00", TZ)
    sends = [cand(f"d{d}", monday + d * 24 * HOUR) for d in range(5)]  # Mon..Fri
    assert outcomes(store, sends) == [SENT] * 5
    sunday_end = at("2026-01-11 23:59:59.999", TZ)
    next_monday = at("2026-01-12 00:00:00.000", TZ)
    assert outcomes(store, [cand("sun", sunday_end)]) == ["weekly_cap"]
    assert outcomes(store, [cand("mon", next_monday)]) == [SENT]
    # the same instant is still Sunday in London, in the capped ISO week there
    london = Profile("C2", "car_owner", tz="Europe/London")
    old_week = at("2026-01-09 12:00", "Europe/London")
    history = [cand(f"l{k}", old_week - k * 24 * HOUR, client="C2") for k in range(5)]
    assert outcomes(store, history, london) == [SENT] * 5
    assert outcomes(store, [cand("l-late", next_monday, client="C2")], london) == ["weekly_cap"]


def test_cooldown_per_journey_edges(r: redis.Redis) -> None:
    store = CapStore(r, Policy(quiet_default=None, per_day=9, per_week=9, cooldown_ms=HOUR))
    t = 1_767_600_000_000
    assert outcomes(store, [cand("a", t)]) == [SENT]
    assert outcomes(store, [cand("b", t + HOUR - 1)]) == ["cooldown"]
    assert outcomes(store, [cand("c", t + 1, journey="card_activation")]) == [SENT]
    assert outcomes(store, [cand("d", t + HOUR)]) == [SENT]
    assert r.zscore(sent_key("C1"), f"open_account{SEPARATOR}d") == t + HOUR


def test_sends_later_in_event_time_count_too(r: redis.Redis, at: At) -> None:
    """Sends recorded out of event-time order (a pipeline retried after some of its calls
    ran, two flows at different event times) still hold the caps and the cooldown: what
    counts is the day, the week and the distance, not the order."""
    policy = Policy(quiet_default=None, per_day=1, per_week=9, cooldown_ms=4 * HOUR)
    store = CapStore(r, policy)
    noon = at("2026-01-05 12:00", TZ)
    assert outcomes(store, [cand("late", noon + HOUR)]) == [SENT]
    assert outcomes(store, [cand("early", noon)]) == ["cooldown"]  # 1 h before a send
    assert outcomes(store, [cand("morning", noon - 5 * HOUR, journey="loan")]) == ["daily_cap"]
    assert outcomes(store, [cand("tuesday", noon + 20 * HOUR, journey="loan")]) == [SENT]


def test_two_flows_at_different_event_times_share_the_daily_cap(r: redis.Redis, at: At) -> None:
    """Flow A is ahead in event time, flow B behind, on the same Redis: the day still gets
    no more than ``per_day`` sends (before, B's 12:00 candidate did not see A's 14:00 send)."""
    policy = Policy(quiet_default=None, per_day=2, per_week=9, cooldown_ms=0)
    ahead, behind = CapStore(r, policy), CapStore(r, policy)
    day = at("2026-01-05 00:00", TZ)
    got = [
        outcomes(ahead, [cand("a10", day + 10 * HOUR, journey="a")]),
        outcomes(ahead, [cand("a14", day + 14 * HOUR, journey="b")]),
        outcomes(behind, [cand("b12", day + 12 * HOUR, journey="c")]),
        outcomes(behind, [cand("b13", day + 13 * HOUR, journey="d")]),
    ]
    assert got == [[SENT], [SENT], ["daily_cap"], ["daily_cap"]]
    assert r.zcard(sent_key("C1")) == 2


def test_replayed_id_counts_once(r: redis.Redis) -> None:
    store = CapStore(r, POLICY)
    t = 1_767_600_000_000
    first = store.decide([(cand("same", t), PROFILE)])[0]
    again = store.decide([(cand("same", t), PROFILE), (cand("same", t), PROFILE)])
    assert first.outcome == SENT and not first.replayed
    assert [(d.outcome, d.replayed) for d in again] == [(SENT, True), (SENT, True)]
    assert r.zcard(sent_key("C1")) == 1
    assert outcomes(store, [cand("x", t), cand("y", t), cand("z", t)]) == [SENT, SENT, "daily_cap"]


def test_pure_checks_skip_redis(counting: Any, at: At) -> None:
    store = CapStore(counting.client, Policy())
    counting.reset()
    night = at("2026-01-05 23:00", TZ)
    dnc = Profile("C1", "car_owner", tz=TZ, do_not_contact=True)
    got = store.decide([(cand("q", night), PROFILE), (cand("n", night), dnc)])
    assert [(d.outcome, d.reason) for d in got] == [
        ("deferred", "quiet_hours"),
        (SUPPRESSED, "do_not_contact"),
    ]
    assert counting.sends == 0


def test_script_reloaded_after_flush(r: redis.Redis) -> None:
    store = CapStore(r, POLICY)
    assert outcomes(store, [cand("a", 1_767_600_000_000)]) == [SENT]
    assert store.stats["script_loads"] == 1
    r.script_flush()
    assert outcomes(store, [cand("b", 1_767_700_000_000)]) == [SENT]
    assert store.stats["script_loads"] == 2


def test_keys_expire(r: redis.Redis) -> None:
    CapStore(r, POLICY).decide([(cand("a", 1_767_600_000_000), PROFILE)])
    assert 0 < r.pttl(sent_key("C1")) <= 8 * 24 * HOUR


def test_a_send_prunes_members_older_than_the_retention(r: redis.Redis) -> None:
    store = CapStore(r, POLICY)
    t = 1_767_600_000_000
    key = sent_key("C1")
    r.zadd(key, {f"loan{SEPARATOR}old": t - store.ttl_ms - 1, f"loan{SEPARATOR}kept": t - HOUR})
    assert outcomes(store, [cand("new", t)]) == [SENT]
    kept = [HORIZON.encode(), f"loan{SEPARATOR}kept".encode(), b"open_account\x1fnew"]
    assert sorted(r.zrange(key, 0, -1)) == kept
    assert r.zscore(key, HORIZON) == t - store.ttl_ms  # what the prune removed lay before it
    r.zadd(key, {f"loan{SEPARATOR}old": t - store.ttl_ms - 1})
    assert outcomes(store, [cand("new", t)]) == [SENT]  # a replay: nothing written, or pruned
    assert r.zcard(key) == 4


def test_a_decision_reaching_back_past_a_prune_is_suppressed_not_sent(
    r: redis.Redis, at: At
) -> None:
    """A send 9 days later pruned the sends of day T: a candidate of day T (a flow that far
    behind, or a replay after a restart) cannot be counted against them, so it is not sent
    (before, the daily cap's second candidate went out on replay)."""
    store = CapStore(r, Policy(quiet_default=None, per_day=1, per_week=9, cooldown_ms=0))
    t = at("2026-01-05 10:00", TZ)
    day = 24 * HOUR
    first = [cand("x", t), cand("y", t + HOUR, journey="loan")]
    assert outcomes(store, first) == [SENT, "daily_cap"]
    assert outcomes(store, [cand("z", t + 9 * day, journey="card")]) == [SENT]
    assert not r.zscore(sent_key("C1"), f"open_account{SEPARATOR}x")  # pruned
    assert outcomes(store, [cand("y", t + HOUR, journey="loan")]) == ["history_pruned"]
    assert outcomes(store, [cand("w", t + 2 * day, journey="fx")]) == ["history_pruned"]
    assert outcomes(store, [cand("z", t + 9 * day, journey="card")]) == [SENT]  # a replay
    assert outcomes(store, [cand("v", t + 9 * day + HOUR, journey="fx")]) == ["daily_cap"]
    assert outcomes(store, [cand("u", t + 10 * day, journey="fx")]) == [SENT]


def test_a_replay_finds_what_the_crashed_run_sent_before_it_went_days_further(
    r: redis.Redis, at: At
) -> None:
    """The crashed run decided x (sent) and y (daily cap), then, days of event time on and
    before its next snapshot (a catch-up run's final flush), z: z's send pruned x, so the
    resumed run, deciding x again, suppressed it as history_pruned (an intervention sent
    before the crash, lost when it had not been delivered yet). With the watermark of the
    snapshot it resumes from as ``safe_ms``, nothing it re-decides is pruned."""
    store = CapStore(r, Policy(quiet_default=None, per_day=1, per_week=9, cooldown_ms=0))
    t = at("2026-01-05 10:00", TZ)
    safe = t - HOUR  # the snapshot's watermark: x, y and z are decided after it
    x, y, z = cand("x", t), cand("y", t + HOUR, journey="loan"), cand("z", t + 9 * 24 * HOUR)
    decide = store.decide
    assert [d.reason or d.outcome for d in decide([(x, PROFILE), (y, PROFILE)], None, safe)] == [
        SENT, "daily_cap",
    ]  # fmt: skip
    assert [d.outcome for d in decide([(z, PROFILE)], None, safe)] == [SENT]
    assert r.zscore(sent_key("C1"), f"open_account{SEPARATOR}x")  # kept
    again = decide([(x, PROFILE), (y, PROFILE), (z, PROFILE)], None, safe)  # the resumed run
    assert [(d.reason or d.outcome, d.replayed) for d in again] == [
        (SENT, True), ("daily_cap", False), (SENT, True),
    ]  # fmt: skip
    later = t + 9 * 24 * HOUR  # a later snapshot: the sends before it - 8 days may go
    w = cand("w", later + 24 * HOUR)  # the next day: within the caps
    assert [d.outcome for d in decide([(w, PROFILE)], None, later)] == [SENT]
    assert not r.zscore(sent_key("C1"), f"open_account{SEPARATOR}x")  # pruned now


def test_matches_the_pure_reference(r: redis.Redis) -> None:
    policy = Policy(quiet_default=None, per_day=2, per_week=4, cooldown_ms=5 * HOUR)
    store = CapStore(r, policy)
    rng = random.Random(7)
    t = 1_767_600_000_000
    sends: list[tuple[int, str]] = []
    for k in range(300):
        t += rng.randrange(-8 * HOUR, 30 * HOUR)  # sometimes back in event time
        c = cand(f"p{k}", t, journey=rng.choice(["a", "b", "c"]))
        want = decide(c, PROFILE, policy, usage_of(sends, c.journey, t, TZ))
        got = store.decide([(c, PROFILE)])[0]
        assert got == want, k
        if got.outcome == SENT:
            sends.append((t, c.journey))
    assert len(sends) > 40


def _hammer(url: str, worker: int, rounds: int, now: int, out: Any) -> None:
    with redis.Redis.from_url(url) as client:
        store = CapStore(client, POLICY)
        sent = 0
        for k in range(rounds):
            batch = [
                (cand(f"w{worker}-{k}-{j}", now + j, client=f"H{j}"), PROFILE) for j in range(4)
            ]
            sent += sum(d.outcome == SENT for d in store.decide(batch))
        out.put(sent) if hasattr(out, "put") else out.append(sent)


def test_cap_shared_by_two_processes(redis_url: str, r: redis.Redis) -> None:
    now = 1_767_600_000_000
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(redis_url, w, 50, now, queue)) for w in range(2)]
    for p in procs:
        p.start()
    sent = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sum(sent) == 4 * POLICY.per_day  # 4 clients, each exactly at its cap
    for j in range(4):
        assert r.zcard(sent_key(f"H{j}")) == POLICY.per_day


def test_cap_shared_by_threads_with_own_clients(redis_url: str, r: redis.Redis) -> None:
    now = 1_767_600_000_000
    results: list[int] = []
    threads = [
        threading.Thread(target=_hammer, args=(redis_url, w, 40, now, results)) for w in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(results) == 4 * POLICY.per_day
