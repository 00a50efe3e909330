"""Load-test reports: ``report.json``, ``report.md`` and PNG charts of one result.

A result is the dict that ``ato loadtest`` builds: ``"kind": "run"`` for one run (rates, lag
and latencies over time), ``"kind": "find_max"`` for a capacity search (one summary per rate
step). Any number may be ``None`` and any series empty when it is unknown: the report then says
"n/a" and leaves out the chart it cannot draw.

Charts use matplotlib's Agg canvas on explicit ``Figure`` objects (no pyplot, no global state).
"""

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

NA = "n/a"
TARGET_P99_MS = 1000.0
MAX_PARTITION_LINES = 12
DPI = 100
SIZE = (10.0, 5.0)
TITLE_SIZE = 14
LABEL_SIZE = 12
TICK_SIZE = 10
LEGEND_SIZE = 10
WIDE_SPREAD = 100.0
LONG_TAIL = 10.0
HIST_BINS = 60
KINDS = ("deadline", "ingest")

DEADLINE_TEXT = (
    "**Deadline latency** is the time from a stall's deadline to its intervention reaching the "
    "output topic: the topic timestamp minus the stall deadline in event time. In a live run "
    "event time is wall time, so this includes the allowed lateness the flow waits for "
    "out-of-order events before it may declare the stall."
)
INGEST_TEXT = (
    "**Ingest latency** is the time the engine itself takes: the topic timestamp of the "
    "intervention minus the moment every producer had sent its events up to the stall's "
    "deadline plus the allowed lateness (the earliest moment the flow could know the stall "
    "is due). It excludes waiting for input, so it measures consuming, processing and "
    "producing."
)


# ---------------------------------------------------------------------------------------------
# Public API


def write_report(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``report.json``, ``report.md`` and the charts into ``out_dir``; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images = _write_charts(result, out_dir)
    json_path = out_dir / "report.json"
    options = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
    json_path.write_bytes(orjson.dumps(result, option=options))
    md_path = out_dir / "report.md"
    md_path.write_text(_markdown(result, [p.name for p in images]), encoding="utf-8")
    return [json_path, md_path, *images]


def render_markdown(result: dict[str, Any]) -> str:
    """The Markdown report, linking every chart the result has data for."""
    return _markdown(result, None)


def _markdown(result: dict[str, Any], images: list[str] | None) -> str:
    if result.get("kind") == "find_max":
        return _find_max_markdown(result, images)
    return _run_markdown(result, images)


def _write_charts(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Draw the result's charts; the files written (a chart without data is skipped)."""
    if result.get("kind") == "find_max":
        drawers = {"find_max.png": _find_max_figure}
    else:
        drawers = {
            "rate.png": _rate_figure,
            "lag.png": _lag_figure,
            "latency.png": _latency_figure,
            "latency_hist.png": _latency_hist_figure,
        }
    written = []
    for name, draw in drawers.items():
        fig = draw(result)
        if fig is not None:
            path = out_dir / name
            _save(fig, path)
            written.append(path)
    return written


# ---------------------------------------------------------------------------------------------
# Formatting


def _get(data: Any, *keys: str) -> Any:
    """``data[k1][k2]...``, or ``None`` when any level is missing or not a dict."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else ``None``."""
    return float(value) if _is_number(value) else None


def _count(value: Any) -> str:
    """An integer-like figure with thousands separators: ``1,200,000``."""
    return f"{value:,.0f}" if _is_number(value) else NA


def _rate(value: Any) -> str:
    return f"{value:,.0f} events/s" if _is_number(value) else NA


def _ms(value: Any) -> str:
    return f"{value:,.0f}" if _is_number(value) else NA


def _ratio(value: Any) -> str:
    return f"{value:.4f}" if _is_number(value) else NA


def _seconds(value: Any) -> str:
    return f"{value:,.1f} s" if _is_number(value) else NA


def _yes_no(value: Any) -> str:
    if value is None:
        return NA
    return "yes" if value else "**no**"


def _date(value: Any) -> str:
    """``2026-11-23 03:00:00 UTC`` from an ISO timestamp; the text itself if it is not one."""
    if not value:
        return NA
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if parsed.tzinfo is None:
        return parsed.strftime("%Y-%m-%d %H:%M:%S")
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _cell(value: Any) -> str:
    """A settings value as a table cell: compact JSON for lists and dicts, no stray pipes."""
    if value is None:
        text = NA
    elif isinstance(value, str):
        text = value
    elif isinstance(value, bool | int | float):
        text = str(value)
    else:
        text = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode()
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: int = 1) -> list[str]:
    """A Markdown table; columns from ``right`` on are right-aligned."""
    align = ["---" if i < right else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _latency_figures(latency: Any) -> str:
    """``p50 / p95 / p99 / max`` in ms of one latency summary, with its count."""
    if not isinstance(latency, dict):
        return NA
    values = [latency.get(k) for k in ("p50", "p95", "p99", "max")]
    if not any(_is_number(v) for v in values):
        return NA
    text = " / ".join(_ms(v) for v in values) + " ms"
    if _is_number(latency.get("count")):
        text += f" ({_count(latency['count'])} interventions)"
    return text


def _key_values(data: Any) -> list[str]:
    """A two-column table of a flat dict, or a line saying there is none."""
    if not isinstance(data, dict) or not data:
        return [NA]
    return _table(["Key", "Value"], [[f"`{k}`", _cell(v)] for k, v in data.items()], right=2)


# ---------------------------------------------------------------------------------------------
# Markdown: one run


def _run_markdown(result: dict[str, Any], images: list[str] | None) -> str:
    name = _get(result, "scenario", "name") or "unnamed scenario"
    lines = [f"# Load test: {name} ({_date(result.get('started_at'))})", ""]
    description = _get(result, "scenario", "description")
    if description:
        lines += [str(description), ""]
    lines += ["## Summary", "", *_summary_table(result), ""]
    rule = _get(result, "lag", "rule")
    if rule:
        lines += [f"Lag is bounded when: {rule}", ""]
    lines += ["## Processes", "", *_processes_table(result.get("processes")), ""]
    lines += ["## Charts", "", *_image_links(images, _run_charts(result)), ""]
    lines += ["## Latency definitions", "", DEADLINE_TEXT, "", INGEST_TEXT, ""]
    lines += ["## Settings", "", *_key_values(result.get("settings")), ""]
    lines += ["## Scenario", "", *_key_values(result.get("scenario")), ""]
    return "\n".join(lines)


def _summary_table(result: dict[str, Any]) -> list[str]:
    lag = result.get("lag") or {}
    lag_text = _yes_no(lag.get("bounded"))
    if any(_is_number(lag.get(k)) for k in ("max", "p95", "final")):
        lag_text += (
            f" (max {_count(lag.get('max'))}, p95 {_count(lag.get('p95'))}, "
            f"final {_count(lag.get('final'))} messages)"
        )
    detection = result.get("detection") or {}
    recall = _ratio(detection.get("recall"))
    if _is_number(detection.get("truth")):
        recall += (
            f" ({_count(detection.get('detected'))} detected of {_count(detection['truth'])}"
            f" stalls, {_count(detection.get('missed'))} missed)"
        )
    precision = _ratio(detection.get("precision"))
    if _is_number(detection.get("false_positives")):
        precision += f" ({_count(detection['false_positives'])} false positives)"
    input_text = _rate(_get(result, "input", "achieved_rate"))
    if _is_number(_get(result, "input", "events")):
        input_text += f" ({_count(_get(result, 'input', 'events'))} events)"
    processing_text = _rate(_get(result, "processing", "rate"))
    if _is_number(_get(result, "processing", "events")):
        processing_text += f" ({_count(_get(result, 'processing', 'events'))} events)"
    deadline = _latency_figures(_get(result, "latency_ms", "deadline"))
    ingest = _latency_figures(_get(result, "latency_ms", "ingest"))
    rows = [
        ["Target rate (peak)", _rate(result.get("target_rate"))],
        ["Achieved input rate", input_text],
        ["Processing rate", processing_text],
        ["Interventions", _count(_get(result, "processing", "interventions"))],
        ["Lag bounded", lag_text],
        ["Deadline latency p50 / p95 / p99 / max", deadline],
        ["Ingest latency p50 / p95 / p99 / max", ingest],
        ["Precision", precision],
        ["Recall", recall],
        ["Dead letters", _count(result.get("dead_letters"))],
        ["Late events", _count(result.get("late_events"))],
        ["Duration", _seconds(result.get("duration_s"))],
    ]
    return _table(["Measure", "Value"], rows, right=2)


def _processes_table(processes: Any) -> list[str]:
    if not processes:
        return [NA]
    rows = [
        [
            str(p.get("role") or NA),
            NA if p.get("pid") is None else str(p["pid"]),
            f"{p['peak_rss_mb']:,.0f}" if _is_number(p.get("peak_rss_mb")) else NA,
            f"{p['cpu_s']:,.1f}" if _is_number(p.get("cpu_s")) else NA,
            f"{p['cpu_percent']:,.0f}" if _is_number(p.get("cpu_percent")) else NA,
        ]
        for p in processes
    ]
    return _table(["Role", "PID", "Peak RSS (MB)", "CPU (s)", "CPU (%)"], rows)


def _run_charts(result: dict[str, Any]) -> list[str]:
    """The charts a run report would have (when no files were written to say which)."""
    timeline = result.get("timeline") or {}
    samples = result.get("latency_samples") or {}
    charts = []
    if _has_series(timeline, "input_rate", "processed_rate", "interventions_rate"):
        charts.append("rate.png")
    if _has_series(timeline, "lag_total") or _partition_series(timeline):
        charts.append("lag.png")
    if _has_series(samples, "deadline_ms", "ingest_ms"):
        charts += ["latency.png", "latency_hist.png"]
    return charts


def _image_links(images: list[str] | None, default: list[str]) -> list[str]:
    names = default if images is None else images
    if not names:
        return ["No charts: the result has no time series."]
    titles = {
        "rate.png": "Input, processing and intervention rates over time",
        "lag.png": "Consumer lag over time",
        "latency.png": "Latency of each intervention over time",
        "latency_hist.png": "Latency distributions",
        "find_max.png": "Rates and p99 latency per step",
    }
    lines = []
    for name in names:
        lines += [f"![{titles.get(name, name)}]({name})", ""]
    return lines[:-1]


# ---------------------------------------------------------------------------------------------
# Markdown: capacity search


def _search_ending(result: dict[str, Any]) -> list[str]:
    """What the way the search ended means for its figure (nothing when it converged)."""
    steps = len(result.get("steps") or [])
    ended, bound = result.get("ended"), result.get("bound")
    notes = []
    if ended == "interrupted":
        notes.append(f"The search was interrupted after {steps} step(s): its steps so far.")
    elif ended == "max_steps":
        notes.append(f"The search stopped at its step limit (`--max-steps {steps}`).")
    if bound == "lower":
        notes.append(
            "No step above it failed, so this is a lower bound: raise `--max-steps`, or start"
            " higher with `--rate`."
        )
    elif isinstance(bound, str) and bound.startswith("gap"):
        notes.append(
            f"The lowest failing rate is {bound.split()[1]}x above it (the search narrows to"
            " 1.1x when it has the steps)."
        )
    return [" ".join(notes), ""] if notes else []


def _find_max_markdown(result: dict[str, Any], images: list[str] | None) -> str:
    name = _get(result, "scenario", "name") or "unnamed scenario"
    lines = [f"# Capacity search: {name} ({_date(result.get('started_at'))})", ""]
    best = result.get("max_sustainable_rate")
    bound = result.get("bound")
    if _is_number(best):
        at_least = "at least " if bound == "lower" else ""
        conclusion = f"**Maximum sustainable rate: {at_least}{_rate(best)}**"
        if result.get("max_sustainable_step"):
            conclusion += f" (step {result['max_sustainable_step']}"
            achieved = result.get("max_sustainable_achieved_rate")
            conclusion += f"; achieved input {_rate(achieved)})." if _is_number(achieved) else ")."
        else:
            conclusion += "."
        if result.get("max_sustainable_means"):
            conclusion += f" It is {result['max_sustainable_means']}."
    else:
        conclusion = "**No step was sustainable: maximum sustainable rate n/a.**"
    lines += [conclusion, ""]
    lines += _search_ending(result)
    if result.get("rule"):
        lines += [f"A step is sustainable (held) when: {result['rule']}", ""]
    lines += ["## Steps", "", *_steps_table(result.get("steps")), ""]
    lines += _step_errors(result.get("steps"))
    lines += ["## Charts", "", *_image_links(images, _find_max_charts(result)), ""]
    lines += ["## Latency definitions", "", DEADLINE_TEXT, "", INGEST_TEXT, ""]
    lines += ["## Settings", "", *_key_values(result.get("settings")), ""]
    lines += ["## Scenario", "", *_key_values(result.get("scenario")), ""]
    return "\n".join(lines)


def _steps_table(steps: Any) -> list[str]:
    if not steps:
        return [NA]
    rows = []
    for i, step in enumerate(steps, start=1):
        report_dir = step.get("report_dir")
        rows.append(
            [
                f"[{i}]({report_dir}/report.md)" if report_dir else str(i),
                _count(step.get("target_rate")),
                _count(step.get("achieved_rate")),
                _count(step.get("processed_rate")),
                _count(step.get("lag_max")),
                _count(step.get("lag_final")),
                _yes_no(step.get("lag_bounded")),
                _yes_no(step.get("kept_up")),
                _yes_no(step.get("held")),
                _ms(_get(step, "latency_ms", "deadline", "p50")),
                _ms(_get(step, "latency_ms", "deadline", "p99")),
                _ms(_get(step, "latency_ms", "ingest", "p99")),
            ]
        )
    header = [
        "Step",
        "Peak target (events/s)",
        "Achieved input (events/s)",
        "Processed (events/s)",
        "Lag max",
        "Lag final",
        "Lag bounded",
        "Producers kept up",
        "Held",
        "Deadline p50 (ms)",
        "Deadline p99 (ms)",
        "Ingest p99 (ms)",
    ]
    return _table(header, rows)


def _step_errors(steps: Any) -> list[str]:
    """A line per step whose run failed, with its reason."""
    failed = [(i, s["error"]) for i, s in enumerate(steps or [], start=1) if s.get("error")]
    if not failed:
        return []
    return [*(f"Step {i} failed (not held): {error}" for i, error in failed), ""]


def _find_max_charts(result: dict[str, Any]) -> list[str]:
    return ["find_max.png"] if result.get("steps") else []


# ---------------------------------------------------------------------------------------------
# Charts: helpers


def _series(values: Any) -> np.ndarray:
    """A float array of a list that may hold ``None`` (as NaN); empty for ``None``."""
    if values is None:
        return np.empty(0)
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _has_series(data: dict[str, Any], *names: str) -> bool:
    """Whether any of the named series has a finite value."""
    return any(np.isfinite(_series(data.get(n))).any() for n in names)


def _aligned(t: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both cut to the shorter length (a series may miss its last sample)."""
    n = min(len(t), len(values))
    return t[:n], values[:n]


def _partition_series(timeline: dict[str, Any]) -> dict[str, np.ndarray]:
    by_partition = timeline.get("lag_by_partition") or {}
    series = {str(k): _series(v) for k, v in by_partition.items()}
    return {k: v for k, v in series.items() if np.isfinite(v).any()}


def _figure(
    rows: int = 1, height: float = SIZE[1], ratios: Sequence[float] | None = None
) -> tuple[Figure, list[Axes]]:
    """A figure of ``rows`` stacked panels sharing their x axis."""
    fig = Figure(figsize=(SIZE[0], height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(rows, 1, height_ratios=ratios)
    first = fig.add_subplot(grid[0])
    return fig, [first, *(fig.add_subplot(grid[i], sharex=first) for i in range(1, rows))]


def _figure_row(cols: int) -> tuple[Figure, list[Axes]]:
    """A figure of ``cols`` panels side by side."""
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, cols, i + 1) for i in range(cols)]


def _style(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=TITLE_SIZE)
    ax.set_xlabel(xlabel, fontsize=LABEL_SIZE)
    ax.set_ylabel(ylabel, fontsize=LABEL_SIZE)
    ax.tick_params(labelsize=TICK_SIZE)
    ax.grid(True, alpha=0.3)


def _thousands(ax: Axes, axis: str = "y") -> None:
    """Thousands separators on an axis: ``20,000``."""
    formatter = FuncFormatter(lambda x, _pos: f"{x:,.0f}")
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(formatter)


Loc = Literal["best", "upper left", "upper right", "lower left", "lower right"]


def _legend(ax: Axes, loc: Loc = "best") -> None:
    handles, _labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=LEGEND_SIZE, loc=loc)


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI)


def _subtitle(result: dict[str, Any]) -> str:
    name = _get(result, "scenario", "name") or "unnamed scenario"
    return f"{name}, {_date(result.get('started_at'))}"


# ---------------------------------------------------------------------------------------------
# Charts: one run


def _rate_figure(result: dict[str, Any]) -> Figure | None:
    """Input and processed rates (top panel) and the intervention rate (bottom panel)."""
    timeline = result.get("timeline") or {}
    if not _has_series(timeline, "input_rate", "processed_rate", "interventions_rate"):
        return None
    t = _series(timeline.get("t_s"))
    fig, (top, bottom) = _figure(rows=2, height=6.0, ratios=(3, 1))
    for name, label, color in (
        ("input_rate", "input (produced)", "tab:blue"),
        ("processed_rate", "processed (consumed by the flow)", "tab:orange"),
    ):
        x, y = _aligned(t, _series(timeline.get(name)))
        if np.isfinite(y).any():
            top.plot(x, y, label=label, color=color, linewidth=1.6)
    target = _number(result.get("target_rate"))
    if target is not None:
        top.axhline(target, color="gray", linestyle="--", linewidth=1, label="target (peak)")
    top.set_ylim(bottom=0)
    _thousands(top)
    _style(top, f"Rates: {_subtitle(result)}", "", "events/s")
    top.tick_params(labelbottom=False)
    _legend(top, "lower right")
    x, y = _aligned(t, _series(timeline.get("interventions_rate")))
    if np.isfinite(y).any():
        bottom.plot(x, y, color="tab:green", linewidth=1.2, label="interventions")
    bottom.set_ylim(bottom=0)
    _thousands(bottom)
    _style(bottom, "", "time since start (s)", "interventions/s")
    _legend(bottom, "lower right")
    return fig


def _lag_figure(result: dict[str, Any]) -> Figure | None:
    """Total lag, and one thin line per partition when there are few partitions."""
    timeline = result.get("timeline") or {}
    partitions = _partition_series(timeline)
    if not _has_series(timeline, "lag_total") and not partitions:
        return None
    t = _series(timeline.get("t_s"))
    fig, (ax,) = _figure()
    if len(partitions) <= MAX_PARTITION_LINES:
        for name, values in partitions.items():
            x, y = _aligned(t, values)
            ax.plot(x, y, linewidth=0.7, alpha=0.7, label=name)
    x, y = _aligned(t, _lag_total(timeline, partitions))
    if np.isfinite(y).any():
        ax.plot(x, y, color="black", linewidth=2, label="total")
    ax.set_ylim(bottom=0)
    _thousands(ax)
    title = f"Consumer lag: {_subtitle(result)}"
    if len(partitions) > MAX_PARTITION_LINES:
        title += f" (total of {len(partitions)} partitions)"
    _style(ax, title, "time since start (s)", "messages behind")
    handles, _labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=LEGEND_SIZE - 1, loc="upper left", ncol=1 + len(handles) // 5)
    return fig


def _lag_total(timeline: dict[str, Any], partitions: dict[str, np.ndarray]) -> np.ndarray:
    """The total lag series, or the sum of the partitions' when the result has none."""
    total = _series(timeline.get("lag_total"))
    if np.isfinite(total).any() or not partitions:
        return total
    n = min(len(v) for v in partitions.values())
    stacked = np.vstack([v[:n] for v in partitions.values()])
    known = np.isfinite(stacked).any(axis=0)
    return np.where(known, np.nansum(stacked, axis=0), np.nan)


def _latency_figure(result: dict[str, Any]) -> Figure | None:
    """Each intervention's deadline and ingest latency against the time it reached the topic."""
    samples = result.get("latency_samples") or {}
    if not _has_series(samples, "deadline_ms", "ingest_ms"):
        return None
    t = _series(samples.get("t_s"))
    fig, (ax,) = _figure()
    _style(ax, f"Intervention latency: {_subtitle(result)}", "time since start (s)", "ms")
    every: list[np.ndarray] = []
    for name, label, color in (
        ("deadline_ms", "deadline latency", "tab:blue"),
        ("ingest_ms", "ingest latency", "tab:orange"),
    ):
        x, y = _aligned(t, _series(samples.get(name)))
        if np.isfinite(y).any():
            ax.scatter(x, y, s=4, alpha=0.4, color=color, label=label, linewidths=0)
            every.append(y)
    ax.axhline(TARGET_P99_MS, color="red", linestyle="--", linewidth=1.2, label="target p99 ≤ 1 s")
    values = np.concatenate(every)
    if _long_tail(values):
        ax.set_yscale("log")
        ax.set_ylabel("ms (log scale)", fontsize=LABEL_SIZE)
    else:
        ax.set_ylim(bottom=0, top=max(TARGET_P99_MS, float(np.nanmax(values))) * 1.08)
    _thousands(ax)
    legend = ax.legend(fontsize=LEGEND_SIZE, loc="upper left", markerscale=3)
    for handle in legend.legend_handles:
        if handle is not None:
            handle.set_alpha(1)
    return fig


def _long_tail(values: np.ndarray) -> bool:
    """Whether the values are all positive and the largest is over ``LONG_TAIL`` x the median."""
    values = values[np.isfinite(values)]
    if len(values) == 0 or values.min() <= 0:
        return False
    return float(values.max()) > LONG_TAIL * float(np.median(values))


def _latency_hist_figure(result: dict[str, Any]) -> Figure | None:
    """Histograms of both latencies, side by side, with p50 and p99 marked."""
    samples = result.get("latency_samples") or {}
    if not _has_series(samples, "deadline_ms", "ingest_ms"):
        return None
    fig, axes = _figure_row(2)
    kinds = (
        ("deadline", "deadline_ms", "Deadline latency", "tab:blue"),
        ("ingest", "ingest_ms", "Ingest latency", "tab:orange"),
    )
    for ax, (kind, name, title, color) in zip(axes, kinds, strict=True):
        values = _series(samples.get(name))
        values = values[np.isfinite(values)]
        _style(ax, title, "latency (ms)", "interventions")
        if len(values) == 0:
            ax.set_axis_off()
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
            continue
        summary = _get(result, "latency_ms", kind) or {}
        _histogram(ax, values, summary, color)
    fig.suptitle(f"Latency distributions: {_subtitle(result)}", fontsize=TITLE_SIZE)
    return fig


def _histogram(ax: Axes, values: np.ndarray, summary: dict[str, Any], color: str) -> None:
    log_x = _long_tail(values)
    bins: int | list[float] = HIST_BINS
    if log_x:
        bins = np.geomspace(values.min(), values.max(), HIST_BINS + 1).tolist()
    counts, _edges, _patches = ax.hist(values, bins=bins, color=color, alpha=0.75)
    counts = np.asarray(counts)
    if log_x:
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale)", fontsize=LABEL_SIZE)
    nonzero = counts[counts > 0]
    if len(nonzero) and nonzero.max() > WIDE_SPREAD * nonzero.min():
        ax.set_yscale("log")
        ax.set_ylabel("interventions (log scale)", fontsize=LABEL_SIZE)
    for key, q, style in (("p50", 50, "-"), ("p99", 99, "--")):
        mark = _number(summary.get(key))
        if mark is None:
            mark = float(np.percentile(values, q))
        ax.axvline(
            mark, color="black", linestyle=style, linewidth=1.2, label=f"{key} {mark:,.0f} ms"
        )
    ax.axvline(TARGET_P99_MS, color="red", linestyle=":", linewidth=1.2, label="target p99 ≤ 1 s")
    _thousands(ax, "x")
    ax.legend(fontsize=LEGEND_SIZE, loc="upper right")


# ---------------------------------------------------------------------------------------------
# Charts: capacity search


def _find_max_figure(result: dict[str, Any]) -> Figure | None:
    """Rates per step (top) and p99 latencies per step (bottom), against the target rate."""
    steps = result.get("steps") or []
    if not steps:
        return None
    fig, (top, bottom) = _figure(rows=2, height=8.0)
    x = np.arange(1, len(steps) + 1)
    labels = [_count(s.get("target_rate")) for s in steps]
    marks = _step_marks(steps)
    _step_rates(top, x, steps, marks)
    _style(top, f"Capacity search: {_subtitle(result)}", "", "events/s")
    best = _number(result.get("max_sustainable_rate"))
    if best is not None:
        top.axhline(
            best,
            color="green",
            linewidth=1,
            alpha=0.6,
            label=f"max sustainable (peak target) {best:,.0f}",
        )
    _thousands(top)
    top.set_ylim(bottom=0)
    _legend(top, "upper left")
    _style(bottom, "p99 latency per step", "step peak target rate (events/s)", "ms")
    _step_latencies(bottom, x, steps, marks)
    _legend(bottom, "upper left")
    for ax in (top, bottom):
        ax.set_xticks(x, labels)
        ax.set_xlim(0.5, len(steps) + 0.5)
    return fig


def _step_values(steps: list[dict[str, Any]], *keys: str) -> np.ndarray:
    return _series([_get(s, *keys) for s in steps])


# how a step is marked: held; lag bounded but the producers fell short; lag not bounded
MARKS = {
    "held": ("o", 40, None, "held"),
    "short": ("^", 60, "darkorange", "lag bounded, producers fell short"),
    "unbounded": ("X", 70, "red", "lag NOT bounded"),
}


def _step_marks(steps: list[dict[str, Any]]) -> list[str | None]:
    """Each step's mark (a key of ``MARKS``; None for a step whose run failed)."""
    marks: list[str | None] = []
    for step in steps:
        if step.get("held"):
            marks.append("held")
        elif step.get("lag_bounded") is False:
            marks.append("unbounded")
        elif step.get("lag_bounded"):
            marks.append("short")
        else:
            marks.append(None)
    return marks


def _scatter_marks(
    ax: Axes, x: np.ndarray, y: np.ndarray, marks: list[str | None], color: str
) -> None:
    for key, (marker, size, mark_color, _label) in MARKS.items():
        chosen = np.array([m == key for m in marks], dtype=bool)
        ax.scatter(x[chosen], y[chosen], color=mark_color or color, marker=marker, s=size, zorder=3)


def _step_rates(
    ax: Axes, x: np.ndarray, steps: list[dict[str, Any]], marks: list[str | None]
) -> None:
    target = _step_values(steps, "target_rate")
    ax.plot(x, target, color="gray", linestyle="--", linewidth=1.2, label="peak target")
    for key, label, color in (
        ("achieved_rate", "achieved input", "tab:blue"),
        ("processed_rate", "processed", "tab:orange"),
    ):
        y = _step_values(steps, key)
        ax.plot(x, y, color=color, linewidth=1.2, label=label)
        _scatter_marks(ax, x, y, marks, color)
    _mark_legend(ax, marks)


def _mark_legend(ax: Axes, marks: list[str | None]) -> None:
    """Legend entries for the step markers in use."""
    for key, (marker, size, color, label) in MARKS.items():
        if key in marks:
            ax.scatter([], [], color=color or "dimgray", marker=marker, s=size, label=label)


def _step_latencies(
    ax: Axes, x: np.ndarray, steps: list[dict[str, Any]], marks: list[str | None]
) -> None:
    for keys, label, color in (
        (("latency_ms", "deadline", "p99"), "deadline p99", "tab:blue"),
        (("latency_ms", "ingest", "p99"), "ingest p99", "tab:orange"),
    ):
        y = _step_values(steps, *keys)
        if not np.isfinite(y).any():
            continue
        ax.plot(x, y, color=color, linewidth=1.2, label=label)
        _scatter_marks(ax, x, y, marks, color)
    ax.axhline(TARGET_P99_MS, color="red", linestyle="--", linewidth=1.2, label="target p99 ≤ 1 s")
    every = np.concatenate([_step_values(steps, "latency_ms", k, "p99") for k in KINDS])
    if np.nanmax(every, initial=0.0) > 5 * TARGET_P99_MS:
        ax.set_yscale("log")
        ax.set_ylabel("ms (log scale)", fontsize=LABEL_SIZE)
    else:
        ax.set_ylim(bottom=0)
    _thousands(ax)
