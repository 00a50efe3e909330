"""A scenario's traffic for one producer: generated events, their send schedule, the truth.

Event time is generated from ``BASE_MS``; the live part starts at :func:`live_zero_ms`. A
producer sends an event when the wall clock, shifted so that live time 0 is its start
instant, reaches the event's send time: the running maximum of event times in the
partition's arrival order (so the generator's disorder delays events, never sends them early).
"""

import bisect
import math
from dataclasses import dataclass

import numpy as np

from ato.catalog import Catalog
from ato.config import GeneratorSettings
from ato.generator import GeneratedTraffic, StallBurst, TrafficShape, generate
from load_tests.scenario import Scenario
from operators.interventions import intervention_id

BASE_MS = 1_767_600_000_000
CALIBRATION_CLIENTS = 4_000
GRID = 2_000


def live_zero_ms(scenario: Scenario) -> int:
    """Generated event time of the live part's start."""
    return BASE_MS + int(scenario.backfill_s * 1000)


def live_end_ms(scenario: Scenario) -> int:
    """Generated event time of the live part's end (nothing later is sent)."""
    return live_zero_ms(scenario) + int(scenario.duration_s * 1000)


def _span_s(scenario: Scenario) -> int:
    return math.ceil(scenario.backfill_s + scenario.duration_s)


def start_fraction(scenario: Scenario) -> "StartSampler":
    """Journey starts whose density follows the scenario's rate profile.

    Backfill history (before live time 0) runs at the profile's first multiplier.
    """
    span = _span_s(scenario)
    times = np.linspace(0.0, span, GRID + 1)
    density = np.array([scenario.multiplier(t - scenario.backfill_s) for t in times])
    steps = (density[1:] + density[:-1]) / 2
    cdf = np.concatenate([[0.0], np.cumsum(steps)])
    cdf /= cdf[-1]
    return StartSampler(cdf.tolist(), (times / span).tolist())


@dataclass(frozen=True)
class StartSampler:
    """Inverse CDF on a grid: a uniform draw to a start fraction of the span."""

    cdf: list[float]
    fractions: list[float]

    def __call__(self, u: float) -> float:
        i = min(max(bisect.bisect_right(self.cdf, u), 1), len(self.cdf) - 1)
        c0, c1 = self.cdf[i - 1], self.cdf[i]
        f0, f1 = self.fractions[i - 1], self.fractions[i]
        return f0 if c1 <= c0 else f0 + (f1 - f0) * (u - c0) / (c1 - c0)


def generator_settings(scenario: Scenario, clients: int, seed: int) -> GeneratorSettings:
    """The generator settings of one producer's share."""
    return GeneratorSettings(
        clients=max(1, clients),
        span_s=_span_s(scenario),
        start_ms=BASE_MS,
        seed=seed,
        partitions=scenario.partitions,
        disorder_ms=scenario.disorder_ms,
    )


def shape(scenario: Scenario) -> TrafficShape:
    """The generator shape: starts following the profile, and the stall burst."""
    burst = None
    if scenario.burst is not None:
        b = scenario.burst
        zero = live_zero_ms(scenario)
        burst = StallBurst(
            b.journey,
            b.step,
            zero + int(b.at_s * 1000),
            zero + int((b.at_s + b.for_s) * 1000),
            b.share,
        )
    return TrafficShape(start_fraction(scenario), burst)


def target_events(scenario: Scenario) -> float:
    """Events the scenario asks for: rate x profile over backfill and live part."""
    span = _span_s(scenario)
    times = np.linspace(-scenario.backfill_s, span - scenario.backfill_s, GRID + 1)
    density = np.array([scenario.multiplier(t) for t in times])
    live = times <= scenario.duration_s
    return float(np.trapezoid(density[live], times[live]) * scenario.rate)


def clients_needed(scenario: Scenario, catalog: Catalog) -> int:
    """Clients whose events make the scenario's rate over its measured window (after the
    warm-up, when journeys are under way); calibrated on a small sample of the same shape."""
    sample = generate(
        catalog, generator_settings(scenario, CALIBRATION_CLIENTS, 99), shape=shape(scenario)
    )
    zero = live_zero_ms(scenario)
    begin, end = zero + int(scenario.warmup_s * 1000), live_end_ms(scenario)
    ts = np.concatenate([np.asarray(v, dtype=np.int64) for v in sample.arrival_ts.values()])
    in_window = int(((ts >= begin) & (ts <= end)).sum())
    times = np.linspace(scenario.warmup_s, scenario.duration_s, GRID + 1)
    asked = float(np.trapezoid([scenario.multiplier(t) for t in times], times)) * scenario.rate
    per_client = max(in_window, 1) / CALIBRATION_CLIENTS
    return max(1, math.ceil(asked / per_client))


@dataclass
class Schedule:
    """One producer's messages in send order."""

    values: list[bytes]
    partitions: np.ndarray  # int32: topic partition of each message
    send_at: np.ndarray  # int64: generated event time at which to send it (non-decreasing)
    ts: np.ndarray  # int64: the event time written in each message


def schedule(traffic: GeneratedTraffic, scenario: Scenario) -> Schedule:
    """The messages sent by the end of the live part, in send order."""
    end = live_end_ms(scenario)
    values: list[bytes] = []
    parts, sends, stamps = [], [], []
    for p, name in enumerate(traffic.partitions):
        ts = np.asarray(traffic.arrival_ts[name], dtype=np.int64)
        send_at = np.maximum.accumulate(ts) if len(ts) else ts
        keep = int(np.searchsorted(send_at, end, side="right"))
        values.extend(traffic.partitions[name][:keep])
        sends.append(send_at[:keep])
        stamps.append(ts[:keep])
        parts.append(np.full(keep, p, dtype=np.int32))
    all_sends = np.concatenate(sends)
    order = np.argsort(all_sends, kind="stable")
    return Schedule(
        [values[i] for i in order.tolist()],
        np.concatenate(parts)[order],
        all_sends[order],
        np.concatenate(stamps)[order],
    )


def shifted(value: bytes, ts: int, shift_ms: int) -> bytes:
    """``value`` with its ``"ts"`` field moved by ``shift_ms``."""
    return value.replace(b'"ts":%d' % ts, b'"ts":%d' % (ts + shift_ms), 1)


def truth(traffic: GeneratedTraffic, scenario: Scenario, shift_ms: int) -> list[tuple[str, int]]:
    """(intervention id, deadline) of the stalls due by the end of the live part, shifted."""
    end = live_end_ms(scenario)
    return [
        (
            intervention_id(s.client_id, s.journey, s.instance_start + shift_ms, s.step, s.attempt),
            s.deadline + shift_ms,
        )
        for s in traffic.stalls
        if s.deadline <= end
    ]


def population_clients(scenario: Scenario, index: int, producers: int) -> np.ndarray:
    """Numbers of this producer's share of the idle population (all shares cover it once)."""
    size, extra = divmod(scenario.population, producers)
    first = index * size + min(index, extra)
    return np.arange(first, first + size + (index < extra), dtype=np.int64)


def population_event(client: int, ts: int) -> bytes:
    """The ``card_delivered`` event that opens an idle client's journey; it stays open (the
    step times out after days)."""
    return (
        b'{"event_id":"P%09d-0","client_id":"P%09d","ts":%d,"channel":"app",'
        b'"type":"card_delivered","journey":"card_activation"}' % (client, client, ts)
    )
