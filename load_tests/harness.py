"""``ato loadtest``: drive a scenario's traffic through the journey flow and measure it.

One run: fresh topics; producer processes generate their share of the scenario and wait;
the flow (``ato run --processes N`` on the Kafka path, live clock) starts; the producers are
released and send paced by event time; every second the harness samples what was sent, the
flow's committed read positions (its lag), the interventions on the output topic, and the
processes' memory and CPU. After the live part and a drain the flow stops on its own; the
harness computes the figures (``report.json``) and writes the report.

``--find-max`` repeats runs at rising rates until a run does not hold (see
:func:`lag_bounded` and ``HOLDS_RULE``) and reports the highest peak rate that held.
"""

import argparse
import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import orjson
from confluent_kafka import KafkaException

from ato.catalog import load_catalog
from ato.config import KafkaSettings
from ato.devservers import Server, create_topics, start_broker
from ato.exceptions import AtoError
from ato.process import Terminated, sigterm_interrupts
from load_tests import report
from load_tests.monitor import QUIET, InterventionReader, ProcessWatch, children
from load_tests.producers import DONE, FAILED, READY, ProducerJob, start_producers
from load_tests.scenario import Scenario, load_scenario
from load_tests.traffic import clients_needed, target_events
from sources.kafka import PositionReader, cluster_metadata, part_name

OUT_PARTITIONS = 4
FLOW_READY_TIMEOUT_S = 300.0  # longest wait for the flow to start reading
READY_DELAY_S = 1.0  # between the flow reading and the producers' release
IDLE_TIMEOUT_MS = 2_000  # the flow's engine.idle_timeout_ms
DRAIN_S = 8.0  # the flow keeps running this long after the live part
FLOW_STOP_GRACE_S = 120.0  # a flow still running this long after its planned end is hung
# option ceilings: above them a run starts more processes than any machine here can run
MAX_RATE = 5_000_000.0
MAX_PROCESSES = 64
MAX_FACTOR = 10.0
MAX_STEPS = 50
MAX_DURATION_S = 86_400.0
LAG_BOUND_S = 2.0  # "bounded": lag below this many seconds of input (see lag_bounded)
LAG_GROWTH_SHARE = 0.4  # "bounded": the lag's trend over the window rises less than this x bound
KEEP_UP = 0.95  # producers must reach this share of the target rate for a valid step
PRODUCER_RATE = 150_000  # events/s one producer process paces comfortably
HOLDS_RULE = (
    f"a rate holds when the producers reach {KEEP_UP:.0%} of it over the measured window and"
    f" the lag stays bounded: at most {LAG_BOUND_S:g} s of input at the peak target rate"
    " throughout the second half of the measured window (warm-up excluded), and its"
    f" least-squares trend over the measured window rising by less than {LAG_GROWTH_SHARE:.0%}"
    " of that bound"
)
MAX_RATE_MEANS = "the peak target rate (base rate x the profile's peak) of the best step that held"


class LoadTestError(AtoError):
    """A load-test run could not be carried out."""


class BrokerError(LoadTestError):
    """The Kafka brokers could not be reached, or failed during a run."""


def lag_growth(lag: list[int], t_s: list[float], window: tuple[float, float]) -> float:
    """How much the total lag's least-squares line rises over the measured window (messages;
    0 with fewer than two samples)."""
    inside = [(t, n) for n, t in zip(lag, t_s, strict=True) if window[0] <= t <= window[1]]
    if len(inside) < 2 or inside[0][0] == inside[-1][0]:
        return 0.0
    times, values = zip(*inside, strict=True)
    slope = float(np.polyfit(times, values, 1)[0])
    return slope * (window[1] - window[0])


def lag_bounded(
    lag: list[int], t_s: list[float], window: tuple[float, float], rate: float
) -> tuple[bool, str]:
    """Whether the flow kept up: over the second half of the measured window the total lag
    never exceeded ``LAG_BOUND_S`` seconds of input at ``rate``, and over the whole window its
    least-squares line rose by less than ``LAG_GROWTH_SHARE`` of that bound."""
    bound = max(LAG_BOUND_S * rate, 1_000)
    middle = (window[0] + window[1]) / 2
    tail = [n for n, t in zip(lag, t_s, strict=True) if middle <= t <= window[1]]
    rule = (
        f"lag <= {bound:,.0f} messages ({LAG_BOUND_S:g} s of input) throughout the second"
        f" half of the measured window ({middle:.0f}-{window[1]:.0f} s), and its"
        f" least-squares line over the window ({window[0]:.0f}-{window[1]:.0f} s) rising by"
        f" less than {LAG_GROWTH_SHARE * bound:,.0f} messages"
    )
    growing = lag_growth(lag, t_s, window) >= LAG_GROWTH_SHARE * bound
    return bool(tail) and max(tail) <= bound and not growing, rule


def _producers_for(rate: float, asked: int | None) -> int:
    return asked if asked is not None else max(1, math.ceil(rate / PRODUCER_RATE))


def check_brokers(brokers: str) -> None:
    """Fail in one line when the brokers do not answer (within ``REACH_TIMEOUT_S``)."""
    try:
        cluster_metadata(KafkaSettings(brokers=brokers))
    except KafkaException as exc:
        msg = f"cannot reach the Kafka brokers {brokers}: {exc.args[0].str()}"
        raise BrokerError(msg) from exc


def run_scenario(
    scenario: Scenario,
    *,
    brokers: str,
    run_dir: Path,
    processes: int = 1,
    producers: int | None = None,
    progress: TextIO | None = sys.stderr,
    broker_pid: int | None = None,
) -> dict[str, Any]:
    """One load-test run; its figures (also written, with the report, to ``run_dir``).

    Kafka failing (unreachable, or gone during the run) raises :class:`BrokerError`; the
    flow and the producers are stopped whatever happens."""
    run_dir.mkdir(parents=True, exist_ok=True)
    check_brokers(brokers)
    try:
        return _run(scenario, brokers, run_dir, processes, producers, progress, broker_pid)
    except (KafkaException, TimeoutError) as exc:
        why = exc.args[0].str() if isinstance(exc, KafkaException) else "timed out"
        msg = f"Kafka on {brokers} failed during the run ({why}); no report (see {run_dir})"
        raise BrokerError(msg) from exc


def _run(
    scenario: Scenario,
    brokers: str,
    run_dir: Path,
    processes: int,
    producers: int | None,
    progress: TextIO | None,
    broker_pid: int | None,
) -> dict[str, Any]:
    say = _printer(progress)
    n_producers = _producers_for(scenario.peak_rate(), producers)
    if n_producers > MAX_PROCESSES:
        msg = (
            f"{scenario.name}: a peak of {scenario.peak_rate():,.0f} events/s needs"
            f" {n_producers} producer processes, more than {MAX_PROCESSES}: lower the rate"
        )
        raise LoadTestError(msg)
    catalog = load_catalog(scenario.catalog_path())
    clients = clients_needed(scenario, catalog)
    stem = f"lt.{run_dir.name}.{int(time.time())}"
    topic, out_topic, dlq = f"{stem}.in", f"{stem}.out", f"{stem}.dlq"
    create_topics(brokers, {topic: scenario.partitions, out_topic: OUT_PARTITIONS, dlq: 1})
    say(
        f"{scenario.name}: {target_events(scenario):,.0f} events from {clients:,} clients"
        f" (+{scenario.population:,} idle) at up to {scenario.peak_rate():,.0f}/s;"
        f" generating in {n_producers} producer process(es)"
    )
    jobs = [
        ProducerJob(i, n_producers, scenario, clients // n_producers, brokers, topic, run_dir)
        for i in range(n_producers)
    ]
    handles = start_producers(jobs)
    flow: subprocess.Popen[bytes] | None = None
    parts = [part_name(topic, p) for p in range(scenario.partitions)]
    positions: PositionReader | None = None
    reader: InterventionReader | None = None
    try:
        _wait_ready(handles, run_dir, say)
        settings = KafkaSettings(brokers=brokers, input_topics=(topic,), group_id=f"{stem}.flow")
        flow_seconds = READY_DELAY_S + scenario.lead_s + scenario.duration_s + DRAIN_S
        flow = _start_flow(scenario, settings, out_topic, dlq, processes, flow_seconds, run_dir)
        positions = PositionReader(settings, logger=QUIET)
        _wait_reading(flow, positions, parts, say, run_dir / "flow.err")
        release_ms = int((time.time() + READY_DELAY_S) * 1000)
        handles.release(release_ms)
        reader = InterventionReader(brokers, out_topic, OUT_PARTITIONS)
        reader.start()
        watch = ProcessWatch()
        for i, process in enumerate(handles.processes):
            watch.watch(f"producer-{i}", process.pid)
        if broker_pid is not None:
            watch.watch("broker", broker_pid)
        timeline = _sample(
            positions, parts, handles, flow, watch, reader, release_ms / 1000, say, run_dir,
            flow_seconds,
        )  # fmt: skip
        reader.drain()
        summary = _flow_summary(flow, run_dir)
        for process in handles.processes:
            process.join(120)
        if any(s == FAILED for s in handles.states()):
            raise LoadTestError(_producer_errors(run_dir))
        _check_producers_done(handles, run_dir)
    finally:
        if flow is not None:
            stop_group(flow)
        for process in handles.processes:
            if process.is_alive():
                process.kill()
        if reader is not None and reader.is_alive():
            reader.stop()
        if positions is not None:
            positions.close()
    outputs = [
        orjson.loads((run_dir / f"producer-{i}.json").read_bytes()) for i in range(n_producers)
    ]
    result = _figures(scenario, outputs, timeline, reader, watch, summary, release_ms)
    result["settings"] = {
        "processes": processes,
        "producers": n_producers,
        "partitions": scenario.partitions,
        "brokers": brokers,
        "allowed_lateness_ms": scenario.allowed_lateness_ms,
        "clients": clients,
        "catalog": str(scenario.catalog_path()),
        "cpu_count": os.cpu_count(),
    }
    result["dead_letters"] = _topic_size(brokers, dlq)
    report.write_report(result, run_dir)
    say(
        f"{scenario.name}: input {result['input']['achieved_rate']:,.0f}/s, processed"
        f" {result['processing']['rate']:,.0f}/s, lag bounded {result['lag']['bounded']},"
        f" p99 deadline latency {result['latency_ms']['deadline']['p99']} ms -> {run_dir}"
    )
    return result


def _printer(progress: TextIO | None) -> Any:
    def say(line: str) -> None:
        if progress is not None:
            print(f"[loadtest] {line}", file=progress, flush=True)

    return say


def _wait_ready(handles: Any, run_dir: Path, say: Any) -> None:
    started = time.monotonic()
    while True:
        states = handles.states()
        if any(s == FAILED for s in states):
            raise LoadTestError(_producer_errors(run_dir))
        if not all(
            p.is_alive() or s >= READY for p, s in zip(handles.processes, states, strict=True)
        ):
            msg = "a producer process died while generating"
            raise LoadTestError(msg)
        if all(s >= READY for s in states):
            say(f"traffic generated in {time.monotonic() - started:.0f} s")
            return
        time.sleep(0.2)


def _check_producers_done(handles: Any, run_dir: Path) -> None:
    """Fail when a producer process ended without finishing its traffic (killed, say)."""
    for i, (process, state) in enumerate(zip(handles.processes, handles.states(), strict=True)):
        if state != DONE and not process.is_alive():
            msg = (
                f"producer-{i} ended (exit code {process.exitcode}) before it sent all its"
                f" traffic; no report (see {run_dir})"
            )
            raise LoadTestError(msg)


def _producer_errors(run_dir: Path) -> str:
    errors = [p.read_text() for p in sorted(run_dir.glob("producer-*.error"))]
    return "producer failed: " + "; ".join(errors or ["(no error file)"])


def _wait_reading(
    flow: "subprocess.Popen[bytes]",
    positions: PositionReader,
    parts: list[str],
    say: Any,
    flow_err: Path,
) -> None:
    """Wait until the flow has committed a read position on every input partition (errors
    point at the flow's error output, ``flow_err``)."""
    started = time.monotonic()
    while True:
        if flow.poll() is not None:
            msg = f"the flow exited with code {flow.returncode} while starting (see {flow_err})"
            raise LoadTestError(msg)
        if all(done is not None for done, _end in positions.read(parts).values()):
            say(f"flow reading after {time.monotonic() - started:.0f} s")
            return
        if time.monotonic() - started > FLOW_READY_TIMEOUT_S:
            msg = f"the flow was not reading after {FLOW_READY_TIMEOUT_S:g} s (see {flow_err})"
            raise LoadTestError(msg)
        time.sleep(0.5)


def _start_flow(
    scenario: Scenario,
    kafka: KafkaSettings,
    out_topic: str,
    dlq: str,
    processes: int,
    seconds: float,
    run_dir: Path,
) -> "subprocess.Popen[bytes]":
    """``ato run`` on the Kafka path in live mode, reading for ``seconds``."""
    config = run_dir / "flow.toml"
    config.write_text(
        f'out_dir = "{run_dir / "flow"}"\n'
        f'catalog = "{scenario.catalog_path()}"\n'
        "[engine]\n"
        f'clock = "{scenario.clock}"\n'
        f"allowed_lateness_ms = {scenario.allowed_lateness_ms}\n"
        f"idle_timeout_ms = {IDLE_TIMEOUT_MS}\n"
        "[kafka]\n"
        f'brokers = "{kafka.brokers}"\n'
        f'input_topics = ["{kafka.input_topics[0]}"]\n'
        f'interventions_topic = "{out_topic}"\n'
        f'dead_letter_topic = "{dlq}"\n'
        f'group_id = "{kafka.group_id}"\n'
        "commit_interval_ms = 500\n"
        "[clickhouse]\n"
        "enabled = false\n"
    )
    argv = [sys.executable, "-m", "ato.cli", "run", "--config", str(config)]
    argv += ["--processes", str(processes), "--duration-s", f"{seconds:.1f}"]
    env = flow_env(os.environ)
    with (run_dir / "flow.out").open("wb") as out, (run_dir / "flow.err").open("wb") as err:
        # its own process group: stop_group reaches the cluster members of --processes N
        return subprocess.Popen(  # noqa: S603 - our own command
            argv, stdout=out, stderr=err, env=env, start_new_session=True
        )


def flow_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The flow's environment: ``environ`` without the ``ATO_*`` settings, which would
    override ``flow.toml`` (an ``ATO_REDIS_URL`` exported for ``ato profiles`` turned the
    contact policy on, an ``ATO_KAFKA_INPUT_TOPICS`` read another topic)."""
    return {name: value for name, value in environ.items() if not name.startswith("ATO_")}


def stop_group(process: "subprocess.Popen[bytes]") -> None:
    """Kill ``process`` and what is left of its process group, and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _sample(
    positions: PositionReader,
    parts: list[str],
    handles: Any,
    flow: "subprocess.Popen[bytes]",
    watch: ProcessWatch,
    reader: InterventionReader,
    release_s: float,
    say: Any,
    run_dir: Path,
    flow_seconds: float,
) -> dict[str, Any]:
    """Sample once a second until the flow exits; the timeline. A producer that dies before
    it finished, or a flow still running ``FLOW_STOP_GRACE_S`` after its planned end (hung),
    fails the run."""
    flow_err = run_dir / "flow.err"
    t_s: list[float] = []
    sent: list[int] = []
    processed: list[int] = []
    lag: list[int] = []
    lag_by_part: dict[str, list[int]] = {p: [] for p in parts}
    watch.watch("flow", flow.pid)
    next_print = 0.0
    while flow.poll() is None:
        time.sleep(max(0.0, 1.0 - (time.time() - release_s) % 1.0))
        now = time.time() - release_s
        for i, child in enumerate(children(flow.pid)):
            watch.watch(f"flow-{i}", child)
        watch.sample()
        if now > flow_seconds + FLOW_STOP_GRACE_S:
            msg = (
                f"the flow was still running {now - flow_seconds:.0f} s after its planned end"
                f" (hung?); stopped, no report (see {flow_err})"
            )
            raise LoadTestError(msg)
        _check_producers_done(handles, run_dir)
        if now < 0:
            continue
        by_part = handles.sent_by_partition()
        read = positions.read(parts)
        done = [read[p][0] or 0 for p in parts]
        t_s.append(round(now, 2))
        sent.append(sum(by_part))
        processed.append(sum(done))
        for p, n_sent, n_done in zip(parts, by_part, done, strict=True):
            lag_by_part[p].append(max(0, n_sent - n_done))
        lag.append(sum(lag_by_part[p][-1] for p in parts))
        if now >= next_print:
            next_print = now + 5
            say(
                f"t={now:4.0f}s sent {sent[-1]:,} processed {processed[-1]:,} lag {lag[-1]:,}"
                f" interventions {len(reader.ids):,}"
            )
    if flow.returncode != 0:
        msg = f"the flow exited with code {flow.returncode} (see {flow_err})"
        raise LoadTestError(msg)
    if not all(s == DONE for s in handles.states()):
        for process in handles.processes:
            process.join(60)
    return {"t_s": t_s, "sent": sent, "processed": processed, "lag": lag, "lag_by": lag_by_part}


def _flow_summary(flow: "subprocess.Popen[bytes]", run_dir: Path) -> dict[str, Any]:
    lines = (run_dir / "flow.out").read_bytes().splitlines()
    try:
        summary: dict[str, Any] = orjson.loads(lines[-1])
    except (IndexError, orjson.JSONDecodeError) as exc:
        msg = f"the flow printed no summary (see {run_dir / 'flow.err'})"
        raise LoadTestError(msg) from exc
    return summary


def _topic_size(brokers: str, topic: str) -> int:
    """Messages in a one-partition topic (what the broker reports as its end)."""
    from confluent_kafka import Consumer, TopicPartition  # noqa: PLC0415

    consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"{topic}.size"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(high - low)
    finally:
        consumer.close()


def _rates(values: list[int], t_s: list[float]) -> list[float]:
    out = [0.0]
    for i in range(1, len(values)):
        dt = t_s[i] - t_s[i - 1]
        out.append(round((values[i] - values[i - 1]) / dt, 1) if dt > 0 else 0.0)
    return out


def _window_rate(values: list[int], t_s: list[float], window: tuple[float, float]) -> float:
    inside = [i for i, t in enumerate(t_s) if window[0] <= t <= window[1]]
    if len(inside) < 2:
        return 0.0
    first, last = inside[0], inside[-1]
    return (values[last] - values[first]) / (t_s[last] - t_s[first])


def _window_p95(values: list[int], t_s: list[float], window: tuple[float, float]) -> float:
    """The 95th percentile of ``values`` sampled inside the measured ``window`` (the warm-up
    and the drain after the input would pull it towards 0); 0 without samples there."""
    inside = [v for v, t in zip(values, t_s, strict=True) if window[0] <= t <= window[1]]
    return float(np.percentile(inside, 95)) if inside else 0.0


def _percentiles(values: np.ndarray) -> dict[str, float | int | None]:
    if not len(values):
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "count": len(values),
        "p50": round(float(p50), 1),
        "p95": round(float(p95), 1),
        "p99": round(float(p99), 1),
        "max": round(float(values.max()), 1),
    }


def _ingest_wall(outputs: list[dict[str, Any]], event_ms: np.ndarray) -> np.ndarray:
    """The wall time (ms) by which every producer had sent up to each event time; NaN where
    one never did."""
    walls = np.full(len(event_ms), -np.inf)
    for out in outputs:
        samples = np.asarray(out["samples"], dtype=np.float64).reshape(-1, 2)
        idx = np.searchsorted(samples[:, 1], event_ms, side="left")
        wall = np.full(len(event_ms), np.nan)
        ok = idx < len(samples)
        wall[ok] = samples[idx[ok], 0]
        walls = np.maximum(walls, wall)  # NaN stays NaN
    return walls


def _figures(
    scenario: Scenario,
    outputs: list[dict[str, Any]],
    timeline: dict[str, Any],
    reader: InterventionReader,
    watch: ProcessWatch,
    summary: dict[str, Any],
    release_ms: int,
) -> dict[str, Any]:
    """The run's figures from what was sampled and read."""
    t_s = timeline["t_s"]
    live0 = scenario.lead_s
    window = (live0 + scenario.warmup_s, live0 + scenario.duration_s)
    zero_wall = outputs[0]["live_zero_wall_ms"]
    end_wall = zero_wall + int(scenario.duration_s * 1000)
    topic_ms = np.asarray(reader.topic_ms, dtype=np.float64)
    deadlines = np.asarray(reader.deadlines, dtype=np.float64)
    # stalls due at the very end of the input wait for the idle timeout instead of later events
    last_due = end_wall - IDLE_TIMEOUT_MS - scenario.allowed_lateness_ms
    measured = (deadlines >= zero_wall + scenario.warmup_s * 1000) & (deadlines <= last_due)
    due = deadlines[measured] + scenario.allowed_lateness_ms
    ingest = topic_ms[measured] - _ingest_wall(outputs, due)
    deadline_latency = topic_ms[measured] - deadlines[measured]
    # events up to disorder_ms before the end may arrive (be sent) after it, and are not
    # sent: a stall due then may have missed the event that resolves it, so stalls due
    # after this are scored on neither side
    scored_until = end_wall - scenario.disorder_ms
    truth = {i for out in outputs for i, deadline in out["truth"] if deadline <= scored_until}
    detected = {i for i, d in zip(reader.ids, reader.deadlines, strict=True) if d <= scored_until}
    hits = len(truth & detected)
    input_rate = _window_rate(timeline["sent"], t_s, window)
    target = scenario.peak_rate()
    bounded, rule = lag_bounded(timeline["lag"], t_s, window, target)
    return {
        "kind": "run",
        "scenario": scenario.describe(),
        "target_rate": target,
        "started_at": datetime.fromtimestamp(release_ms / 1000, UTC).isoformat(),
        "duration_s": t_s[-1] if t_s else 0.0,
        "window_s": list(window),
        "input": {
            "events": sum(out["sent"] for out in outputs),
            "population": scenario.population,
            "achieved_rate": round(input_rate, 1),
            "target_events": round(target_events(scenario)),
            "kept_up": input_rate >= KEEP_UP * scenario.rate * _mean_multiplier(scenario, window),
        },
        "processing": {
            "events": summary.get("events", 0),
            "rate": round(_window_rate(timeline["processed"], t_s, window), 1),
            "interventions": len(set(reader.ids)),
            "interventions_on_topic": len(reader.ids),
        },
        "lag": {
            "bounded": bounded,
            "rule": rule,
            "max": max(timeline["lag"], default=0),
            "growth": round(lag_growth(timeline["lag"], t_s, window), 1),
            "final": timeline["lag"][-1] if timeline["lag"] else 0,
            "p95": _window_p95(timeline["lag"], t_s, window),
        },
        "latency_ms": {
            "deadline": _percentiles(deadline_latency),
            "ingest": _percentiles(ingest[~np.isnan(ingest)]),
        },
        "detection": {
            "precision": round(hits / len(detected), 6) if detected else 1.0,
            "recall": round(hits / len(truth), 6) if truth else 1.0,
            "truth": len(truth),
            "detected": len(detected),
            "false_positives": len(detected - truth),
            "missed": len(truth - detected),
        },
        "late_events": summary.get("late_events", 0),
        "flow_summary": summary,
        "processes": watch.summary(),
        "timeline": {
            "t_s": t_s,
            "input_rate": _rates(timeline["sent"], t_s),
            "processed_rate": _rates(timeline["processed"], t_s),
            "interventions_rate": _per_second(topic_ms, release_ms, t_s),
            "lag_total": timeline["lag"],
            "lag_by_partition": timeline["lag_by"],
        },
        "latency_samples": {
            "t_s": np.round((topic_ms[measured] - release_ms) / 1000, 2).tolist(),
            "deadline_ms": deadline_latency.tolist(),
            "ingest_ms": [None if math.isnan(v) else v for v in ingest.tolist()],
        },
    }


def _mean_multiplier(scenario: Scenario, window: tuple[float, float]) -> float:
    times = np.linspace(window[0] - scenario.lead_s, window[1] - scenario.lead_s, 200)
    return float(np.mean([scenario.multiplier(t) for t in times]))


def _per_second(topic_ms: np.ndarray, release_ms: int, t_s: list[float]) -> list[float]:
    if not t_s:
        return []
    edges = [-math.inf, *t_s]
    counts, _ = np.histogram((topic_ms - release_ms) / 1000, bins=edges)
    widths = np.diff([t_s[0] - 1.0, *t_s])
    return np.round(counts / widths, 1).tolist()


def find_max(
    scenario: Scenario,
    *,
    brokers: str,
    run_dir: Path,
    processes: int,
    producers: int | None,
    factor: float,
    max_steps: int,
    progress: TextIO | None,
    broker_pid: int | None,
) -> dict[str, Any]:
    """Raise the rate by ``factor`` per step until a step does not hold, then narrow the gap
    between the best rate that held and the lowest that did not (see :func:`_next_rate`).

    A step whose run fails counts as not held, with its reason; Kafka failing ends the search.
    The report of the steps so far is written however the search ends."""
    say = _printer(progress)
    started_at = datetime.now(UTC).isoformat()
    steps: list[dict[str, Any]] = []
    rate, best, bad = scenario.rate, 0.0, math.inf
    ended = "interrupted"  # until the loop ends on its own
    try:
        for _ in range(max_steps):
            step_dir = run_dir / f"step-{len(steps) + 1:02d}-{rate:.0f}"
            step = scenario.with_rate(rate)
            try:
                result = run_scenario(
                    step,
                    brokers=brokers,
                    run_dir=step_dir,
                    processes=processes,
                    producers=producers,
                    progress=progress,
                    broker_pid=broker_pid,
                )
                steps.append(_step_row(result, step_dir, rate))
            except AtoError as exc:
                steps.append(_failed_step(step, step_dir, str(exc)))
                if isinstance(exc, BrokerError):
                    raise
            held = steps[-1]["held"]
            say(f"step {len(steps)}: {rate:,.0f}/s {'held' if held else 'did not hold'}")
            best, bad = (max(best, rate), bad) if held else (best, min(bad, rate))
            next_rate = _next_rate(rate, best, bad, factor)
            if next_rate is None:
                ended = "converged"
                break
            rate = next_rate
        else:
            ended = "max_steps"
    finally:
        out = _search_result(scenario, steps, started_at, processes, brokers, factor, ended)
        report.write_report(out, run_dir)
    return out


def _search_result(
    scenario: Scenario,
    steps: list[dict[str, Any]],
    started_at: str,
    processes: int,
    brokers: str,
    factor: float,
    ended: str = "converged",
) -> dict[str, Any]:
    """The capacity search's result: its steps, the best one that held, and how the search
    ended (``converged``, ``max_steps`` or ``interrupted``) with what the best rate then is:
    ``bound`` ``lower`` when no higher step failed, else ``within`` the 10 % gap or ``gap``
    (the ratio of the lowest failing rate to it, when the search stopped wider)."""
    held = [i for i, step in enumerate(steps) if step["held"]]
    best = max(held, key=lambda i: steps[i]["base_rate"]) if held else None
    failing = [s["base_rate"] for s in steps if not s["held"]]
    if best is None:
        bound = None
    else:
        above = [r for r in failing if r > steps[best]["base_rate"]]
        gap = min(above) / steps[best]["base_rate"] if above else None
        bound = "lower" if gap is None else "within" if gap <= 1.1 else f"gap {gap:.2f}"
    return {
        "ended": ended,
        "bound": bound,
        "kind": "find_max",
        "scenario": scenario.describe(),
        "settings": {"processes": processes, "brokers": brokers, "factor": factor},
        "started_at": started_at,
        "steps": steps,
        "max_sustainable_rate": None if best is None else steps[best]["target_rate"],
        "max_sustainable_achieved_rate": None if best is None else steps[best]["achieved_rate"],
        "max_sustainable_step": None if best is None else best + 1,
        "max_sustainable_means": MAX_RATE_MEANS,
        "rule": HOLDS_RULE,
    }


def _next_rate(rate: float, best: float, bad: float, factor: float) -> float | None:
    """The capacity search's next rate given the best rate that held (0: none yet) and the
    lowest that did not (inf: none yet); None when the gap is within 10 %."""
    if bad == math.inf:
        return rate * factor  # everything held so far: go up
    if best == 0.0:
        return rate / factor  # nothing held yet: go down
    if bad / best > 1.1:
        return (best + bad) / 2  # narrow the gap
    return None


def _step_row(result: dict[str, Any], step_dir: Path, base_rate: float) -> dict[str, Any]:
    lag_ok = bool(result["lag"]["bounded"])
    kept_up = bool(result["input"]["kept_up"])
    return {
        "base_rate": base_rate,
        "target_rate": result["target_rate"],
        "achieved_rate": result["input"]["achieved_rate"],
        "processed_rate": result["processing"]["rate"],
        "lag_max": result["lag"]["max"],
        "lag_final": result["lag"]["final"],
        "lag_bounded": lag_ok,
        "kept_up": kept_up,
        "held": lag_ok and kept_up,
        "error": None,
        "latency_ms": result["latency_ms"],
        "precision": result["detection"]["precision"],
        "recall": result["detection"]["recall"],
        "report_dir": step_dir.name,
    }


def _failed_step(scenario: Scenario, step_dir: Path, error: str) -> dict[str, Any]:
    """The row of a step whose run failed: not held, with the reason."""
    return {
        "base_rate": scenario.rate,
        "target_rate": scenario.peak_rate(),
        "achieved_rate": None,
        "processed_rate": None,
        "lag_max": None,
        "lag_final": None,
        "lag_bounded": None,
        "kept_up": None,
        "held": False,
        "error": error,
        "latency_ms": None,
        "precision": None,
        "recall": None,
        "report_dir": None,
    }


def _broker(args: argparse.Namespace, run_dir: Path) -> tuple[str, Server | None, int | None]:
    """The brokers to use: ``--brokers``, else the dev servers if up, else a fresh Tansu."""
    if args.brokers:
        return args.brokers, None, None
    from ato.dev import status  # noqa: PLC0415

    dev = status(Path(args.dev_dir)).get("tansu")
    if dev and dev.get("alive"):
        return str(dev["address"]), None, int(dev["pid"])
    server = start_broker(None, run_dir)
    assert server.process is not None
    return server.address, server, server.process.pid


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``ato loadtest``."""
    parser = argparse.ArgumentParser(
        prog="ato loadtest", description="drive a scenario through the journey flow; report"
    )
    parser.add_argument(
        "scenario", nargs="?", default="steady", help="name or .toml path (default: steady)"
    )
    parser.add_argument("--rate", type=float, help="base events/s (default: the scenario's)")
    parser.add_argument("--duration", type=float, help="live seconds (default: the scenario's)")
    parser.add_argument("--processes", type=int, default=1, help="flow processes (default 1)")
    parser.add_argument("--producers", type=int, help="producer processes (default: by rate)")
    parser.add_argument("--brokers", help="Kafka brokers (default: dev servers, else a Tansu)")
    parser.add_argument(
        "--dev-dir", default="runs/dev", help="where `ato dev up` keeps state (default: runs/dev)"
    )
    parser.add_argument(
        "--out",
        default="runs/loadtest",
        help="reports go to OUT/<run id>/ (default: runs/loadtest)",
    )
    parser.add_argument("--find-max", action="store_true", help="search the highest rate")
    parser.add_argument(
        "--factor", type=float, default=1.5, help="find-max rate step factor (default: 1.5)"
    )
    parser.add_argument(
        "--max-steps", type=int, default=6, help="find-max steps at most (default: 6)"
    )
    return parser


def _check_options(args: argparse.Namespace) -> None:
    """Every option's range, before anything starts."""
    for name, most in (("rate", MAX_RATE), ("duration", MAX_DURATION_S)):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and 0 < value <= most):
            msg = f"--{name}: must be > 0 and at most {most:,.0f}, got {value}"
            raise LoadTestError(msg)
    for name, most in (
        ("processes", MAX_PROCESSES), ("producers", MAX_PROCESSES), ("max_steps", MAX_STEPS),
    ):  # fmt: skip
        value = getattr(args, name)
        if value is not None and not 1 <= value <= most:
            msg = f"--{name.replace('_', '-')}: must be from 1 to {most}, got {value}"
            raise LoadTestError(msg)
    if not (math.isfinite(args.factor) and 1 < args.factor <= MAX_FACTOR):
        msg = (
            f"--factor: must be > 1 and at most {MAX_FACTOR:g} (the capacity search's rate"
            f" step), got {args.factor}"
        )
        raise LoadTestError(msg)
    if args.brokers is not None and not args.brokers.strip():
        msg = "--brokers: empty (leave it out for the dev servers or a Tansu of the run's own)"
        raise LoadTestError(msg)


def main(argv: list[str] | None = None) -> int:
    """Run ``ato loadtest``; print the result's headline figures as one JSON line.

    Ctrl-C (exit 130) and SIGTERM (exit 143) stop the flow, the producers and a broker the
    harness started."""
    args = build_parser().parse_args(argv)
    _check_options(args)
    try:
        with sigterm_interrupts():
            return _main(args)
    except Terminated:
        print("ato loadtest: terminated; flow, producers and own broker stopped", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("ato loadtest: interrupted; flow, producers and own broker stopped", file=sys.stderr)
        if args.find_max and getattr(args, "run_dir", None) is not None:
            print(f"ato loadtest: the search's report so far: {args.run_dir / 'report.md'}")
        return 130


def _main(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    if args.rate:
        scenario = scenario.with_rate(args.rate)
    if args.duration:
        scenario = scenario.with_duration(args.duration)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    run_dir = Path(args.out) / f"{stamp}-{scenario.name}{'-find-max' if args.find_max else ''}"
    args.run_dir = run_dir
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"--out {args.out}: cannot create the run directory {run_dir}: {exc.strerror}"
        raise LoadTestError(msg) from exc
    brokers, server, broker_pid = _broker(args, run_dir)
    try:
        if args.find_max:
            try:
                result = find_max(
                    scenario,
                    brokers=brokers,
                    run_dir=run_dir,
                    processes=args.processes,
                    producers=args.producers,
                    factor=args.factor,
                    max_steps=args.max_steps,
                    progress=sys.stderr,
                    broker_pid=broker_pid,
                )
            except LoadTestError as exc:
                msg = f"{exc}; the search's report so far: {run_dir / 'report.md'}"
                raise LoadTestError(msg) from exc
            headline = {
                "max_sustainable_rate": result["max_sustainable_rate"],
                "max_sustainable_achieved_rate": result["max_sustainable_achieved_rate"],
            }
        else:
            result = run_scenario(
                scenario,
                brokers=brokers,
                run_dir=run_dir,
                processes=args.processes,
                producers=args.producers,
                broker_pid=broker_pid,
            )
            headline = {
                "input_rate": result["input"]["achieved_rate"],
                "processed_rate": result["processing"]["rate"],
                "lag_bounded": result["lag"]["bounded"],
                "deadline_p99_ms": result["latency_ms"]["deadline"]["p99"],
                "precision": result["detection"]["precision"],
                "recall": result["detection"]["recall"],
            }
    finally:
        if server is not None:
            server.stop()
    print(orjson.dumps({**headline, "report": str(run_dir / "report.md")}).decode())
    return 0
