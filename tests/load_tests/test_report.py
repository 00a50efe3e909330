"""Load-test reports: files written, valid PNGs, JSON round trip, Markdown figures, gaps."""

import math
import random
import struct
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from load_tests.report import render_markdown, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN_CHARTS = ["rate.png", "lag.png", "latency.png", "latency_hist.png"]


def run_result(seconds: int = 30, partitions: int = 4, interventions: int = 400) -> dict[str, Any]:
    """A plausible single-run result: steady 20,000 events/s, latencies well under 1 s."""
    rnd = random.Random(7)
    t_s = [float(i) for i in range(seconds)]
    lag = {
        f"ato.events#{p}": [max(0.0, rnd.gauss(1500, 400)) for _ in t_s] for p in range(partitions)
    }
    ingest = [rnd.lognormvariate(math.log(120), 0.5) for _ in range(interventions)]
    return {
        "kind": "run",
        "scenario": {"name": "steady", "description": "Flat 20,000 events/s.", "duration_s": 30},
        "target_rate": 20000.0,
        "started_at": "2026-11-23T03:00:00Z",
        "duration_s": 31.3,
        "settings": {"processes": 1, "producers": 2, "partitions": partitions},
        "input": {"events": 600000, "achieved_rate": 19650.2, "target_events": 600000},
        "processing": {"events": 599000, "rate": 19600.0, "interventions": interventions},
        "lag": {"bounded": True, "max": 12000, "final": 0, "p95": 8000, "rule": "back to 0"},
        "latency_ms": {
            "deadline": {
                "count": interventions,
                "p50": 420.0,
                "p95": 700.0,
                "p99": 900.0,
                "max": 1500.0,
            },
            "ingest": {
                "count": interventions,
                "p50": 120.0,
                "p95": 300.0,
                "p99": 450.0,
                "max": 900.0,
            },
        },
        "detection": {
            "precision": 1.0,
            "recall": 0.9995,
            "truth": 5403,
            "detected": 5400,
            "false_positives": 0,
            "missed": 3,
        },
        "dead_letters": 0,
        "late_events": 12,
        "processes": [
            {"role": "flow", "pid": 123, "peak_rss_mb": 900.0, "cpu_s": 50.2, "cpu_percent": 82.0},
            {"role": "broker", "pid": 99, "peak_rss_mb": 1400.0, "cpu_s": 30.0, "cpu_percent": 49},
        ],
        "timeline": {
            "t_s": t_s,
            "input_rate": [rnd.gauss(20000, 400) for _ in t_s],
            "processed_rate": [rnd.gauss(20000, 900) for _ in t_s],
            "interventions_rate": [rnd.gauss(90, 10) for _ in t_s],
            "lag_total": [sum(v[i] for v in lag.values()) for i in range(seconds)],
            "lag_by_partition": lag,
        },
        "latency_samples": {
            "t_s": sorted(rnd.uniform(0, seconds) for _ in range(interventions)),
            "deadline_ms": [x + 250 + rnd.expovariate(1 / 80) for x in ingest],
            "ingest_ms": ingest,
        },
    }


def find_max_result() -> dict[str, Any]:
    """A capacity search: 20k-60k sustainable, 80k not (lag unbounded)."""
    steps = []
    for i, rate in enumerate([20000.0, 40000.0, 60000.0, 80000.0], start=1):
        ok = rate <= 60000
        steps.append(
            {
                "base_rate": rate,
                "target_rate": rate,
                "achieved_rate": rate * 0.99,
                "processed_rate": min(rate * 0.99, 66000.0),
                "lag_max": 5000 if ok else 3_600_000,
                "lag_final": 0 if ok else 1_600_000,
                "lag_bounded": ok,
                "kept_up": True,
                "held": ok,
                "error": None,
                "latency_ms": {
                    "deadline": {
                        "count": 100,
                        "p50": 400.0,
                        "p95": 600.0,
                        "p99": 800.0 if ok else 32000.0,
                        "max": 1000.0,
                    },
                    "ingest": {
                        "count": 100,
                        "p50": 100.0,
                        "p95": 200.0,
                        "p99": 300.0 if ok else 28000.0,
                        "max": 900.0,
                    },
                },
                "report_dir": f"step-{i:02d}-{rate:.0f}",
            }
        )
    return {
        "kind": "find_max",
        "scenario": {"name": "steady"},
        "settings": {"processes": 1},
        "started_at": "2026-11-23T03:00:00Z",
        "steps": steps,
        "max_sustainable_rate": 60000.0,
        "max_sustainable_achieved_rate": 59400.0,
        "max_sustainable_step": 3,
        "max_sustainable_means": "the peak target rate of the best step that held",
        "rule": "lag bounded and deadline p99 <= 1 s",
    }


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, after checking its magic bytes."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert 5_000 < len(data) < 2_000_000, (path, len(data))
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def run_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """The report of ``run_result()`` (drawn once: charts take about a second)."""
    out = tmp_path_factory.mktemp("report") / "new" / "dir"
    return out, write_report(run_result(), out)


def test_run_report_writes_every_file(run_report: tuple[Path, list[Path]]) -> None:
    out, paths = run_report
    assert [p.name for p in paths] == ["report.json", "report.md", *RUN_CHARTS]
    assert all(p.parent == out and p.is_file() for p in paths)
    for name in RUN_CHARTS:
        width, height = png_size(out / name)
        assert width == 1000
        assert 400 <= height <= 700


def test_run_report_json_round_trips(run_report: tuple[Path, list[Path]]) -> None:
    out, _paths = run_report
    assert orjson.loads((out / "report.json").read_bytes()) == run_result()


def test_json_serializes_numpy_values(tmp_path: Path) -> None:
    result: dict[str, Any] = {"kind": "run", "timeline": {"t_s": np.arange(30, dtype=float)}}
    result["dead_letters"] = np.int64(2)
    assert [p.name for p in write_report(result, tmp_path)] == ["report.json", "report.md"]
    back = orjson.loads((tmp_path / "report.json").read_bytes())
    assert back["timeline"]["t_s"] == list(range(30))
    assert back["dead_letters"] == 2


def test_run_markdown_has_the_key_figures(run_report: tuple[Path, list[Path]]) -> None:
    out, _paths = run_report
    md = (out / "report.md").read_text()
    assert md.startswith("# Load test: steady (2026-11-23 03:00:00 UTC)")
    for text in (
        "| Target rate (peak) | 20,000 events/s |",
        "| Achieved input rate | 19,650 events/s (600,000 events) |",
        "| Processing rate | 19,600 events/s (599,000 events) |",
        "| Lag bounded | yes (max 12,000, p95 8,000, final 0 messages) |",
        "420 / 700 / 900 / 1,500 ms",
        "120 / 300 / 450 / 900 ms",
        "| Precision | 1.0000",
        "| Recall | 0.9995",
        "| Dead letters | 0 |",
        "| Late events | 12 |",
        "| flow | 123 | 900 | 50.2 | 82 |",
        "| `producers` | 2 |",
        "**Deadline latency**",
        "**Ingest latency**",
    ):
        assert text in md, text
    for name in RUN_CHARTS:
        assert f"]({name})" in md
    assert render_markdown(run_result()) == md


def test_many_partitions_draw_the_total_only(tmp_path: Path) -> None:
    result = run_result(seconds=5, partitions=40)
    result["timeline"] = {k: result["timeline"][k] for k in ("t_s", "lag_by_partition")}
    result["latency_samples"] = None
    paths = write_report(result, tmp_path)
    assert [p.name for p in paths] == ["report.json", "report.md", "lag.png"]
    png_size(tmp_path / "lag.png")


def test_empty_run_says_na_and_draws_nothing(tmp_path: Path) -> None:
    result: dict[str, Any] = {
        "kind": "run",
        "scenario": {"name": "empty"},
        "target_rate": 1000.0,
        "started_at": None,
        "duration_s": None,
        "settings": {},
        "input": {"events": 0, "achieved_rate": None},
        "processing": None,
        "lag": {"bounded": None, "max": None, "final": None, "p95": None},
        "latency_ms": {"deadline": None, "ingest": {"count": 0, "p50": None, "p99": None}},
        "detection": None,
        "dead_letters": None,
        "late_events": None,
        "processes": [],
        "timeline": {"t_s": [], "input_rate": [], "lag_by_partition": {}},
        "latency_samples": None,
    }
    paths = write_report(result, tmp_path)
    assert [p.name for p in paths] == ["report.json", "report.md"]
    md = (tmp_path / "report.md").read_text()
    assert "# Load test: empty (n/a)" in md
    assert "| Achieved input rate | n/a (0 events) |" in md
    assert "| Deadline latency p50 / p95 / p99 / max | n/a |" in md
    assert "| Lag bounded | n/a |" in md
    assert "| Recall | n/a |" in md
    assert "No charts" in md
    assert render_markdown(result) == md


def test_gaps_in_series_still_draw(tmp_path: Path) -> None:
    result = run_result(seconds=10, interventions=50)
    timeline = result["timeline"]
    timeline["processed_rate"] = [None, *timeline["processed_rate"][1:-3]]  # short, with a hole
    timeline["interventions_rate"] = None
    timeline["lag_total"] = [None] * 10
    result["latency_samples"]["ingest_ms"] = []
    result["latency_ms"]["ingest"] = None
    paths = write_report(result, tmp_path)
    assert [p.name for p in paths] == ["report.json", "report.md", *RUN_CHARTS]
    for name in RUN_CHARTS:
        png_size(tmp_path / name)
    assert "| Ingest latency p50 / p95 / p99 / max | n/a |" in (tmp_path / "report.md").read_text()


def test_find_max_report(tmp_path: Path) -> None:
    result = find_max_result()
    paths = write_report(result, tmp_path)
    assert [p.name for p in paths] == ["report.json", "report.md", "find_max.png"]
    width, _height = png_size(tmp_path / "find_max.png")
    assert width == 1000
    assert orjson.loads((tmp_path / "report.json").read_bytes()) == result
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# Capacity search: steady (2026-11-23 03:00:00 UTC)")
    assert (
        "**Maximum sustainable rate: 60,000 events/s** (step 3; achieved input 59,400 events/s)."
        " It is the peak target rate of the best step that held." in md
    )
    row = "| [3](step-03-60000/report.md) | 60,000 | 59,400 | 59,400 | 5,000 | 0 | yes | yes | yes"
    assert row in md
    assert "| [4](step-04-80000/report.md) | 80,000 |" in md
    assert "| **no** | yes | **no** | 400 | 32,000 | 28,000 |" in md  # lag not bounded
    assert "![Rates and p99 latency per step](find_max.png)" in md


def test_find_max_without_steps(tmp_path: Path) -> None:
    result: dict[str, Any] = {
        "kind": "find_max",
        "scenario": {"name": "x"},
        "steps": [],
        "max_sustainable_rate": None,
    }
    paths = write_report(result, tmp_path)
    assert [p.name for p in paths] == ["report.json", "report.md"]
    md = (tmp_path / "report.md").read_text()
    assert "maximum sustainable rate n/a" in md
