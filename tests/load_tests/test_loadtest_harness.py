"""``ato loadtest``: scenario files, traffic shaping and pacing, the capacity rule, and a short
smoke run against the real broker (so the harness never rots)."""

import math
import os
import re
import resource
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from ato.catalog import load_catalog
from ato.cli import main as cli_main
from ato.config import KafkaSettings
from ato.devservers import Server, create_topics, start_broker
from ato.exceptions import ConfigError
from ato.generator import TruthStall
from ato.process import process_running
from load_tests import bench_kafka, harness, producers, report
from load_tests.harness import LoadTestError, _next_rate, lag_bounded, lag_growth, run_scenario
from load_tests.harness import main as harness_main
from load_tests.monitor import children
from load_tests.scenario import Scenario, load_scenario, parse_scenario, scenario_names
from load_tests.traffic import (
    clients_needed,
    generate,
    generator_settings,
    live_end_ms,
    live_zero_ms,
    population_clients,
    population_event,
    schedule,
    shape,
    shifted,
    truth,
)
from sources import kafka as kafka_source


def test_every_shipped_scenario_loads() -> None:
    names = scenario_names()
    assert {"smoke", "steady", "morning_peak", "stall_burst", "backfill", "population_10m"} <= set(
        names
    )
    for name in names:
        scenario = load_scenario(name)
        assert scenario.name == name
        assert load_catalog(scenario.catalog_path()).journeys


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"name": "x", "rate": -1}, "rate"),
        ({"name": "x", "speed": 3}, "speed"),
        ({"name": "x", "profile": [[10, 1], [5, 2]]}, "profile"),
        ({"name": "x", "duration_s": 30, "profile": [[0, 1], [40, 2]]}, "profile"),
        ({"name": "x", "burst": {"journey": "j"}}, "burst"),
        ({"name": "x", "duration_s": 10, "warmup_s": 10}, "warmup_s"),
        ({"rate": 5}, "name"),
        ({"name": "x", "clock": "wall"}, "clock"),
    ],
)
def test_bad_scenarios_name_the_file_and_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"scenario s\.toml: {key}"):
        parse_scenario(raw, "s.toml")


def test_unknown_scenario_lists_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match="steady"):
        load_scenario("nope")


def test_profile_multiplier_is_piecewise_linear() -> None:
    s = Scenario(name="p", duration_s=90, profile=((0, 1.0), (30, 1.0), (90, 5.0)))
    assert [s.multiplier(t) for t in (-5, 0, 30, 60, 90, 200)] == [1.0, 1.0, 1.0, 3.0, 5.0, 5.0]
    assert s.peak_rate() == 5 * s.rate


def _sent_per_second(scenario: Scenario, clients: int) -> np.ndarray:
    catalog = load_catalog(scenario.catalog_path())
    traffic = generate(catalog, generator_settings(scenario, clients, 3), shape=shape(scenario))
    plan = schedule(traffic, scenario)
    return np.bincount((plan.send_at - live_zero_ms(scenario)) // 1000)


def test_generated_rate_follows_the_profile_and_the_target() -> None:
    flat = Scenario(name="flat", duration_s=60, rate=2_000)
    ramp = Scenario(
        name="ramp", duration_s=60, rate=2_000, profile=((0, 1.0), (30, 1.0), (60, 4.0))
    )
    catalog = load_catalog(flat.catalog_path())
    flat_rate = _sent_per_second(flat, clients_needed(flat, catalog))
    ramp_rate = _sent_per_second(ramp, clients_needed(ramp, catalog))
    # once journeys are under way (after the warm-up) the rate is the scenario's
    assert np.mean(flat_rate[20:60]) == pytest.approx(2_000, rel=0.1)
    # journey starts follow the profile; their later events spread over the journeys'
    # durations, so the rate follows it within a fifth (2,303/s here before the ramp)
    assert np.mean(ramp_rate[20:30]) == pytest.approx(2_000, rel=0.2)
    assert np.mean(ramp_rate[55:60]) == pytest.approx(2_000 * 3.75, rel=0.15)
    assert np.mean(flat_rate[40:60]) == pytest.approx(np.mean(flat_rate[25:35]), rel=0.15)


def test_schedule_never_sends_an_event_before_its_time_and_stops_at_the_end() -> None:
    scenario = Scenario(name="s", duration_s=20, rate=1_000, partitions=3)
    catalog = load_catalog(scenario.catalog_path())
    traffic = generate(catalog, generator_settings(scenario, 300, 1), shape=shape(scenario))
    plan = schedule(traffic, scenario)
    assert len(plan.values) == len(plan.send_at) == len(plan.ts) == len(plan.partitions)
    assert np.all(np.diff(plan.send_at) >= 0)
    assert np.all(plan.send_at >= plan.ts)  # disorder delays events, never sends them early
    assert plan.send_at[-1] <= live_end_ms(scenario)
    assert set(plan.partitions.tolist()) == {0, 1, 2}
    for value, ts in zip(plan.values[:50], plan.ts[:50].tolist(), strict=True):
        assert orjson.loads(shifted(value, ts, 5_000))["ts"] == ts + 5_000
    # truth ids move with the shift (they depend on the instance start)
    ids = {i for i, _ in truth(traffic, scenario, 0)}
    moved = truth(traffic, scenario, 5_000)
    assert ids.isdisjoint(i for i, _ in moved)
    assert all(d <= live_end_ms(scenario) + 5_000 for _, d in moved)


def test_every_event_up_to_the_disorder_before_the_end_is_sent() -> None:
    """What the detection figures rely on when they score only the stalls due at least
    ``disorder_ms`` before the end: an event later than that may arrive (be sent) after the
    end and not be sent, and a stall it resolves then looks like a detection the truth lacks
    (1-4 such in runs of 100,000-200,000 stalls)."""
    scenario = Scenario(name="s", duration_s=20, rate=2_000, partitions=3, disorder_ms=400)
    catalog = load_catalog(scenario.catalog_path())
    traffic = generate(catalog, generator_settings(scenario, 600, 1), shape=shape(scenario))
    plan = schedule(traffic, scenario)
    cutoff = live_end_ms(scenario) - scenario.disorder_ms
    every = np.concatenate([np.asarray(v, np.int64) for v in traffic.arrival_ts.values()])
    assert 0 < np.count_nonzero(every <= cutoff) == np.count_nonzero(plan.ts <= cutoff)
    assert np.count_nonzero(plan.ts <= live_end_ms(scenario)) < np.count_nonzero(
        every <= live_end_ms(scenario)
    )  # later ones may be held back past the end


def test_stall_burst_makes_the_step_stall() -> None:
    base = Scenario(name="b", duration_s=60, rate=3_000)
    burst = parse_scenario(
        {
            "name": "b",
            "duration_s": 60,
            "rate": 3_000,
            "burst": {
                "journey": "large_transfer",
                "step": "otp",
                "at_s": 0,
                "for_s": 60,
                "share": 1,
            },
        },
        "b.toml",
    )
    catalog = load_catalog(base.catalog_path())

    def stalls(scenario: Scenario) -> list[TruthStall]:
        traffic = generate(catalog, generator_settings(scenario, 2_000, 5), shape=shape(scenario))
        return traffic.stalls

    def otp(found: list[TruthStall]) -> int:
        return sum(s.journey == "large_transfer" and s.step == "otp" for s in found)

    assert otp(stalls(burst)) > 3 * otp(stalls(base))
    # a burst stall before the instance's own stall makes that one its second attempt
    by_instance: dict[tuple[str, str, int], list[int]] = {}
    for s in stalls(burst):
        by_instance.setdefault((s.client_id, s.journey, s.instance_start), []).append(s.attempt)
    assert all(a == list(range(1, len(a) + 1)) for a in by_instance.values())
    assert any(len(a) == 2 for a in by_instance.values())


def test_population_shares_cover_every_client_once() -> None:
    scenario = Scenario(name="p", population=1_001, partitions=4)
    shares = [population_clients(scenario, index, 3) for index in range(3)]
    assert sorted(np.concatenate(shares).tolist()) == list(range(1_001))
    doc = orjson.loads(population_event(42, 123))
    assert doc["client_id"] == "P000000042" and doc["ts"] == 123
    assert doc["journey"] == "card_activation"


def test_lag_bounded_looks_at_the_second_half_of_the_window() -> None:
    t = [float(i) for i in range(21)]
    early_spike = [50_000 if i < 10 else 100 for i in range(21)]
    growing = [i * 1_000 for i in range(21)]
    assert lag_bounded(early_spike, t, (0.0, 20.0), 1_000)[0]
    assert not lag_bounded(growing, t, (0.0, 20.0), 1_000)[0]
    assert not lag_bounded([], [], (0.0, 20.0), 1_000)[0]  # nothing measured: not bounded


def test_capacity_search_goes_up_then_narrows_the_gap() -> None:
    assert _next_rate(100, 100, math.inf, 1.5) == 150
    assert _next_rate(100, 0.0, 100, 1.5) == pytest.approx(66.67, rel=1e-3)
    assert _next_rate(150, 100, 150, 1.5) == 125
    assert _next_rate(105, 100, 105, 1.5) is None


@pytest.mark.slow
def test_smoke_run_reports_every_figure(broker: Server, tmp_path: Path) -> None:
    """A short real run: producers, flow, lag, latency, detection, report files."""
    scenario = load_scenario("smoke")
    result = run_scenario(scenario, brokers=broker.address, run_dir=tmp_path, progress=None)
    sent = result["input"]["events"]
    assert result["input"]["achieved_rate"] == pytest.approx(scenario.rate, rel=0.15)
    assert result["flow_summary"]["events"] == sent  # the flow read everything sent
    assert result["input"]["kept_up"] and result["lag"]["bounded"]
    assert result["lag"]["final"] == 0
    assert result["detection"]["truth"] > 100
    assert result["detection"]["precision"] == 1.0
    assert result["detection"]["recall"] == 1.0
    assert result["dead_letters"] == 0
    for kind in ("deadline", "ingest"):
        figures = result["latency_ms"][kind]
        assert figures["count"] > 50
        assert 0 < figures["p50"] <= figures["p99"] <= figures["max"]
    roles = {row["role"] for row in result["processes"]}
    assert {"flow", "producer-0"} <= roles
    assert all(row["peak_rss_mb"] > 0 for row in result["processes"])
    timeline = result["timeline"]
    assert len(timeline["t_s"]) >= scenario.duration_s
    assert max(timeline["input_rate"]) > 0 and max(timeline["processed_rate"]) > 0
    assert set(timeline["lag_by_partition"]) == {f"{_topic(result)}#{p}" for p in range(3)}
    files = {p.name for p in tmp_path.iterdir()}
    assert {"report.json", "report.md", "rate.png", "lag.png", "latency.png"} <= files
    assert orjson.loads((tmp_path / "report.json").read_bytes())["input"]["events"] == sent


def _topic(result: dict[str, object]) -> str:
    lag = result["timeline"]["lag_by_partition"]  # type: ignore[index]
    return next(iter(lag)).rsplit("#", 1)[0]


@pytest.mark.parametrize("option", ["--rate", "--duration"])
@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_rate_or_duration_not_above_zero_is_a_clear_error(option: str, value: str) -> None:
    with pytest.raises(LoadTestError, match=f"{option}: must be > 0"):
        harness_main(["smoke", option, value])


# --- review fixes -------------------------------------------------------------------------

BURST = {"journey": "large_transfer", "step": "otp", "at_s": 1, "for_s": 2, "share": 0.5}


def test_peak_rate_covers_only_the_part_of_the_profile_the_run_covers() -> None:
    peak = load_scenario("morning_peak")  # 1x until 30 s, ramp to 5x at 90 s
    assert peak.peak_rate() == 5 * peak.rate
    assert peak.with_duration(10).peak_rate() == peak.rate
    assert peak.with_duration(60).peak_rate() == pytest.approx(3 * peak.rate)
    assert harness._producers_for(peak.with_rate(300_000).with_duration(10).peak_rate(), None) == 2
    shortened = peak.with_duration(10)
    assert shortened.warmup_s == pytest.approx(10 / 3)  # the warm-up shrinks to fit


def test_a_burst_after_the_end_of_a_shortened_run_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--duration 20: .*burst starts at 30 s"):
        harness_main(["stall_burst", "--duration", "20", "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())  # nothing started
    assert load_scenario("stall_burst").with_duration(31).burst is not None


def test_lag_that_grows_for_the_whole_window_is_not_bounded() -> None:
    t = [float(i) for i in range(41)]
    growing = [5_000 * i for i in range(41)]  # never above 2 s of input, but always growing
    assert not lag_bounded(growing, t, (20.0, 40.0), 100_000)[0]
    assert lag_growth(growing, t, (20.0, 40.0)) == pytest.approx(100_000)
    rng = np.random.default_rng(3)
    flat = [int(v) for v in rng.uniform(0, 150_000, 41)]  # noisy but level
    ok, rule = lag_bounded(flat, t, (20.0, 40.0), 100_000)
    assert ok
    assert "least-squares" in rule


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"name": "x", "burst": {**BURST, "share": "lots"}}, "burst.share"),
        ({"name": "x", "burst": {**BURST, "at_s": "soon"}}, "burst.at_s"),
        ({"name": "x", "burst": {**BURST, "at_s": -5}}, "burst.at_s"),
        ({"name": "x", "burst": {**BURST, "for_s": -1}}, "burst.for_s"),
        ({"name": "x", "burst": {**BURST, "for_s": 0}}, "burst.for_s"),
        ({"name": "x", "burst": {**BURST, "at_s": 60}}, "burst.at_s"),  # duration_s is 60
        ({"name": "x", "burst": {**BURST, "journey": "nope"}}, "burst.journey"),
        ({"name": "x", "burst": {**BURST, "step": "nope"}}, "burst.step"),
        ({"name": "x", "burst": {**BURST, "journey": 3}}, "burst.journey"),
        ({"name": "x", "partitions": 2.7}, "partitions"),
        ({"name": "x", "population": 1e30}, "population"),
        ({"name": "x", "rate": math.inf}, "rate"),
        ({"name": "x", "duration_s": math.nan}, "duration_s"),
        ({"name": "x", "profile": [[0, math.inf]]}, "profile"),
        ({"name": "x", "catalog": "nosuch.toml"}, "catalog"),
    ],
)
def test_more_bad_scenarios_name_the_file_and_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"scenario s\.toml: {re.escape(key)}: "):
        parse_scenario(raw, "s.toml")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--processes", "0"], "--processes: must be from 1 to 64"),
        (["--producers", "0"], "--producers: must be from 1 to 64"),
        (["--processes", "1000000"], "--processes: must be from 1 to 64"),
        (["--rate", "1e9"], "--rate: must be > 0 and at most 5,000,000"),
        (["--factor", "1e300"], "--factor: must be > 1 and at most 10"),
        (["--max-steps", "1000"], "--max-steps: must be from 1 to 50"),
        (["--brokers", " "], "--brokers: empty"),
        (["--factor", "1"], "--factor: must be > 1"),
        (["--factor", "0.5"], "--factor: must be > 1"),
        (["--factor", "nan"], "--factor: must be > 1"),
        (["--max-steps", "0"], "--max-steps: must be from 1 to 50"),
        (["--rate", "inf"], "--rate: must be > 0"),
        (["--duration", "nan"], "--duration: must be > 0"),
    ],
)
def test_bad_options_are_clear_errors_before_anything_starts(
    args: list[str], option: str, tmp_path: Path
) -> None:
    with pytest.raises(LoadTestError, match=re.escape(option)):
        harness_main(["smoke", "--brokers", "127.0.0.1:1", "--out", str(tmp_path), *args])
    assert not list(tmp_path.iterdir())


def test_an_out_directory_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(LoadTestError, match="--out .*a-file: cannot create the run directory"):
        harness_main(["smoke", "--brokers", "127.0.0.1:1", "--out", str(a_file)])


def test_a_producer_that_died_unfinished_fails_the_run(tmp_path: Path) -> None:
    """A producer killed mid-run stays SENDING in the shared counters: the run used to go on
    and crash at the end on its missing output file."""

    class Dead:
        exitcode = -9

        def is_alive(self) -> bool:
            return False

    class Handles:
        processes = [Dead()]

        def states(self) -> list[float]:
            return [producers.SENDING]

    with pytest.raises(LoadTestError, match=r"producer-0 ended \(exit code -9\) before it sent"):
        harness._check_producers_done(Handles(), tmp_path)


def test_asked_producers_are_used_as_given() -> None:
    assert harness._producers_for(400_000, 1) == 1
    assert harness._producers_for(400_000, None) == 3


def test_unreachable_brokers_are_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(kafka_source, "REACH_TIMEOUT_S", 2.0)
    code = cli_main(["loadtest", "smoke", "--brokers", "127.0.0.1:1", "--out", str(tmp_path)])
    err = capfd.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        "ato: error: cannot reach the Kafka brokers 127.0.0.1:1: Failed to get metadata:"
        " Local: Broker transport failure"
    ]


def test_stop_group_kills_the_members_of_the_flows_group() -> None:
    parent = subprocess.Popen(  # a parent with a child, like `ato run --processes 2`
        [sys.executable, "-c", CHILD_AND_WAIT], stdout=subprocess.PIPE, start_new_session=True
    )
    assert parent.stdout is not None
    with parent.stdout:
        child = int(parent.stdout.readline())
    harness.stop_group(parent)
    assert _gone(child)


CHILD_AND_WAIT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


def _gone(pid: int, within_s: float = 5.0) -> bool:
    """Whether ``pid`` is gone (or a zombie) within ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not process_running(pid):
            return True
        time.sleep(0.1)
    return False


def _step_result(target: float, achieved: float, bounded: bool) -> dict[str, Any]:
    latency = {"count": 10, "p50": 300.0, "p95": 400.0, "p99": 500.0, "max": 600.0}
    return {
        "target_rate": target,
        "input": {"achieved_rate": achieved, "kept_up": achieved >= 0.95 * target},
        "processing": {"rate": achieved},
        "lag": {"bounded": bounded, "max": 100, "final": 0},
        "latency_ms": {"deadline": latency, "ingest": latency},
        "detection": {"precision": 1.0, "recall": 1.0},
    }


def _search(scenario: Scenario, run_dir: Path, max_steps: int) -> dict[str, Any]:
    """``find_max`` with a factor of 1.5 on a broker the faked ``run_scenario`` ignores."""
    return harness.find_max(
        scenario,
        brokers="b",
        run_dir=run_dir,
        processes=1,
        producers=None,
        factor=1.5,
        max_steps=max_steps,
        progress=None,
        broker_pid=None,
    )


def test_find_max_reports_the_peak_rate_and_survives_a_failed_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flat 2x profile: 300/s (600/s peak) holds, 450/s crashes, 375/s only falls short."""
    scenario = Scenario(name="x2", duration_s=10, warmup_s=4, rate=300, profile=((0, 2.0),))
    calls: list[datetime] = []

    def fake_run(step: Scenario, **_kwargs: object) -> dict[str, Any]:
        calls.append(datetime.now(UTC))
        time.sleep(0.01)
        if step.rate == 450:
            msg = "the flow exited with code 1 (see flow.err)"
            raise LoadTestError(msg)
        if step.rate == 375:  # lag bounded, but the producers fell short
            return _step_result(step.peak_rate(), 0.8 * step.peak_rate(), bounded=True)
        return _step_result(step.peak_rate(), step.peak_rate(), bounded=True)

    monkeypatch.setattr(harness, "run_scenario", fake_run)
    result = _search(scenario, tmp_path, max_steps=3)
    steps = result["steps"]
    assert [s["base_rate"] for s in steps] == [300, 450, 375]
    assert [s["held"] for s in steps] == [True, False, False]
    assert steps[1]["error"] == "the flow exited with code 1 (see flow.err)"
    assert (steps[2]["lag_bounded"], steps[2]["kept_up"]) == (True, False)
    assert result["max_sustainable_rate"] == 600  # the peak target of the step that held
    assert result["max_sustainable_achieved_rate"] == 600
    assert datetime.fromisoformat(result["started_at"]) <= calls[0]
    md = (tmp_path / "report.md").read_text()
    assert "**Maximum sustainable rate: 600 events/s** (step 1; achieved input 600" in md
    assert "Step 2 failed (not held): the flow exited with code 1" in md
    assert "| 2 | 900 | n/a | n/a | n/a | n/a | n/a | n/a | **no** |" in md
    assert "| 750 | 600 | 600 | 100 | 0 | yes | **no** | **no** |" in md  # producers short
    assert (tmp_path / "find_max.png").exists()
    # 3 steps: 300 held, 450 failed, 375 failed: 450/300 = 1.5 > 1.1, stopped at the limit
    assert (result["ended"], result["bound"]) == ("max_steps", "gap 1.25")
    assert "The search stopped at its step limit (`--max-steps 3`)." in md
    assert "The lowest failing rate is 1.25x above it" in md


def test_a_search_that_never_failed_reports_a_lower_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every step held: the best rate is only a lower bound (it was headlined as the
    maximum)."""
    scenario = Scenario(name="x", duration_s=10, warmup_s=4, rate=100)
    monkeypatch.setattr(
        harness,
        "run_scenario",
        lambda step, **_: _step_result(step.peak_rate(), step.peak_rate(), bounded=True),
    )
    result = _search(scenario, tmp_path, max_steps=2)
    assert (result["ended"], result["bound"], result["max_sustainable_rate"]) == (
        "max_steps",
        "lower",
        150,
    )
    md = (tmp_path / "report.md").read_text()
    assert "**Maximum sustainable rate: at least 150 events/s**" in md
    assert "this is a lower bound" in md


def test_find_max_ends_with_its_report_when_kafka_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = Scenario(name="x", duration_s=10, warmup_s=4, rate=300)

    def fake_run(step: Scenario, **_kwargs: object) -> dict[str, Any]:
        if step.rate > 300:
            msg = "Kafka on b failed during the run"
            raise harness.BrokerError(msg)
        return _step_result(step.peak_rate(), step.peak_rate(), bounded=True)

    monkeypatch.setattr(harness, "run_scenario", fake_run)
    with pytest.raises(harness.BrokerError):
        _search(scenario, tmp_path, max_steps=6)
    saved = orjson.loads((tmp_path / "report.json").read_bytes())
    assert len(saved["steps"]) == 2
    assert saved["max_sustainable_rate"] == 300


def test_ingest_latency_definition_matches_the_measurement() -> None:
    assert "every producer had sent" in report.INGEST_TEXT
    assert "allowed lateness" in report.INGEST_TEXT


def test_bench_peak_rss_is_this_process() -> None:
    rss = bench_kafka.peak_rss()
    assert rss["peak_rss_mb"] == round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    assert "children_peak_rss_mb" in rss


@pytest.mark.slow
def test_bench_read_topic_gives_up_when_messages_stop(broker: Server) -> None:
    topic = f"bench.short.{time.time_ns()}"
    create_topics(broker.address, {topic: 1})
    bench_kafka.preload(broker.address, topic, [[b"{}", b"{}"]])
    with pytest.raises(bench_kafka.BenchError, match=r"2 of 5 messages, then none for 2 s"):
        bench_kafka.read_topic(broker.address, topic, 1, 5, lambda _v: None, None, 2.0)


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            found.add(child)
            todo.append(child)
    return found


def _start_loadtest(args: list[str], err: Path) -> "subprocess.Popen[bytes]":
    argv = [sys.executable, "-m", "ato.cli", "loadtest", "smoke", "--duration", "40", *args]
    with err.open("wb") as out:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=out)  # noqa: S603
    deadline = time.monotonic() + 120
    while "flow reading" not in err.read_text():
        assert process.poll() is None, err.read_text()
        assert time.monotonic() < deadline
        time.sleep(0.3)
    time.sleep(2)
    return process


@pytest.mark.slow
def test_sigterm_stops_the_flow_cluster_and_the_producers(broker: Server, tmp_path: Path) -> None:
    err = tmp_path / "err"
    process = _start_loadtest(
        ["--brokers", broker.address, "--processes", "2", "--out", str(tmp_path)], err
    )
    started = _descendants(process.pid)
    assert len(started) >= 3  # the flow, its cluster members, the producer
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 143
    assert all(_gone(pid) for pid in started)
    assert "terminated" in err.read_text().splitlines()[-1]


@pytest.mark.slow
def test_a_broker_gone_mid_run_is_one_line(tmp_path: Path) -> None:
    server = start_broker(None, tmp_path / "tansu")
    try:
        err = tmp_path / "err"
        process = _start_loadtest(["--brokers", server.address, "--out", str(tmp_path)], err)
        started = _descendants(process.pid)
        server.stop()
        assert process.wait(120) == 2
    finally:
        server.stop()
    text = err.read_text()
    assert "Traceback" not in text
    assert "%3|" not in text  # no librdkafka log lines
    last = text.strip().splitlines()[-1]
    assert last.startswith("ato: error: "), last
    assert all(_gone(pid) for pid in started)


def test_lag_p95_is_taken_over_the_measured_window() -> None:
    """The warm-up and the drain's zeros used to be in it (3,953 against 4,439 inside)."""
    t_s = [float(t) for t in range(10)]
    lag = [0, 0, 100, 200, 300, 400, 500, 0, 0, 0]
    assert harness._window_p95(lag, t_s, (2.0, 6.0)) == pytest.approx(480.0)
    assert harness._window_p95(lag, t_s, (20.0, 30.0)) == 0.0


def test_the_flow_runs_on_its_config_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ATO_* settings of the harness's environment would override flow.toml (an exported
    ATO_REDIS_URL turned the contact policy on)."""
    started: list[dict[str, Any]] = []
    monkeypatch.setattr(harness.subprocess, "Popen", lambda argv, **kw: started.append(kw))
    monkeypatch.setenv("ATO_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("_ATO_INTERNAL", "1")
    kafka = KafkaSettings(brokers="127.0.0.1:1", input_topics=("in",))
    harness._start_flow(load_scenario("smoke"), kafka, "out", "dlq", 1, 1.0, tmp_path)
    [env] = [kw["env"] for kw in started]
    assert "ATO_REDIS_URL" not in env and env["_ATO_INTERNAL"] == "1"
    assert env["PATH"] == os.environ["PATH"]
