"""The stateful shard step: watermark, event-time ordering, journey state, stall emission.

One :class:`ShardLogic` per shard key. Events wait in ``pending`` until the watermark passes
them, are then applied in event-time order, and deadlines at or before the watermark are
expired; so the result does not depend on arrival order within the allowed lateness.
Events behind the watermark on arrival are late: counted, and routed per
``engine.late_events``. Bytewax's own timers are only used as a wall-clock tick to notice
idle inputs; all deadlines are event time, kept inside the shard store.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.operators import StatefulBatchLogic

from ato.catalog import Catalog
from ato.columns import EventColumns
from ato.config import EngineSettings, report_timeout_ms
from ato.exceptions import ConfigError
from operators.batches import InterventionBatch, ShardInput, ShardOutput
from operators.decode import wall_ms
from operators.funnel import MINUTE_MS, FunnelRows, event_rows, outcome_rows
from operators.interventions import InterventionBuilder
from operators.live_changes import LiveStateTracker
from operators.pending import LanedPending
from operators.watermark import WatermarkTracker
from policy.live_state import LiveStateWriter
from state.base import Effects, Records
from state.lanes import LanedStore, snapshot_lanes
from state.layout import O_JOURNEY
from state.shard_store import NumbaShardStore, order_events


@dataclass(frozen=True)
class ShardContext:
    """What every shard of a flow shares."""

    catalog: Catalog
    settings: EngineSettings
    partitions: list[str]
    now_ms: Callable[[], int] = wall_ms
    metrics: bool = False  # keep stall and outcome records and funnel counts for ClickHouse
    policy: bool = False  # the policy step decides: pass stalls and outcomes on, build nothing
    live_state: LiveStateWriter | None = None  # write live journey state to Redis
    live_state_interval_ms: int = 1_000
    # Bytewax asks for a snapshot at every epoch end even without recovery; copying the whole
    # store each time (2 GB at 10 M instances) stalls the flow, so without recovery: none.
    # With snapshots, an input cut before its end (--duration-s) ends in a pause, not a flush.
    snapshots: bool = True


def check_resume(resume: dict[str, Any], ctx: ShardContext) -> None:
    """Refuse a snapshot taken with another shard count, lane count or catalog: clients
    would land in shards or lanes without their state, or codes would name other journeys.
    (Snapshots older than this check carry no shard count or catalog, and are taken as they
    are; those from before lanes have one.)"""
    where = f"recovery snapshot of shard {resume.get('shard', '?')}"
    for name, taken in (
        ("shards", resume.get("shards")),
        ("lanes", snapshot_lanes(resume["store"])),
    ):
        this_run = getattr(ctx.settings, name)
        if taken is not None and taken != this_run:
            msg = (
                f"{where} was taken with engine.{name} = {taken}, this run has {this_run}:"
                f" resume with the same {name} (--{name} {taken}), or use a new recovery"
                " directory"
            )
            raise ConfigError(msg)
    fingerprint = resume.get("catalog")
    if fingerprint is not None and fingerprint != ctx.catalog.codes_fingerprint:
        msg = (
            f"{where} was taken with another journey catalog (its journeys, steps or event"
            f" types differ from {ctx.catalog.source}): resume with that catalog, or use a new"
            " recovery directory"
        )
        raise ConfigError(msg)


# Fewer events ready in a call run the lanes one after another on the worker's thread: a
# hand-over to a helper thread costs more than it saves on a small call (state-only runs at
# 1 M clients, 50,000-message batches, 3,000 events a call: 2 lanes side by side 3.66 s,
# 1 lane 3.09 s).
SIDE_BY_SIDE_EVENTS = 16_384


class ShardLogic(StatefulBatchLogic[ShardInput, ShardOutput, dict[str, Any] | None]):
    """Journey state of one shard inside a Bytewax ``stateful_batch`` step."""

    def __init__(self, ctx: ShardContext, resume: dict[str, Any] | None) -> None:
        self.shard = resume["shard"] if resume is not None else ""  # known from the first item
        self.ctx = ctx
        self.builder = InterventionBuilder(ctx.catalog)
        now = ctx.now_ms()
        s = ctx.settings
        self.tracker = WatermarkTracker(
            ctx.partitions,
            s.allowed_lateness_ms,
            s.idle_timeout_ms,
            s.clock == "live",
            now,
            # a longer gap between two calls means the worker was busy elsewhere, and the
            # shard could not have heard from its inputs: it counts at most this much
            max_gap_ms=report_timeout_ms(s),
            report_timeout_ms=report_timeout_ms(s),
        )
        self.pending = LanedPending(s.lanes)
        self.reported_minute: int | None = None  # watermark minute the last output carried
        self.reported_watermark: int | None = None  # the watermark the last output carried
        # a source said --duration-s stopped its partition before the end (RawBatch.cut);
        # every shard hears it, in whichever process it runs
        self.input_cut = False
        self.live: LiveStateTracker | None = None
        if ctx.live_state is not None:
            self.live = LiveStateTracker(self.builder, ctx.live_state, ctx.live_state_interval_ms)
        if resume is None:
            self.store = LanedStore.empty(ctx.catalog, s.lanes)
        else:
            check_resume(resume, ctx)
            self.store = LanedStore.restore(ctx.catalog, resume["store"])
            self.tracker.restore(resume["watermark"], now)
            # replace() runs __post_init__, which unpickling skips: pending events of an older
            # snapshot get their client ids as UTF-8 bytes like new ones
            self.pending.add(self.store.split(replace(resume["pending"])))
            if self.live is not None:
                self.live.restore(resume.get("live", {}))

    # ------------------------------------------------------------------ Bytewax hooks

    def on_batch(self, values: list[ShardInput]) -> tuple[list[ShardOutput], bool]:
        """Take sub-batches from any partitions, then advance to the new watermark."""
        now = self.ctx.now_ms()
        late_parts: list[EventColumns] = []
        late_from: list[tuple[str, int]] = []  # partition and count of each late part
        read_at = min(item.read_wall_ms for item in values)  # 0: the source did not say
        for item in values:
            self.shard = item.shard
            if item.cut:
                self.input_cut = True  # no news of event time: not observed
                continue
            events = item.events
            if len(events):
                late = events.ts < self.tracker.current
                if late.any():
                    late_parts.append(replace(events.take(late), raw=item.raw_of(late)))
                    late_from.append((item.partition, int(late.sum())))
                    events = events.take(~late)
                self.pending.add(self.store.split(events.without_raw()))
            self.tracker.observe(
                item.partition, item.max_ts, now, item.caught_up, arrived_ms=item.arrived_ms,
                unsure=item.unsure, ended=item.ended,
            )  # fmt: skip
        outputs = self._advance(self.tracker.advance(now), late_parts, final=False)
        if late_from and outputs:
            outputs[0] = replace(outputs[0], late_partitions=tuple(late_from))
        if outputs and read_at > 0:
            outputs[0] = replace(outputs[0], latency_ms=float(self.ctx.now_ms() - read_at))
        return outputs, self.RETAIN

    def on_notify(self) -> tuple[list[ShardOutput], bool]:
        """Wall-clock tick: idle inputs may let the watermark move."""
        before = self.tracker.current
        now = self.ctx.now_ms()
        if self.live is not None:
            self.live.maybe_write(self.store, now)
        after = self.tracker.advance(now)
        if after == before:
            return [], self.RETAIN
        return self._advance(after, [], final=False), self.RETAIN

    def on_eof(self) -> tuple[list[ShardOutput], bool]:
        """Input ended: apply everything pending and expire up to the last event time. When
        the input was only cut (a source sent :attr:`RawBatch.cut`) in a run that can resume
        (with snapshots), that would settle deadlines against events not read yet and make
        them late once resumed: the shard only advances as usual (and writes its live
        state), its last output says it paused (so the funnel step keeps its open minutes
        too), and its snapshot resumes as if the run had never stopped."""
        if not (self.ctx.snapshots and self.input_cut):
            return self._advance(self.tracker.final(), [], final=True), self.RETAIN
        now = self.ctx.now_ms()
        outputs = self._advance(self.tracker.advance(now), [], final=False, force=True)
        outages = 0
        if self.live is not None:  # what fails stays marked, in the snapshot
            self.live.write_before_pause(self.store, now)
            outages = self.live.new_outages()
        last = outputs[-1]
        outputs[-1] = replace(last, paused=True, redis_outages=last.redis_outages + outages)
        return outputs, self.RETAIN

    def notify_at(self) -> datetime | None:
        """Next wall-clock tick."""
        return datetime.now(UTC) + timedelta(milliseconds=self.ctx.settings.tick_ms)

    def snapshot(self) -> dict[str, Any] | None:
        """Copies of the store, the watermark state, the pending events and the live-state
        marks not yet written; None when the flow runs without recovery."""
        if not self.ctx.snapshots:
            return None
        return {
            "shard": self.shard,
            "shards": self.ctx.settings.shards,
            "catalog": self.ctx.catalog.codes_fingerprint,
            "store": self.store.snapshot(),
            "watermark": self.tracker.snapshot(),
            "pending": self.pending.all(),
            "live": self.live.snapshot() if self.live is not None else {},
        }

    # ------------------------------------------------------------------ work

    def _lane(
        self, ready: EventColumns, store: NumbaShardStore, watermark: int
    ) -> tuple[EventColumns, Records, Effects, FunnelRows]:
        """One lane's part of :meth:`_advance` (maybe side by side with the other lanes'):
        apply its ``ready`` events in event-time order, then expire its deadlines. Returns
        the events applied, their records and the expiry's, their effects, and with metrics
        their funnel counts (made here, so the lanes' events need no joining for them)."""
        if not len(ready):
            return ready, store.expire(watermark), Effects.empty(), FunnelRows.empty()
        ordered = ready.take(order_events(ready))
        applied, effects = store.apply(ordered)
        funnel = FunnelRows.empty()
        if self.ctx.metrics:
            funnel = event_rows(ordered.ts, ordered.channel, ordered.segment, effects)
        return ordered, Records.concat([applied, store.expire(watermark)]), effects, funnel

    def _advance(
        self, watermark: int, late_parts: list[EventColumns], final: bool, force: bool = False
    ) -> list[ShardOutput]:
        """Apply the events the watermark passed and expire deadlines; the output, if there is
        news (always with ``final`` or ``force``)."""
        metrics, policy, live = self.ctx.metrics, self.ctx.policy, self.live
        ready = self.pending.pop(watermark, final)
        lanes = self.store.run(
            lambda lane, store: self._lane(ready[lane], store, watermark),
            side_by_side=sum(map(len, ready)) >= SIDE_BY_SIDE_EVENTS,
        )
        records = [found for _, found, _, _ in lanes]
        applied = sum(len(ordered) for ordered, _, _, _ in lanes)
        funnel_parts = [funnel for _, _, _, funnel in lanes]
        if applied and live is not None:
            ordered = EventColumns.concat([ordered for ordered, _, _, _ in lanes])
            effects = Effects.concat([effects for _, _, effects, _ in lanes])
            live.mark(ordered.client_key, effects.journey, ordered.client_id)
        late = EventColumns.concat(late_parts)
        found = Records.concat(records)
        if live is not None:
            if len(found):
                live.mark(found.client_key, found.ints[O_JOURNEY], found.client_id)
            live.maybe_write(self.store, self.ctx.now_ms(), force=final)
        stalls = found.stalls()
        keep_records = metrics or policy
        outcomes = found.outcomes() if keep_records else Records.empty()
        funnel = None
        minute = watermark // MINUTE_MS
        if metrics:
            # this call's counts, not summed: the funnel step sums every shard's rows once
            funnel = FunnelRows.concat([*funnel_parts, outcome_rows(outcomes)])
        quiet = not len(found) and not applied and not len(late)
        # the funnel step closes a minute once every shard's watermark has passed it
        minute_passed = metrics and minute != self.reported_minute
        # the policy step decides a deferred candidate once the shard's watermark reaches its
        # due time: it must hear of every move, also of a shard with nothing else to say
        moved = policy and watermark != self.reported_watermark
        news = not quiet or final or force or minute_passed or moved
        if not news and (funnel is None or not len(funnel)):
            return []
        self.reported_minute = minute
        self.reported_watermark = watermark
        now = self.ctx.now_ms()
        stall_ids = self.builder.ids(stalls) if keep_records else None
        # the policy step wants them at once; the metrics sink hashes them when it inserts
        outcome_ids = self.builder.ids(outcomes) if len(outcomes) and policy else None
        if policy:
            interventions = InterventionBatch.empty()  # the policy step builds the sent ones
        else:
            interventions = self.builder.build(stalls, now, stall_ids)
        sizes = self.store.sizes()
        keep_late = self.ctx.settings.late_events == "output" and len(late) > 0
        return [
            ShardOutput(
                shard=self.shard,
                interventions=interventions,
                late=late if keep_late else None,
                late_count=len(late),
                applied=applied,
                watermark=watermark,
                pending=len(self.pending),
                open_instances=sizes["instances"],
                state_bytes=sizes["bytes"],
                stalls=stalls if keep_records else Records.empty(),
                stall_ids=stall_ids,
                outcomes=outcomes,
                outcome_ids=outcome_ids,
                funnel=funnel,
                final=final,
                emitted_at_ms=now,
                redis_outages=live.new_outages() if live is not None else 0,
            )
        ]
