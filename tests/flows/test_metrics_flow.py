"""Metrics in the embedded ClickHouse after a real generator run, checked against ground truth.

One generator run (``ato.runner.run``) writes to a chDB directory; every example query of
``docs/analytics.md`` runs against it, and the figures that the generator also knows are
compared: stalls, their segments and steps, recoveries and their channels, lapsed windows,
instances started and completed, events in. A second run of the same traffic into the same
database (a replay) must leave every query's answer unchanged.
"""

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from ato.catalog import load_catalog
from ato.config import GeneratorSettings, Settings, clickhouse_url
from ato.generator import GeneratedTraffic, TruthStall, generate
from ato.runner import run
from sinks.clickhouse import ClickHouseStore

CATALOG = load_catalog()
DOCS = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
Rows = list[tuple[Any, ...]]


def example_queries() -> dict[str, str]:
    """The numbered example queries of docs/analytics.md, by title."""
    text = DOCS.read_text(encoding="utf-8")
    found = re.findall(r"^### (\d+)\. (.+?)\n+```sql\n(.*?)```", text, re.S | re.M)
    return {f"{number}. {title}": sql for number, title, sql in found}


QUERIES = example_queries()


@pytest.fixture(scope="module")
def traffic() -> GeneratedTraffic:
    return generate(CATALOG, GeneratorSettings(clients=2000, seed=11, partitions=2))


def _run(settings: Settings, traffic: GeneratedTraffic) -> dict[str, Any]:
    return run(settings, traffic=traffic).summary()


@pytest.fixture(scope="module")
def loaded(
    tmp_path_factory: pytest.TempPathFactory, traffic: GeneratedTraffic
) -> Iterator[tuple[Settings, dict[str, Rows]]]:
    """Run the flow once and answer every example query."""
    settings = Settings().with_overrides("", out_dir=tmp_path_factory.mktemp("metrics") / "run")
    settings = settings.with_overrides("engine", shards=4, batch_size=2000)
    # not the default "ato": the documented queries name no database
    settings = settings.with_overrides("clickhouse", database="analytics")
    summary = _run(settings, traffic)
    assert summary["precision"] == summary["recall"] == 1.0
    yield settings, answers(settings)


def answers(settings: Settings) -> dict[str, Rows]:
    with ClickHouseStore(clickhouse_url(settings), settings.clickhouse.database) as store:
        store.refresh_rollups()
        return {title: store.query(sql)[1] for title, sql in QUERIES.items()}


def detectable(traffic: GeneratedTraffic) -> list[TruthStall]:
    return traffic.detectable_stalls()


def recovered(traffic: GeneratedTraffic) -> list[TruthStall]:
    return [s for s in detectable(traffic) if 0 <= s.resumed_at <= traffic.end_ts]


def lapsed(traffic: GeneratedTraffic) -> list[TruthStall]:
    close = {j.name: j.close_after_ms for j in CATALOG.journeys}
    return [
        s
        for s in detectable(traffic)
        if s.resumed_at < 0 and s.deadline + close[s.journey] <= traffic.end_ts
    ]


def input_events(traffic: GeneratedTraffic) -> list[dict[str, Any]]:
    return [orjson.loads(line) for lines in traffic.partitions.values() for line in lines]


def test_docs_hold_at_least_eight_queries() -> None:
    assert len(QUERIES) >= 8


def test_every_example_query_answers(loaded: tuple[Settings, dict[str, Rows]]) -> None:
    _, got = loaded
    assert got.keys() == QUERIES.keys()
    for title, rows in got.items():
        assert rows, f"{title}: no rows"


def test_funnel_conversion_by_segment_matches_the_input(
    loaded: tuple[Settings, dict[str, Rows]], traffic: GeneratedTraffic
) -> None:
    """Instances started and completed per journey and segment, counted from the raw input."""
    _, got = loaded
    firsts = {j.name: j.steps[0].on[0] for j in CATALOG.journeys}
    successes = {
        j.name: {t for s in j.steps if s.terminal == "success" for t in s.on}
        for j in CATALOG.journeys
    }
    started: Counter[tuple[str, str]] = Counter()
    completed: Counter[tuple[str, str]] = Counter()
    for e in input_events(traffic):
        key = (e.get("journey"), e.get("attrs", {}).get("segment", "unknown"))
        if e.get("journey") and e["type"] == firsts[e["journey"]]:
            started[key] += 1
        if e.get("journey") and e["type"] in successes[e["journey"]]:
            completed[key] += 1
    rows = got["1. Funnel conversion by segment"]
    assert {(j, s): n for j, s, n, _, _ in rows} == dict(started)
    assert {(j, s): n for j, s, _, n, _ in rows if n} == dict(completed)


def test_stalls_match_the_ground_truth(
    loaded: tuple[Settings, dict[str, Rows]], traffic: GeneratedTraffic
) -> None:
    _, got = loaded
    truth = detectable(traffic)
    by_journey = Counter(s.journey for s in truth)
    rows = got["3. Median time from last progress to intervention, per journey"]
    assert {j: n for j, n, _ in rows} == dict(by_journey)
    last_day = max(s.deadline for s in truth) // 86_400_000
    top = Counter((s.journey, s.step) for s in truth if s.deadline // 86_400_000 == last_day)
    rows = got["5. Top stalled steps on the latest day"]
    assert {(j, s): n for j, s, n in rows} == dict(top.most_common(len(rows)))
    rows = got["2. Stall rate per step per hour"]
    assert all(0 <= rate <= 1 for *_, rate in rows)
    stalls_at: Counter[tuple[str, str]] = Counter()
    for _, journey, step, _, stalls, _ in rows:
        stalls_at[journey, step] += stalls
    assert stalls_at == Counter((s.journey, s.step) for s in truth)  # every stall, once
    rows = got["10. Stalls per hour by segment, from the rollup"]
    by_segment = Counter(traffic.clients[s.client_id] for s in truth)
    totals: Counter[str] = Counter()
    for _, segment, n in rows:
        totals[segment] += n
    assert totals == by_segment


def test_decisions_outcomes_and_rates_match_the_ground_truth(
    loaded: tuple[Settings, dict[str, Rows]], traffic: GeneratedTraffic
) -> None:
    _, got = loaded
    truth = detectable(traffic)
    assert got["6. Interventions by decision and reason (suppressed ones and why)"] == [
        ("sent", "", len(truth))
    ]
    final = got["11. Final decision per candidate with the contact policy, by channel"]
    assert final == [("sent", "", "", len(truth))]  # no policy: every stall, no channel
    channels = Counter(s.resume_channel for s in recovered(traffic))
    rows = got["4. Conversion after intervention, by recovery channel and tier"]
    by_channel: Counter[str] = Counter()
    for _, channel, n, conversion, _ in rows:
        by_channel[channel] += n
        assert 0 < conversion <= 1
    assert by_channel == channels
    per_tier: Counter[str] = Counter()
    for tier, _, _, conversion, _ in rows:
        per_tier[tier] += conversion
    assert all(share <= 1.0001 for share in per_tier.values())  # shares of one tier's sends
    rows = got["8. Touch rate and conversion rate per journey (the seeds' two rates)"]
    per_journey = Counter(s.journey for s in truth)
    back = Counter(s.journey for s in recovered(traffic))
    assert {r[0]: (r[1], r[2], r[3], r[4]) for r in rows} == {
        j: (n, n, 1.0, back[j]) for j, n in per_journey.items()
    }
    abandoned = Counter((s.journey, s.step) for s in lapsed(traffic))
    failures = {  # a failure step ends an instance without success too (declined, rejected)
        (j.name, t): s.name for j in CATALOG.journeys for s in j.steps if s.terminal == "failure"
        for t in s.on
    }  # fmt: skip
    for e in input_events(traffic):
        if (e.get("journey"), e["type"]) in failures:
            abandoned[(e["journey"], failures[(e["journey"], e["type"])])] += 1
    assert any(step in ("declined", "rejected") for _, step in abandoned)
    rows = got["9. Where clients give up: abandoned instances by step"]
    assert {(j, s): n for j, s, n in rows} == dict(abandoned)


def test_flow_health_counts_every_event(
    loaded: tuple[Settings, dict[str, Rows]], traffic: GeneratedTraffic
) -> None:
    _, got = loaded
    rows = got["7. Flow throughput and watermark delay over time"]
    assert sum(r[1] for r in rows) == traffic.n_events
    assert sum(r[2] for r in rows) == sum(r[3] for r in rows) == 0


def test_a_replay_into_the_same_database_counts_nothing_twice(
    loaded: tuple[Settings, dict[str, Rows]], traffic: GeneratedTraffic
) -> None:
    """The same traffic again (a backfill, or a restart from the start) changes no answer."""
    settings, first = loaded
    _run(settings, traffic)
    second = answers(settings)
    for title in QUERIES:
        if title.startswith("7."):  # flow health is per run: a second run is more work done
            continue
        assert second[title] == first[title], title
    assert sum(r[1] for r in second["7. Flow throughput and watermark delay over time"]) == (
        2 * traffic.n_events
    )


def test_metrics_off_writes_no_database(tmp_path: Path, traffic: GeneratedTraffic) -> None:
    settings = Settings().with_overrides("", out_dir=tmp_path / "run")
    settings = replace(settings, clickhouse=replace(settings.clickhouse, enabled=False))
    _run(settings.with_overrides("engine", shards=4, batch_size=2000), traffic)
    assert not (tmp_path / "run" / "clickhouse").exists()
