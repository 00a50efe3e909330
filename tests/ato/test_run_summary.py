"""The closing summary scores a run against the generator's ground truth."""

from pathlib import Path

import orjson
import pytest

from ato.catalog import load_catalog
from ato.config import GeneratorSettings
from ato.exceptions import ConfigError
from ato.generator import generate
from ato.runner import RunResult, check_generated_times, read_deadlines
from operators.decode import wall_ms
from sinks.progress import RunStats


def test_an_intervention_at_another_deadline_than_the_truths_is_no_hit() -> None:
    """An id names the stall (client, journey, instance start, step, attempt), not when it
    fell due: an engine that missed an abandon signal raises the right id at the wrong
    deadline, and scored by ids alone it reached precision 1.0 (524 of 1,338 deadlines
    wrong in a probe)."""
    truth = {"a": 100, "b": 200, "c": 300}
    written = {"a": 100, "b": 250, "x": 400}  # b late, x not a true stall, c missed
    result = RunResult(RunStats(), 1.0, "out", written, truth)
    summary = result.summary()
    assert summary["deadline_mismatches"] == 1
    assert summary["precision"] == round(1 / 3, 6) and summary["recall"] == round(1 / 3, 6)
    exact = RunResult(RunStats(), 1.0, "out", truth, truth)
    assert exact.summary()["precision"] == exact.summary()["recall"] == 1.0


def test_repeated_lines_are_counted_and_a_second_deadline_is_a_mismatch() -> None:
    """The file sink writes each intervention once: a repeated line is an engine defect the
    summary shows, and an id written at two deadlines is not a hit."""
    truth = {"a": 100, "b": 200}
    result = RunResult(
        RunStats(), 1.0, "out", {"a": 100, "b": 200}, truth, repeated=2,
        conflicting=frozenset({"b"}),
    )  # fmt: skip
    summary = result.summary()
    assert summary["repeated_interventions"] == 2
    assert summary["deadline_mismatches"] == 1 and summary["precision"] == 0.5


def test_decisions_not_sent_are_checked_by_their_first_decision_time() -> None:
    """With the contact policy, a suppressed or deferred stall writes no intervention; its
    first decision's time is its deadline."""
    truth = {"a": 100, "b": 200, "c": 300}
    decisions = {"a": "sent", "b": "suppressed", "c": "deferred"}
    decided_at = {"a": 100, "b": 200, "c": 333}  # c decided at another time than its deadline
    result = RunResult(RunStats(), 1.0, "out", {"a": 100}, truth, decisions, decided_at)
    summary = result.summary()
    assert summary["deadline_mismatches"] == 1
    assert summary["precision"] == summary["recall"] == round(2 / 3, 6)


def test_read_deadlines_counts_repeats_and_conflicts(tmp_path: Path) -> None:
    path = tmp_path / "interventions.jsonl"
    lines = [
        {"intervention_id": i, "deadline_ts": d}
        for i, d in [("a", 1), ("b", 2), ("a", 1), ("b", 3)]
    ]
    path.write_bytes(b"".join(orjson.dumps(doc) + b"\n" for doc in lines))
    deadlines, repeated, conflicting = read_deadlines(path)
    assert deadlines == {"a": 1, "b": 3} and repeated == 2 and conflicting == {"b"}


def test_generated_traffic_the_engine_would_dead_letter_is_refused() -> None:
    catalog = load_catalog()
    now = wall_ms()
    day = 86_400_000
    fits = generate(catalog, GeneratorSettings(clients=30, seed=1), start_ms=now - 30 * day)
    check_generated_times(fits, 946_684_800_000, day, live=False)  # ends before now + 1 day
    late = generate(catalog, GeneratorSettings(clients=30, seed=1), start_ms=now - 3_600_000)
    assert late.end_ts > now + day  # journeys go on for days
    with pytest.raises(ConfigError, match="those events would be dead letters"):
        check_generated_times(late, 946_684_800_000, day, live=False)
    check_generated_times(late, 946_684_800_000, day, live=True)  # sent when their time comes
    with pytest.raises(ConfigError, match=r"engine.min_event_ts_ms"):
        check_generated_times(fits, now, day, live=True)
