"""The metrics-floor benchmark: its helpers, and one small run end to end."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from load_tests import bench_inprocess, bench_metrics_floor


def test_event_keys_repeat_each_row_by_its_events_in_minute_order() -> None:
    funnel = pa.table(
        {
            "minute": pa.array([60_000, 0, 60_000], pa.timestamp("ms", "UTC")),
            "events": pa.array([2, 0, 3], pa.int64()),
        }
    )
    keys = bench_metrics_floor.event_keys(funnel, seed=1)
    assert keys[0] == 1  # the minute-0 row, once although it holds no event (outcomes only)
    assert sorted(keys[1:].tolist()) == [0, 0, 2, 2, 2]


def test_as_sink_sends_keeps_ids_as_text_and_names_as_dictionaries() -> None:
    read = pa.table(
        {
            "intervention_id": pa.array(["a", "b"]),
            "journey": pa.array(["x", "x"]).dictionary_encode(),
            "step": pa.array([b"s1", b"s2"], pa.binary()),
            "events": pa.array([1, 2], pa.int64()),
        }
    )
    sent = bench_metrics_floor.as_sink_sends(read)
    assert sent.schema.field("intervention_id").type == pa.string()
    assert pa.types.is_dictionary(sent.schema.field("journey").type)
    assert sent.column("step").to_pylist() == ["s1", "s2"]
    assert pa.types.is_dictionary(sent.schema.field("step").type)
    assert sent.schema.field("events").type == pa.int64()


@pytest.mark.slow
def test_small_run_reports_every_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_inprocess, "CACHE", tmp_path / "cache")
    result = bench_metrics_floor.main(["--clients", "3000", "--repeat", "1"])
    rows = result["rows"]
    assert set(rows) == set(bench_metrics_floor.TABLES)
    assert rows["stalls"] == rows["decisions"] > 0
    assert 0 < rows["outcomes"] <= rows["stalls"]  # windows still open at the end: no outcome
    assert rows["funnel_minute"] > 0
    assert result["event_keys"] >= result["events"]  # an event's row, or an outcome's alone
    assert result["ingest_cpu_s"] > 0
    assert result["budget_cpu_s"] == result["budget_cpu_s_all"][0]
    low, high = result["floor_share_range"]
    assert 0 < low <= result["floor_share"] <= high
    assert 0 <= result["floor_cost"] < 1
    assert np.isfinite(result["metrics_cost"])
    assert result["beside_round_s"] > 0  # its rows were copied whole, or main() raised
    assert result["beside_cost"] < 1
    assert len(result["beside_cost_all"]) == 1
