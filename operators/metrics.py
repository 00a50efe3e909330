"""Metric rows for ClickHouse from what the shard steps emit: columns, never a row per event.

:class:`MetricRows` turns a :class:`ShardOutput` into blocks for the tables of
``sinks/clickhouse_schema``: closed funnel minutes, one row per stall, one decision per stall
(every stall is ``sent`` until the contact policy decides otherwise), and stall outcomes.
Most are :class:`DeferredBlock` s: the ClickHouse sink, bound to the flow's ``MetricRows``,
makes their columns (:meth:`MetricRows.block`) when it inserts them.
:class:`HealthWindow` sums the flow's progress items into one ``flow_health`` row per worker
per interval.
"""

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
from bytewax.operators import StatefulBatchLogic

from ato.catalog import CHANNELS, SEGMENTS, Catalog
from operators.batches import ShardOutput
from operators.funnel import MEASURES, MINUTE_MS, FunnelRows, unpack
from operators.interventions import InterventionBuilder
from operators.shard_levels import ShardLevels
from operators.watermark import MIN_WATERMARK
from policy.decision_columns import (
    CHANNEL_NAMES,
    DECISION_NAMES,
    REASON_NAMES,
    SEGMENT_NAMES,
    TIER_NAMES,
    DecisionColumns,
)
from sinks.clickhouse import Column, DeferredBlock, MetricBlock
from state.base import Records
from state.layout import (
    O_ATTEMPT,
    O_BACK,
    O_DEADLINE,
    O_ENTERED,
    O_ERRORS,
    O_EVENTS,
    O_JOURNEY,
    O_LAST_CHANNEL,
    O_LAST_TYPE,
    O_OUTCOME,
    O_PROGRESS,
    O_RESOLVE_CHANNEL,
    O_RESOLVED_AT,
    O_SEGMENT,
    O_START,
    O_STEP,
    O_SWITCHES,
    OF_CALLS,
    OF_SESSIONS,
    OUTCOME_COMPLETED,
    OUTCOME_NAMES,
    OUTCOME_PROGRESSED,
)

UNKNOWN_SEGMENT = "unknown"


class Names:
    """Names by integer code (a table of any shape) as Arrow dictionary columns.

    Indexing works like numpy's on the table (code -1 is the last entry of an axis) and gives
    a dictionary array: codes plus the distinct names, never a Python object per row.
    """

    def __init__(self, table: np.ndarray | list[str]) -> None:
        names = np.asarray(table, dtype=object)
        unique, inverse = np.unique(names.astype(str), return_inverse=True)
        self.codes = inverse.reshape(names.shape).astype(np.int32)
        self.dictionary = pa.array(unique.tolist(), pa.string())

    def __getitem__(self, index: Any) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(pa.array(self.codes[index]), self.dictionary)

    def repeat(self, n: int) -> pa.DictionaryArray:
        """The only name of a one-name table, ``n`` times."""
        return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), self.dictionary)


def fixed_strings(chars: np.ndarray) -> pa.Array:
    """Arrow strings of the rows of an ASCII uint8 ``[n, width]`` array (one copy)."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    data = np.ascontiguousarray(chars).ravel()
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


StallPart = tuple[Records, np.ndarray, int]  # stalls, their intervention ids, emitted at
OutcomePart = tuple[Records, np.ndarray | None]  # outcomes, their ids if known


class MetricRows:
    """Column blocks of one catalog's names; one instance per flow.

    As the flow's step (:meth:`__call__`) it gives :class:`DeferredBlock` s, which the
    ClickHouse sink (bound to this builder) turns into columns with :meth:`block` when it
    inserts them: one conversion per insert of many shard outputs, on the insert thread.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.source = f"ato.metrics/{catalog.codes_fingerprint}"
        self.builder = InterventionBuilder(catalog)
        names = self.builder
        self.journeys = Names([*names.journey_names.tolist(), ""])  # code -1: ""
        width = names.step_names.shape[1]
        steps = np.full((len(catalog.journeys) + 1, width + 1), "", dtype=object)
        steps[:-1, :-1] = names.step_names
        self.steps = Names(steps)  # [journey, step], index -1 is ""
        self.tiers = Names(names.tiers)
        self.type_names = Names(names.type_names)
        self.channels = Names([*CHANNELS, ""])
        self.segments = Names([*SEGMENTS, UNKNOWN_SEGMENT])
        self.outcomes = Names(list(OUTCOME_NAMES))
        self.sent = Names(["sent"])
        self.no_reason = Names([""])

    def __call__(self, out: ShardOutput) -> list[MetricBlock | DeferredBlock]:
        """Every block a shard output holds (the flow's flat_map step): stalls, decisions
        without a contact policy and outcomes deferred, the policy's decisions made now."""
        blocks: list[MetricBlock | DeferredBlock] = []
        stalls = out.stalls
        if len(stalls):
            ids = out.stall_ids if out.stall_ids is not None else self.builder.ids(stalls)
            part: StallPart = (stalls, ids, out.emitted_at_ms)
            blocks.append(DeferredBlock("stalls", "stalls", len(stalls), (part,), self.source))
            if out.decisions is None:
                blocks.append(
                    DeferredBlock("decisions", "decisions", len(stalls), (part,), self.source)
                )
        if out.decisions is not None and len(out.decisions):
            blocks.append(self.policy_decisions(out.decisions, out.emitted_at_ms))
        outcomes = out.outcomes
        if len(outcomes):
            done: OutcomePart = (outcomes, out.outcome_ids)
            blocks.append(
                DeferredBlock("outcomes", "outcomes", len(outcomes), (done,), self.source)
            )
        return blocks

    def block(self, kind: str, parts: list[Any]) -> MetricBlock:
        """The block of a :class:`DeferredBlock`'s parts (the sink calls it at insert)."""
        if kind == "funnel":  # each part holds every row of its minutes: summed apart
            return self.funnel(FunnelRows.concat([p.summed() for p in parts]))
        if kind == "outcomes":
            outcomes = Records.concat([p[0] for p in parts])
            known = [p[1] if p[1] is not None else self.builder.ids(p[0]) for p in parts]
            return self.outcome_rows(outcomes, np.concatenate(known))
        stalls = Records.concat([p[0] for p in parts])
        ids = np.concatenate([p[1] for p in parts])
        emitted = np.repeat(np.array([p[2] for p in parts], np.int64), [len(p[0]) for p in parts])
        if kind == "stalls":
            return self.stalls(stalls, emitted, self._common(stalls, ids))
        if kind == "decisions":
            return self.decisions(stalls, emitted, self._common(stalls, ids))
        msg = f"no metric block of kind {kind!r}"
        raise ValueError(msg)

    def funnel_later(self, rows: FunnelRows) -> DeferredBlock:
        """Closed funnel minutes (the funnel step's output, a key possibly in several rows)
        for the sink to sum and make into ``funnel_minute`` rows when it inserts them."""
        return DeferredBlock("funnel_minute", "funnel", len(rows), (rows,), self.source)

    def funnel(self, rows: FunnelRows) -> MetricBlock:
        """``funnel_minute`` rows of closed minutes (the funnel step's output)."""
        minute, journey, step, channel, segment = unpack(rows.keys)
        columns: dict[str, Column] = {
            "minute": minute * MINUTE_MS,
            "journey": self.journeys[journey],
            "step": self.steps[journey, step],
            "channel": self.channels[channel],
            "segment": self.segments[segment],
        }
        for m, name in enumerate(MEASURES):
            columns[name] = rows.counts[:, m]
        return MetricBlock("funnel_minute", columns)

    def _common(self, records: Records, ids: np.ndarray) -> dict[str, Column]:
        ints = records.ints
        j, attempt = ints[O_JOURNEY], ints[O_ATTEMPT]
        return {
            "intervention_id": fixed_strings(ids),
            "client_id": pa.array(records.client_id, pa.binary()).cast(pa.string()),
            "journey": self.journeys[j],
            "step": self.steps[j, ints[O_STEP]],
            "attempt": attempt,
            "segment": self.segments[ints[O_SEGMENT]],
            "tier": self.tiers[j, np.minimum(attempt, 3) - 1],
        }

    def _priority(self, records: Records) -> np.ndarray:
        return self.builder.priorities(records).astype(np.float64)

    def stalls(
        self,
        stalls: Records,
        emitted_at_ms: int | np.ndarray,
        common: dict[str, Column] | None = None,
        priority: np.ndarray | None = None,
    ) -> MetricBlock:
        """``stalls`` rows: one per stall with its breakpoint context and features
        (``emitted_at_ms``: one time for all, or one per stall)."""
        ints = stalls.ints
        deadline, start = ints[O_DEADLINE], ints[O_START]
        columns = dict(common or self._common(stalls, self.builder.ids(stalls)))
        columns.update(
            step_index=ints[O_STEP],
            priority=self._priority(stalls) if priority is None else priority,
            instance_start=start,
            deadline=deadline,
            last_progress=ints[O_PROGRESS],
            last_event_type=self.type_names[ints[O_LAST_TYPE]],
            last_channel=self.channels[ints[O_LAST_CHANNEL]],
            events=ints[O_EVENTS],
            errors=ints[O_ERRORS],
            back_steps=ints[O_BACK],
            channel_switches=ints[O_SWITCHES],
            time_on_step_ms=deadline - ints[O_ENTERED],
            elapsed_ms=deadline - start,
            recent_calls=stalls.floats[OF_CALLS],
            recent_sessions=stalls.floats[OF_SESSIONS],
            emitted_at=_per_row(emitted_at_ms, len(stalls)),
        )
        return MetricBlock("stalls", columns)

    def decisions(
        self,
        stalls: Records,
        emitted_at_ms: int | np.ndarray,
        common: dict[str, Column] | None = None,
        priority: np.ndarray | None = None,
    ) -> MetricBlock:
        """``decisions`` rows: without a contact policy every stall is sent
        (``emitted_at_ms``: one time for all, or one per stall)."""
        n = len(stalls)
        columns = dict(common or self._common(stalls, self.builder.ids(stalls)))
        columns.update(
            decision=self.sent.repeat(n),
            reason=self.no_reason.repeat(n),
            channel=self.no_reason.repeat(n),
            rm_id=pa.array([""] * n, pa.string()),
            priority=self._priority(stalls) if priority is None else priority,
            decided_at=stalls.ints[O_DEADLINE],
            emitted_at=_per_row(emitted_at_ms, n),
        )
        return MetricBlock("decisions", columns)

    def policy_decisions(self, decisions: DecisionColumns, emitted_at_ms: int) -> MetricBlock:
        """``decisions`` rows of the contact policy: sent, deferred or suppressed."""
        n = len(decisions)

        def coded(codes: np.ndarray, names: np.ndarray) -> pa.Array:
            return pa.DictionaryArray.from_arrays(
                pa.array(codes, pa.int32()), pa.array(names.tolist(), pa.string())
            )

        steps = decisions.step_names[decisions.journey, decisions.step].tolist()
        columns: dict[str, Column] = {
            "intervention_id": pa.array(decisions.ids.view("S36").ravel(), pa.string()),
            "client_id": pa.array(decisions.client_id, pa.string()),
            "journey": coded(decisions.journey, decisions.journey_names),
            "step": pa.array(steps, pa.string()).dictionary_encode(),
            "attempt": decisions.attempt.astype(np.int64),
            "segment": coded(decisions.segment, SEGMENT_NAMES),
            "decision": coded(decisions.outcome, DECISION_NAMES),
            "reason": coded(decisions.reason, REASON_NAMES),
            "tier": coded(decisions.tier, TIER_NAMES),
            "channel": coded(decisions.channel, CHANNEL_NAMES),
            "rm_id": pa.array(decisions.rm_id, pa.string()),
            "priority": decisions.priority.astype(np.float64),
            "decided_at": decisions.decided_at_ms.astype(np.int64),
            "emitted_at": np.full(n, emitted_at_ms, np.int64),
        }
        return MetricBlock("decisions", columns)

    def outcome_rows(self, outcomes: Records, ids: np.ndarray | None = None) -> MetricBlock:
        """``outcomes`` rows: how each stall ended within its attribution window (``ids``:
        their intervention ids when the caller has them)."""
        ints = outcomes.ints
        kind = ints[O_OUTCOME]
        recovered = (kind == OUTCOME_PROGRESSED) | (kind == OUTCOME_COMPLETED)
        stalled_at, resolved_at = ints[O_DEADLINE], ints[O_RESOLVED_AT]
        columns = self._common(outcomes, self.builder.ids(outcomes) if ids is None else ids)
        columns.update(
            stalled_at=stalled_at,
            outcome=self.outcomes[kind],
            recovered=recovered.astype(np.uint8),
            resolved_at=resolved_at,
            time_to_recovery_ms=np.where(recovered, resolved_at - stalled_at, -1),
            recovery_channel=self.channels[ints[O_RESOLVE_CHANNEL]],
        )
        return MetricBlock("outcomes", columns)


def _per_row(value: int | np.ndarray, n: int) -> np.ndarray:
    """``value`` for each of ``n`` rows (an array of ``n`` is taken as it is), int64."""
    if isinstance(value, np.ndarray):
        return value.astype(np.int64, copy=False)
    return np.full(n, value, np.int64)


def worker_name() -> str:
    """``host:pid:thread`` of the calling Bytewax worker."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


def health_item(item: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A progress item keyed by, and naming, the worker that produced it (a map step)."""
    worker = worker_name()
    return worker, {**item, "worker": worker}


@dataclass
class HealthWindow:
    """Sums of one worker's progress items over one wall-clock interval."""

    run_id: str
    worker: str
    interval_start_ms: int
    events_in: int = 0
    batches: int = 0
    decode_errors: int = 0
    late_events: int = 0
    watermark_delay_ms: int = 0
    lags: dict[str, int] = field(default_factory=dict)  # latest lag per input partition
    latencies_ms: list[float] = field(default_factory=list)
    levels: ShardLevels = field(default_factory=ShardLevels)
    max_event_ts: int | None = None
    redis_outages: int = 0

    def add(self, item: dict[str, Any]) -> None:
        """Add one progress item of the decode or a shard step."""
        self.events_in += item.get("in", 0)
        self.decode_errors += item.get("dead", 0)
        self.late_events += item.get("late", 0)
        if "in" in item:
            self.batches += 1
        if item.get("latency_ms") is not None:
            self.latencies_ms.append(item["latency_ms"])
        ts = item.get("max_ts")
        if ts is not None and (self.max_event_ts is None or ts > self.max_event_ts):
            self.max_event_ts = ts
        self.lags.update(item.get("lag", {}))
        if item.get("shard") is not None:
            self.levels.update(item)
            self.redis_outages += item.get("redis_outages", 0)

    def block(self) -> MetricBlock:
        """The interval as one ``flow_health`` row."""
        lat = np.array(self.latencies_ms or [0.0], np.float64)
        delay = -1
        marks = self.levels.watermark
        known = [w for w in marks.values() if w > MIN_WATERMARK]
        if known and len(known) == len(marks) and self.max_event_ts is not None:
            delay = max(self.max_event_ts - min(known), 0)  # -1 until every shard has one
        row: dict[str, Any] = {
            "interval_start": self.interval_start_ms,
            "run_id": self.run_id,
            "worker": self.worker,
            "events_in": self.events_in,
            "batches": self.batches,
            "decode_errors": self.decode_errors,
            "late_events": self.late_events,
            "watermark_delay_ms": delay,
            "kafka_lag": sum(self.lags.values()) if self.lags else -1,
            "batch_latency_p50_ms": float(np.percentile(lat, 50)),
            "batch_latency_p99_ms": float(np.percentile(lat, 99)),
            "batch_latency_max_ms": float(lat.max()),
            "open_instances": self.levels.total_open(),
            "state_bytes": self.levels.total_bytes(),
            "redis_outages": self.redis_outages,
            "decisions_waiting": self.levels.total_waiting(),
        }
        columns = {
            k: np.array([v], dtype=object if isinstance(v, str) else None) for k, v in row.items()
        }
        return MetricBlock("flow_health", columns)


class HealthLogic(StatefulBatchLogic[dict[str, Any], MetricBlock, None]):
    """One worker's progress items summed into a ``flow_health`` row per wall-clock interval.

    Wall-clock figures describe this run only, so nothing is kept across a restart.
    """

    def __init__(self, run_id: str, interval_ms: int, now_ms: Callable[[], int]) -> None:
        self.run_id, self.interval_ms, self.now_ms = run_id, interval_ms, now_ms
        self.worker = ""  # named by the items (see :func:`health_item`)
        self.window = self._new_window(now_ms())

    def _new_window(self, now: int) -> HealthWindow:
        start = now - now % self.interval_ms
        return HealthWindow(self.run_id, self.worker, start)

    def _roll(self) -> list[MetricBlock]:
        now = self.now_ms()
        if now < self.window.interval_start_ms + self.interval_ms:
            return []
        done, last = self.window.block(), self.window
        self.window = self._new_window(now)
        # levels hold until their partition or shard reports again: a quiet shard still has
        # its open instances and state, and a stuck one is the slowest watermark
        self.window.lags = dict(last.lags)
        self.window.levels = last.levels.copy()
        self.window.max_event_ts = last.max_event_ts
        return [done]

    def on_batch(self, values: list[dict[str, Any]]) -> tuple[list[MetricBlock], bool]:
        """Add the items; emit the interval's row once it has ended."""
        for item in values:
            self.worker = self.window.worker = item["worker"]
            self.window.add(item)
        return self._roll(), self.RETAIN

    def on_notify(self) -> tuple[list[MetricBlock], bool]:
        """The interval ended without items. A logic that never had an item is a worker's of
        an earlier process, restored from a snapshot (its key names that process): it goes,
        instead of writing a row of zeros for a worker named '' each interval for ever (one
        more after every restart)."""
        if not self.worker:
            return [], self.DISCARD
        return self._roll(), self.RETAIN

    def on_eof(self) -> tuple[list[MetricBlock], bool]:
        """Input ended: emit the partial interval."""
        return ([self.window.block()] if self.worker else []), self.DISCARD

    def notify_at(self) -> datetime:
        """The end of the current interval."""
        end = self.window.interval_start_ms + self.interval_ms
        return datetime.fromtimestamp(end / 1000, UTC)

    def snapshot(self) -> None:
        """Nothing: a resumed run starts new intervals."""
        return None
