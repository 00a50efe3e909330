"""``ato loadtest``: scenario files, traffic shaping and pacing, the capacity rule, and a short
smoke run against the real broker (so the harness never rots)."""

import math
from pathlib import Path

import numpy as np
import orjson
import pytest

from ato.catalog import load_catalog
from ato.devservers import Server
from ato.exceptions import ConfigError
from ato.generator import TruthStall
from load_tests.harness import LoadTestError, _next_rate, lag_bounded, run_scenario
from load_tests.harness import main as harness_main
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
    assert np.mean(ramp_rate[20:30]) == pytest.approx(2_000, rel=0.15)
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
