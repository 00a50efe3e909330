"""Decision columns: the names, documents and Decision objects made from their codes."""

from dataclasses import asdict

import numpy as np
import pyarrow as pa

from ato.catalog import SEGMENTS, TIERS, load_catalog
from operators.interventions import InterventionBuilder
from operators.metrics import MetricRows
from policy.batch_checks import REASONS
from policy.decision_columns import DecisionColumns
from policy.profiles import CONTACT_CHANNELS
from policy.rules import Decision

CATALOG = load_catalog()
NAMES = InterventionBuilder(CATALOG)


def columns(rows: int, seed: int) -> DecisionColumns:
    """``rows`` decisions with random codes."""
    rng = np.random.default_rng(seed)
    journey = rng.integers(0, len(NAMES.journey_names), rows)
    steps = np.array([len(CATALOG.journeys[j].steps) for j in journey.tolist()])
    outcome = rng.integers(0, 3, rows)
    return DecisionColumns(
        NAMES.journey_names, NAMES.step_names,
        np.frombuffer(b"".join(b"%036d" % (seed * 1000 + i) for i in range(rows)), np.uint8)
        .reshape(rows, 36),
        [f"C{seed}-{i}" for i in range(rows)], journey,
        (rng.random(rows) * steps).astype(np.int64), rng.integers(1, 4, rows),
        rng.integers(0, len(SEGMENTS), rows), outcome,
        np.where(outcome == 0, 0, rng.integers(1, len(REASONS), rows)),
        rng.integers(0, len(TIERS), rows), rng.integers(0, len(CONTACT_CHANNELS), rows),
        rng.integers(0, 101, rows), [f"rm{i}" if i % 3 else "" for i in range(rows)],
        rng.integers(0, 2**40, rows), rng.integers(0, 2**40, rows), rng.random(rows) < 0.2,
    )  # fmt: skip


def test_decisions_docs_and_counts_name_the_codes() -> None:
    batch = columns(50, seed=1)
    decisions = batch.decisions()
    assert len(decisions) == len(batch) == 50
    for row, d in enumerate(decisions):
        assert isinstance(d, Decision)
        j, s = int(batch.journey[row]), int(batch.step[row])
        assert d.intervention_id == batch.ids[row].tobytes().decode()
        assert d.client_id == f"C1-{row}"
        assert d.journey == CATALOG.journeys[j].name
        assert d.step == CATALOG.journeys[j].steps[s].name
        assert d.segment == SEGMENTS[batch.segment[row]]
        assert d.outcome == ("sent", "deferred", "suppressed")[batch.outcome[row]]
        assert d.reason == REASONS[batch.reason[row]]
        assert d.tier == TIERS[batch.tier[row]]
        assert d.channel == CONTACT_CHANNELS[batch.channel[row]]
        assert (d.attempt, d.priority, d.decided_at_ms, d.recheck_at_ms, d.replayed) == (
            batch.attempt[row], batch.priority[row], batch.decided_at_ms[row],
            batch.recheck_at_ms[row], bool(batch.replayed[row]),
        )  # fmt: skip
        assert type(d.attempt) is int and type(d.replayed) is bool
    docs = batch.docs()
    assert docs == [asdict(d) for d in decisions]
    assert [list(doc) for doc in docs] == [list(asdict(d)) for d in decisions]  # key order
    counted = batch.counts()
    for outcome in ("sent", "deferred", "suppressed"):
        assert counted[outcome] == sum(d.outcome == outcome for d in decisions)
    assert batch.sent_rows().tolist() == [i for i, d in enumerate(decisions) if d.outcome == "sent"]


def test_concat_and_take_keep_rows_in_order() -> None:
    a, b = columns(7, seed=2), columns(5, seed=3)
    empty = DecisionColumns.empty(NAMES.journey_names, NAMES.step_names)
    both = DecisionColumns.concat([empty, a, empty, b])
    assert both.decisions() == a.decisions() + b.decisions()
    assert DecisionColumns.concat([empty, a]) is a
    assert len(DecisionColumns.concat([empty, empty])) == 0
    rows = np.array([11, 0, 6])
    assert both.take(rows).decisions() == [both.decisions()[i] for i in rows.tolist()]


def test_metric_rows_hold_the_named_values() -> None:
    batch = columns(40, seed=4)
    block = MetricRows(CATALOG).policy_decisions(batch, emitted_at_ms=123)
    assert block.table == "decisions" and len(block) == 40

    def values(name: str) -> list[object]:
        column = block.columns[name]
        if isinstance(column, pa.Array):
            return column.to_pylist()
        return np.asarray(column).tolist()

    texts = batch.texts()
    for column, field in [
        ("intervention_id", "intervention_id"), ("client_id", "client_id"),
        ("journey", "journey"), ("step", "step"), ("attempt", "attempt"),
        ("segment", "segment"), ("decision", "outcome"), ("reason", "reason"),
        ("tier", "tier"), ("channel", "channel"), ("rm_id", "rm_id"),
        ("priority", "priority"), ("decided_at", "decided_at_ms"),
    ]:  # fmt: skip
        assert values(column) == texts[field], column
    assert values("emitted_at") == [123] * 40
