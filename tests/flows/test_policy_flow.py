"""The journey flow with the contact policy and live state in a real Redis, end to end.

A generator run with its clients' profiles loaded: every ground-truth stall ends as exactly
one of sent / deferred / suppressed (with a reason), the interventions are the sent ones,
routed; caps hold per client-local day. Then the same run with the Redis server stopped and
restarted in the middle: the flow goes on, and decisions, interventions and live state come
out the same as without the outage.
"""

import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from bytewax.testing import TestingSink, TestingSource, run_main
from redis.backoff import NoBackoff
from redis.retry import Retry

from ato.catalog import load_catalog
from ato.config import GeneratorSettings, Settings, clickhouse_url
from ato.devservers import Server, start_redis
from ato.generator import GeneratedTraffic, generate
from ato.runner import DECISIONS_FILE, INTERVENTIONS_FILE, RunResult, run, truth_ids
from flows.journeys import FlowSinks, build_flow
from operators.batches import RawBatch
from operators.decode import Decoder
from operators.policy_step import PolicyContext, PolicyLogic
from operators.route import Router
from operators.shard_step import ShardContext, ShardLogic
from policy.backoff import RedisBackoff
from policy.connection import client_name, connect
from policy.exceptions import PolicyError
from policy.generated import generated_profiles
from policy.live_state import lookup
from policy.localtime import periods
from policy.profiles import Profile, ProfileStore, zone
from policy.rules import DEFER_REASONS, SUPPRESS_REASONS
from policy.settings import Policy, default_policy_path, load_policy
from sinks.clickhouse import ClickHouseStore

CATALOG = load_catalog()
# the shipped policy with tighter caps and cooldown, so a small run reaches them
TIGHT = (
    default_policy_path()
    .read_text(encoding="utf-8")
    .replace("per_day = 2", "per_day = 1")
    .replace("per_week = 5", "per_week = 2")
    .replace('default = "12h"', 'default = "3d"')
)


@pytest.fixture(scope="module")
def traffic() -> GeneratedTraffic:
    return generate(CATALOG, GeneratorSettings(clients=1500, seed=5, partitions=2))


@pytest.fixture(scope="module")
def profiles(traffic: GeneratedTraffic) -> dict[str, Profile]:
    return {p.client_id: p for p in generated_profiles(traffic)}


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "tight.toml"
    path.write_text(TIGHT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def policy(policy_file: Path) -> Policy:
    loaded = load_policy(policy_file)
    assert (loaded.per_day, loaded.per_week, loaded.cooldown_ms) == (1, 2, 3 * 86_400_000)
    return loaded


def settings_for(out: Path, url: str, policy_file: Path, rate: float = 0.0) -> Settings:
    settings = Settings().with_overrides("", out_dir=out)
    settings = settings.with_overrides("engine", shards=4, batch_size=500)
    settings = settings.with_overrides("generator", rate=rate)
    settings = settings.with_overrides("clickhouse", enabled=False)
    return settings.with_overrides(
        "redis", url=url, policy_file=str(policy_file), live_state_interval_ms=200
    )


def load(url: str, profiles: dict[str, Profile]) -> None:
    with redis.Redis.from_url(url) as client:
        client.flushall()
        ProfileStore(client).load(profiles.values())


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def live_state(url: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Every client's live journey hash, without the wall-clock ``updated_ms``."""
    state: dict[str, dict[str, dict[str, Any]]] = {}
    with redis.Redis.from_url(url) as client:
        for key in client.scan_iter(match="ato:journey:*", count=1000):
            fields = client.hgetall(key)
            state[key.decode()] = {
                j.decode(): {k: v for k, v in orjson.loads(raw).items() if k != "updated_ms"}
                for j, raw in fields.items()
            }
    return state


@pytest.fixture(scope="module")
def baseline(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: Server,
    traffic: GeneratedTraffic,
    profiles: dict[str, Profile],
    policy_file: Path,
) -> tuple[RunResult, Path, dict[str, Any]]:
    """One uninterrupted run: its result, output directory and final live state."""
    url = f"redis://{redis_server.address}/0"
    load(url, profiles)
    out = tmp_path_factory.mktemp("policy") / "run"
    result = run(settings_for(out, url, policy_file), traffic=traffic)
    return result, out, live_state(url)


def test_every_stall_ends_as_exactly_one_decision(
    baseline: tuple[RunResult, Path, dict[str, Any]], traffic: GeneratedTraffic
) -> None:
    result, out, _ = baseline
    summary = result.summary()
    assert summary["precision"] == summary["recall"] == 1.0
    truth = truth_ids(traffic)
    assert result.decisions is not None and set(result.decisions) == truth
    history: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in lines(out / DECISIONS_FILE):
        history[d["intervention_id"]].append(d)
    reasons = Counter()
    for iid, steps in history.items():
        *earlier, last = steps
        # at most one deferral (to the end of quiet hours), then the final decision
        assert len(earlier) <= 1 and all(e["outcome"] == "deferred" for e in earlier), steps
        if earlier:
            assert last["decided_at_ms"] == earlier[0]["recheck_at_ms"]
            assert last["outcome"] != "deferred" or len(steps) == 1
        for d in steps:
            if d["outcome"] == "sent":
                assert d["reason"] == ""
            elif d["outcome"] == "deferred":
                assert d["reason"] in DEFER_REASONS and d["recheck_at_ms"] > d["decided_at_ms"]
            else:
                assert d["reason"] in SUPPRESS_REASONS
            reasons[(d["outcome"], d["reason"])] += 1
        assert result.decisions[iid] == last["outcome"]
    # the generated population reaches every common path
    for seen in [("sent", ""), ("deferred", "quiet_hours"), ("suppressed", "do_not_contact")]:
        assert reasons[seen] > 0, reasons
    assert reasons[("suppressed", "daily_cap")] > 0, reasons  # cooldown: test_policy_caps.py


def test_interventions_are_the_sent_decisions_routed(
    baseline: tuple[RunResult, Path, dict[str, Any]],
    profiles: dict[str, Profile],
    policy: Policy,
) -> None:
    result, out, _ = baseline
    assert result.decisions is not None
    docs = lines(out / INTERVENTIONS_FILE)
    sent = {iid for iid, outcome in result.decisions.items() if outcome == "sent"}
    assert [d["intervention_id"] for d in docs if d["intervention_id"] in sent] == [
        d["intervention_id"] for d in docs
    ]
    assert {d["intervention_id"] for d in docs} == sent
    final = {d["intervention_id"]: d for d in lines(out / DECISIONS_FILE)}
    for doc in docs:
        decision = final[doc["intervention_id"]]
        profile = profiles.get(doc["client_id"], Profile.default(doc["client_id"]))
        assert doc["segment"] == profile.segment
        assert (doc["tier"], doc["channel"], doc["priority"], doc["rm_id"]) == (
            decision["tier"], decision["channel"], decision["priority"], decision["rm_id"],
        )  # fmt: skip
        assert doc["channel"] in policy.channels[doc["tier"]]
        assert not profile.do_not_contact


def test_caps_hold_per_local_day_and_week(
    baseline: tuple[RunResult, Path, dict[str, Any]],
    profiles: dict[str, Profile],
    policy: Policy,
) -> None:
    _, out, _ = baseline
    days: Counter[tuple[str, str]] = Counter()
    weeks: Counter[tuple[str, str]] = Counter()
    for d in lines(out / DECISIONS_FILE):
        if d["outcome"] != "sent":
            continue
        tz = profiles.get(d["client_id"], Profile.default(d["client_id"])).tz
        p = periods(d["decided_at_ms"], zone(tz))
        days[(d["client_id"], p.day)] += 1
        weeks[(d["client_id"], p.week)] += 1
    assert days and max(days.values()) == policy.per_day
    assert max(weeks.values()) == policy.per_week


def test_live_state_holds_the_open_journeys(
    baseline: tuple[RunResult, Path, dict[str, Any]],
) -> None:
    result, _, state = baseline
    open_fields = sum(len(journeys) for journeys in state.values())
    assert open_fields == result.summary()["open_instances"] > 0
    names = {j.name: {s.name for s in j.steps} for j in CATALOG.journeys}
    for journeys in state.values():
        for journey, value in journeys.items():
            assert value["step"] in names[journey]
            assert value["since_ms"] <= value["last_ms"]


def final_decisions(path: Path) -> dict[str, dict[str, Any]]:
    """The last decision per id; ``replayed`` (a send Redis had recorded before it went
    away, made again) is left out: it is sent either way."""
    return {
        d["intervention_id"]: {k: v for k, v in d.items() if k != "replayed"} for d in lines(path)
    }


def _shutdown(server: Server) -> None:
    """Stop the server, saving its data first (the restart loads it again)."""
    with redis.Redis(port=server.port) as client:
        try:
            client.shutdown(save=True)
        except redis.ConnectionError:
            pass  # the server closed the connection as it went
    server.stop()


def test_redis_outage_delays_but_never_changes_decisions(
    tmp_path: Path,
    baseline: tuple[RunResult, Path, dict[str, Any]],
    traffic: GeneratedTraffic,
    profiles: dict[str, Profile],
    policy_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stop redis-server in mid-run and start it again: the flow keeps going, and decisions,
    interventions and live state equal the uninterrupted run's; flow_health counts the
    outage."""
    base_result, base_out, base_state = baseline
    server = start_redis(None, tmp_path / "redis")
    url = f"redis://{server.address}/0"
    try:
        load(url, profiles)
        out = tmp_path / "run"
        rate = 1_500.0  # events/s per partition: the run lasts several seconds
        settings = settings_for(out, url, policy_file, rate).with_overrides(
            "clickhouse", enabled=True, health_interval_s=0.5
        )
        results: list[RunResult] = []
        flow = threading.Thread(target=lambda: results.append(run(settings, traffic=traffic)))
        flow.start()
        decisions = out / DECISIONS_FILE
        deadline = time.monotonic() + 60
        while not (decisions.exists() and decisions.stat().st_size > 0):
            assert time.monotonic() < deadline and flow.is_alive()
            time.sleep(0.05)
        _shutdown(server)
        down_at = decisions.stat().st_size
        time.sleep(2.0)
        assert flow.is_alive()
        server.start()
        flow.join(120)
        assert not flow.is_alive() and results
        result = results[0]
        assert down_at < decisions.stat().st_size
        assert "does not answer" in caplog.text and "answers again" in caplog.text
        assert result.summary()["redis_outages"] >= 1  # counted, not only logged
        assert base_result.summary()["redis_outages"] == 0
        assert result.decisions == base_result.decisions
        assert result.intervention_ids == base_result.intervention_ids
        assert final_decisions(decisions) == final_decisions(base_out / DECISIONS_FILE)
        assert live_state(url) == base_state
        with ClickHouseStore(clickhouse_url(settings), settings.clickhouse.database) as store:
            _, rows = store.query(
                "SELECT sum(redis_outages), max(decisions_waiting), sum(events_in) FROM flow_health"
            )
        outages, waiting_max, events_in = rows[0]
        assert outages == result.summary()["redis_outages"]
        assert waiting_max > 0  # candidates came due while Redis was away
        assert events_in == traffic.n_events
    finally:
        server.stop()


def _event(client: str, ts: int, type_: str, n: int, channel: str = "app") -> bytes:
    doc = {"event_id": f"e{n}", "client_id": client, "ts": ts, "channel": channel, "type": type_}
    return orjson.dumps(doc)


def _scripted(
    events: list[bytes], settings: Settings
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The decisions and the sent interventions of a flow over ``events`` (one partition)."""
    got: dict[str, list] = {name: [] for name in ("out", "dead", "late", "progress", "dec")}
    sinks = FlowSinks(
        TestingSink(got["out"]),
        TestingSink(got["dead"]),
        TestingSink(got["late"]),
        TestingSink(got["progress"]),
        decisions=TestingSink(got["dec"]),
    )
    flow = build_flow(TestingSource([RawBatch("p0", events)]), sinks, settings, CATALOG, ["p0"])
    run_main(flow)
    decisions = [orjson.loads(x) for _, block in got["dec"] for x in block.splitlines()]
    sent = [orjson.loads(x) for _, block in got["out"] for x in block.splitlines()]
    return decisions, sent


def test_a_deferral_is_decided_once_its_quiet_shards_watermark_passes_it(
    r: redis.Redis, redis_url: str, at: Callable[[str, str], int]
) -> None:
    """D1 stalls at night and is deferred to 08:00; then only a client of the other shard
    sends events, which move event time (and D1's shard's watermark) to 14:00. D1's shard
    has nothing else to say, yet the policy step hears of its watermark and sends D1. The
    run stops before its input ends, so no final flush decides it instead."""

    def _ms(local_time: str) -> int:
        return at(local_time, "Asia/Shanghai")

    settings = Settings().with_overrides("engine", shards=2)
    decoder, router = Decoder(CATALOG, settings.engine), Router(2)

    def shard(client: str) -> str:
        decoded = decoder(RawBatch("p0", [_event(client, _ms("2026-01-05 12:00"), "x", 0)]))
        return next(key for key, item in router(decoded) if len(item.events))

    clients = [f"K{i}" for i in range(40)]
    d1 = clients[0]
    other = next(c for c in clients if shard(c) != shard(d1))
    ProfileStore(r).load(Profile(c, "savvy_regular", tz="Asia/Shanghai") for c in (d1, other))
    batches = [[_event(d1, _ms("2026-01-05 22:00"), "acct_open_start", 1)]]
    batches += [
        [_event(other, _ms(f"2026-01-06 {hour}"), "page_view", n)]
        for n, hour in enumerate(["07:00", "09:00", "09:30", "12:00", "13:00", "14:00"], 2)
    ]
    got: dict[str, list] = {name: [] for name in ("out", "dead", "late", "progress", "dec")}
    sinks = FlowSinks(
        TestingSink(got["out"]), TestingSink(got["dead"]), TestingSink(got["late"]),
        TestingSink(got["progress"]), decisions=TestingSink(got["dec"]),
    )  # fmt: skip
    source = TestingSource([*(RawBatch("p0", b) for b in batches), TestingSource.ABORT()])
    flow = build_flow(source, sinks, settings.with_overrides("redis", url=redis_url), CATALOG)
    run_main(flow)
    decisions = [orjson.loads(x) for _, block in got["dec"] for x in block.splitlines()]
    assert [(d["client_id"], d["outcome"]) for d in decisions] == [
        (d1, "deferred"), (d1, "sent"),
    ]  # fmt: skip


class _HungRedis:
    """A server that takes connections and never answers (a Redis stopped with SIGSTOP, or
    behind a dead network path): every call waits for the client's timeout."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.connections = 0
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self.held.append(conn)

    def close(self) -> None:
        for conn in [self.listener, *self.held]:
            conn.close()


def test_a_redis_that_hangs_is_tried_once_per_pause_not_by_every_shard_call() -> None:
    """Redis takes connections and never answers. Every shard's policy step has candidates
    due at every output, yet the process tries Redis once, and again only after a pause
    (1 s, doubling): the other calls leave it alone instead of each waiting for the
    timeout, so the flow goes on (it slowed to about a tenth of its speed)."""
    hung = _HungRedis()
    try:
        settings = Settings().with_overrides("engine", shards=4)
        settings = settings.with_overrides("redis", url=hung.url, timeout_s=0.3, live_state=False)
        t0 = 1_767_600_000_000
        batches = [
            [_event(f"H{n}-{k}", t0 + n * 600_000 + k, "acct_open_start", n * 100 + k)
             for k in range(20)]
            for n in range(12)
        ]  # fmt: skip  # each batch stalls the clients of the one before, in every shard
        got: dict[str, list] = {name: [] for name in ("out", "dead", "late", "progress")}
        sinks = FlowSinks(*(TestingSink(got[name]) for name in got))
        source = TestingSource([*(RawBatch("p0", b) for b in batches), TestingSource.ABORT()])
        run_main(build_flow(source, sinks, settings, CATALOG, ["p0"]))
        outputs = [p for p in got["progress"] if p.get("shard") is not None]
        assert len(outputs) >= 40  # 4 shards x 12 batches: that many calls had work due
        assert sum(p.get("redis_outages", 0) for p in outputs) >= 1
        assert 1 <= hung.connections <= 3  # one try (a second after a pause, at most two)
    finally:
        hung.close()


def test_only_events_on_the_resume_channels_count_as_a_resume(
    r: redis.Redis, redis_url: str, tmp_path: Path, at: Callable[[str, str], int]
) -> None:
    """Both clients stall at night and are deferred to 08:00; at 07:00 R1 moves on in the app
    and R2 in a branch. With ``resume.channels = ["branch"]`` only R2 resumed by themselves:
    R1's first stall is sent at 08:00 (before, any channel counted)."""

    def _ms(local_time: str) -> int:
        return at(local_time, "Asia/Shanghai")

    ProfileStore(r).load(Profile(c, "savvy_regular", tz="Asia/Shanghai") for c in ["R1", "R2"])
    events = [
        _event("R1", _ms("2026-01-05 22:00"), "acct_open_start", 1),
        _event("R2", _ms("2026-01-05 22:00"), "acct_open_start", 2),
        _event("R1", _ms("2026-01-06 07:00"), "id_card_uploaded", 3, channel="app"),
        _event("R2", _ms("2026-01-06 07:00"), "id_card_uploaded", 4, channel="branch"),
        _event("R3", _ms("2026-01-06 09:00"), "page_view", 5),  # moves event time past 08:00
    ]
    text = default_policy_path().read_text()
    text = text.replace('channels = ["app", "call", "branch", "ai"]', 'channels = ["branch"]')
    assert 'channels = ["branch"]' in text
    (tmp_path / "policy.toml").write_text(text)
    redis_settings = {"url": redis_url, "policy_file": str(tmp_path / "policy.toml")}
    settings = Settings().with_overrides("engine", shards=2)
    decisions, _ = _scripted(events, settings.with_overrides("redis", **redis_settings))
    got = sorted((d["client_id"], d["outcome"], d["reason"]) for d in decisions)
    assert got == [  # each client stalls again at its next step, also deferred to 08:00
        ("R1", "deferred", "quiet_hours"),
        ("R1", "deferred", "quiet_hours"),
        ("R1", "sent", ""),  # the first stall: the app event is no resume here
        ("R1", "suppressed", "cooldown"),  # the second: the journey's cooldown
        ("R2", "deferred", "quiet_hours"),
        ("R2", "deferred", "quiet_hours"),
        ("R2", "sent", ""),  # the second stall
        ("R2", "suppressed", "resumed"),  # the first: the branch event is a resume
    ]


def test_candidates_competing_for_the_last_cap_slot_go_by_priority(
    r: redis.Redis, redis_url: str, tmp_path: Path, at: Callable[[str, str], int]
) -> None:
    """Three clients each stall in four journeys at night; all are deferred to 08:00, where
    the daily cap (1 here) leaves one slot each: it goes to the client's highest-priority
    candidate (before, to the lowest intervention id, as good as at random)."""

    def _ms(local_time: str) -> int:
        return at(local_time, "Asia/Shanghai")

    clients = ["P1", "P2", "P3"]
    ProfileStore(r).load(Profile(c, "savvy_regular", tz="Asia/Shanghai") for c in clients)
    starts = ["acct_open_start", "product_viewed", "loan_apply_start", "risk_quiz_start"]
    night = _ms("2026-01-05 22:00")
    events = [
        _event(c, night, kind, 10 * i + k) for i, c in enumerate(clients)
        for k, kind in enumerate(starts)
    ]  # fmt: skip
    events.append(_event("P9", _ms("2026-01-06 09:00"), "page_view", 99))  # event time on
    text = default_policy_path().read_text()
    assert "per_day = 2" in text
    (tmp_path / "policy.toml").write_text(text.replace("per_day = 2", "per_day = 1"))
    redis_settings = {"url": redis_url, "policy_file": str(tmp_path / "policy.toml")}
    decisions, _ = _scripted(events, Settings().with_overrides("redis", **redis_settings))
    for client in clients:
        mine = [d for d in decisions if d["client_id"] == client]
        deferred = {d["journey"]: d["priority"] for d in mine if d["outcome"] == "deferred"}
        assert len(deferred) == 4 and len(set(deferred.values())) == 4
        (sent,) = [d for d in mine if d["outcome"] == "sent"]
        assert sent["priority"] == max(deferred.values())
        capped = [d for d in mine if d["reason"] == "daily_cap"]
        assert len(capped) == 3


def test_scripted_journeys_quiet_hours_resume_and_breakpoints(
    r: redis.Redis, redis_url: str, at: Callable[[str, str], int]
) -> None:
    """Three clients open an account. S1 and S2 stall at night: both deferred to 08:00; S1
    finishes at 07:00 by themselves (suppressed, resumed), S2 is sent at 08:00. S3 stalls at
    noon: sent at once. The live state then shows S2's and S3's breakpoints, not S1's."""

    def _ms(local_time: str) -> int:
        return at(local_time, "Asia/Shanghai")

    clients = ["S1", "S2", "S3", "S4"]
    ProfileStore(r).load(Profile(c, "savvy_regular", tz="Asia/Shanghai") for c in clients)
    events = [
        _event("S3", _ms("2026-01-05 12:00"), "acct_open_start", 1),
        _event("S1", _ms("2026-01-05 22:00"), "acct_open_start", 2),
        _event("S2", _ms("2026-01-05 22:00"), "acct_open_start", 3),
        _event("S1", _ms("2026-01-06 07:00"), "account_opened", 4),
        _event("S4", _ms("2026-01-06 09:00"), "page_view", 5),  # moves event time past 08:00
    ]
    settings = Settings().with_overrides("engine", shards=2).with_overrides("redis", url=redis_url)
    decisions, sent = _scripted(events, settings)
    seen = [(d["client_id"], d["outcome"], d["reason"], d["decided_at_ms"]) for d in decisions]
    eight = _ms("2026-01-06 08:00")
    assert sorted(seen) == [
        ("S1", "deferred", "quiet_hours", _ms("2026-01-05 22:10")),
        ("S1", "suppressed", "resumed", eight),
        ("S2", "deferred", "quiet_hours", _ms("2026-01-05 22:10")),
        ("S2", "sent", "", eight),
        ("S3", "sent", "", _ms("2026-01-05 12:10")),
    ]
    assert sorted(d["client_id"] for d in sent) == ["S2", "S3"]
    assert all((d["tier"], d["channel"]) == ("ai", "push") for d in sent)
    assert lookup(r, "S1") == {}  # finished: no open journey
    s2 = lookup(r, "S2")["open_account"]
    assert {k: v for k, v in s2.items() if k != "updated_ms"} == {
        "step": "start", "since_ms": _ms("2026-01-05 22:00"), "last_type": "acct_open_start",
        "last_channel": "app", "last_ms": _ms("2026-01-05 22:00"), "stalled": True,
        "attempt": 1,
    }  # fmt: skip
    assert lookup(r, "S3")["open_account"]["stalled"] is True


def test_policy_step_closes_its_redis_connections_at_end_of_input(
    r: redis.Redis, redis_url: str
) -> None:
    """A worker's policy step releases the flow's Redis connections when input ends (they
    would otherwise stay open as long as the flow object)."""
    settings = Settings().with_overrides("redis", url=redis_url)
    ctx = PolicyContext(CATALOG, load_policy(None), connect(settings.redis))
    logic = PolicyLogic(ctx, None)

    def ours() -> set[str]:
        """This process's connections (other tests' clients may be open too)."""
        return {c["id"] for c in r.client_list() if c["name"] == client_name()}

    before = ours()
    ctx.client.ping()
    (opened,) = ours() - before
    assert logic.on_eof() == ([], PolicyLogic.RETAIN)
    deadline = time.monotonic() + 5  # the server notices the closed socket a moment later
    while opened in ours() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert opened not in ours()
    ctx.client.ping()  # a later use reconnects
    assert len(ours() - before) == 1
    ctx.client.close()


def test_one_workers_end_of_input_leaves_the_connections_others_use(
    r: redis.Redis, redis_url: str
) -> None:
    """The worker threads of a process share one Redis client: a policy step's end of input
    closes the idle connections, not one another worker is reading a reply on."""
    settings = Settings().with_overrides("redis", url=redis_url)
    ctx = PolicyContext(CATALOG, load_policy(None), connect(settings.redis))
    busy = ctx.client.connection_pool.get_connection()  # another worker's, mid-call
    busy.send_command("PING")
    ctx.client.ping()  # an idle one goes back to the pool
    PolicyLogic(ctx, None).on_eof()
    assert busy.read_response() in (b"PONG", "PONG", True)  # still connected
    ctx.client.connection_pool.release(busy)
    ctx.client.close()


class _Clock:
    """An injected wall clock whose sleeps move it on."""

    def __init__(self, now: int) -> None:
        self.now = now
        self.sleeps = 0

    def __call__(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += int(seconds * 1000)


def test_a_full_buffer_late_in_a_long_outage_still_waits_before_failing() -> None:
    """Redis has been down 400 s while the flow went on (``outage_wait_s`` = 300). When the
    waiting candidates then pass ``max_deferred``, the step pauses and retries for up to
    ``outage_wait_s`` from then (before, it failed at once: it measured from the outage's
    start)."""
    t0 = 1_767_600_000_000  # event time; noon in Shanghai is past every quiet window
    clock = _Clock(t0)
    shard = ShardLogic(ShardContext(CATALOG, Settings().engine, ["p0"], clock, policy=True), None)
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    ctx = PolicyContext(
        CATALOG, load_policy(None), dead, now_ms=clock, sleep=clock.sleep,
        backoff=RedisBackoff(), max_waiting=3, outage_wait_s=300.0,
    )  # fmt: skip
    logic = PolicyLogic(ctx, None)
    decoder = Decoder(CATALOG, Settings().engine, now_ms=lambda: t0 + 10**12)
    router = Router(1)

    def feed(events: list[bytes]) -> None:
        ((_key, item),) = router(decoder.decode(RawBatch("p0", events)))
        outputs, _ = shard.on_batch([item])
        logic.on_batch(outputs)

    noon = t0 + 4 * 3_600_000
    feed([_event("K0", noon, "acct_open_start", 0)])
    feed([_event("X0", noon + 700_000, "page_view", 1)])  # K0 stalls: its decision waits
    assert logic.stats["outages"] == 1
    clock.now += 400_000  # the outage has lasted 400 s of wall clock
    stalls = [_event(f"K{i}", noon + 800_000, "acct_open_start", 1 + i) for i in range(1, 5)]
    feed(stalls)
    with pytest.raises(PolicyError, match="waited 300 s for Redis"):
        feed([_event("X1", noon + 1_500_000, "page_view", 9)])  # 5 wait: more than 3
    assert clock.sleeps == 300  # a second apart, for outage_wait_s
