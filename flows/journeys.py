"""The journey flow: decode -> shard routing -> stateful shard step -> outputs.

Items on the hot path are batches: a source yields :class:`~operators.batches.RawBatch`, the
decode step turns each into columns, the router cuts it into one piece per shard, and each
shard applies its piece with numba kernels. Outputs: interventions, dead letters, late events
(as JSON-lines bytes, keyed for single-writer sinks) and progress items.
"""

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, Source
from bytewax.outputs import Sink

from ato.catalog import CHANNELS, Catalog, load_catalog
from ato.columns import EventColumns, client_id_texts
from ato.config import Settings
from ato.run_id import new_run_id
from flows import ops as op
from operators.batches import DeadLetter, DecodedBatch, RawBatch, ShardOutput, raw_fields
from operators.decode import Decoder, wall_ms
from operators.funnel import FunnelLogic, FunnelUpdate
from operators.interventions import SCHEMA
from operators.metrics import HealthLogic, MetricRows, health_item
from operators.policy_step import PolicyContext, PolicyLogic
from operators.route import Router
from operators.shard_step import ShardContext, ShardLogic
from operators.warm_up import warm_up
from policy.connection import connect
from policy.live_state import LiveStateWriter
from policy.settings import for_catalog, load_policy
from sinks.clickhouse import ClickHouseSink, DeferredBlock, MetricBlock
from sinks.kafka import Record
from sources.read_ahead import ReadAheadSource

log = logging.getLogger(__name__)
OUTPUT_KEY = "out"  # single-writer sinks: every output line under one key
FUNNEL_KEY = "funnel"  # the funnel step sums every shard's counts under one key


@dataclass(frozen=True)
class FlowSinks:
    """Where the flow's outputs go.

    With ``records`` false, line outputs get ``(OUTPUT_KEY, block)`` items: a block is one or
    more whole JSON lines, one block per batch and output, so the dataflow never carries an
    item per document. With ``records`` true they get ``(part key, list[Record])`` items for
    Kafka sinks: interventions keyed by shard, dead letters by input partition, late events
    by shard. Progress items are dicts.
    """

    interventions: Sink[tuple[str, Any]]
    dead_letters: Sink[tuple[str, Any]]
    late: Sink[tuple[str, Any]]
    progress: Sink[dict[str, Any]]
    records: bool = False
    metrics: ClickHouseSink | None = None  # None: no metrics
    decisions: Sink[tuple[str, Any]] | None = None  # contact-policy decisions as JSON lines


def build_flow(
    source: Source[RawBatch],
    sinks: FlowSinks,
    config: Settings,
    catalog: Catalog | None = None,
    partitions: list[str] | None = None,
    now_ms: Callable[[], int] = wall_ms,
    snapshots: bool = True,
    run_id: str | None = None,
) -> Dataflow:
    """Assemble the journey flow.

    ``partitions`` names the input partitions the watermark waits for (default: the
    source's ``input_partitions()`` if it has one). ``snapshots=False`` (a run without
    recovery) spares the shards copying their state at every epoch end. ``run_id`` names
    the run in its ``flow_health`` rows (default: :func:`ato.run_id.new_run_id`).
    """
    catalog = catalog if catalog is not None else load_catalog(config.catalog)
    if partitions is None:
        lister = getattr(source, "input_partitions", None)
        partitions = list(lister()) if lister is not None else []
    engine = config.engine
    warm_up(catalog, engine)  # compile now, not while the first batches wait
    decoder = Decoder(catalog, engine, now_ms)
    router = Router(engine.shards, engine.lanes)
    policy_ctx = policy_context(config, catalog, now_ms)
    live = None
    if policy_ctx is not None and config.redis.live_state:
        redis_settings = config.redis
        live = LiveStateWriter(
            policy_ctx.client, redis_settings.live_state_ttl_s, redis_settings.outage_wait_s
        )
        warn_of_short_live_state_ttl(redis_settings.live_state_ttl_s, catalog)
    ctx = ShardContext(
        catalog,
        engine,
        partitions,
        now_ms,
        metrics=sinks.metrics is not None,
        policy=policy_ctx is not None,
        live_state=live,
        live_state_interval_ms=config.redis.live_state_interval_ms,
        snapshots=snapshots,
    )

    if engine.decode_ahead and isinstance(source, FixedPartitionedSource):
        source = ReadAheadSource(source, decoder.start)
    flow = Dataflow("journeys")
    raw = op.input("input", flow, source)
    decoded = op.map("decode", raw, decoder)
    encode_dead = _dead_records if sinks.records else _dead_lines
    op.output(
        "dead_letters", op.flat_map("dead_letter_items", decoded, encode_dead), sinks.dead_letters
    )
    keyed = op.flat_map("route", decoded, router)
    shard_out = op.stateful_batch("shards", keyed, lambda resume: ShardLogic(ctx, resume))
    if policy_ctx is not None:
        pctx = policy_ctx
        shard_out = op.stateful_batch("policy", shard_out, lambda resume: PolicyLogic(pctx, resume))
    outputs = op.map("shard_outputs", shard_out, lambda key_out: key_out[1])
    encode_interventions = _intervention_records if sinks.records else _intervention_lines
    op.output(
        "interventions",
        op.flat_map("intervention_items", outputs, encode_interventions),
        sinks.interventions,
    )
    encode_late = _late_records if sinks.records else _late_lines
    op.output("late", op.flat_map("late_items", outputs, encode_late), sinks.late)
    if policy_ctx is not None and sinks.decisions is not None:
        op.output(
            "decisions", op.flat_map("decision_items", outputs, _decision_lines), sinks.decisions
        )
    progress = op.merge(
        "progress",
        op.map("decode_progress", decoded, _decode_progress),
        op.map("shard_progress", outputs, _shard_progress),
    )
    op.output("progress_out", progress, sinks.progress)
    if sinks.metrics is not None:
        rows = MetricRows(catalog)
        sinks.metrics.bind(rows)  # the sink makes the blocks the rows step defers
        blocks = op.flat_map("metric_blocks", outputs, rows)
        updates = op.flat_map("funnel_updates", outputs, _funnel_update)
        funnel = op.stateful_batch(
            "funnel", updates, lambda resume: FunnelLogic(router.keys, resume, sum_closed=False)
        )
        funnel_blocks = op.map(
            "funnel_blocks", funnel, lambda key_rows: rows.funnel_later(key_rows[1])
        )
        interval_ms = max(1, int(config.clickhouse.health_interval_s * 1000))
        run_id = run_id or new_run_id()
        health = op.stateful_batch(
            "health",
            op.map("health_items", progress, health_item),
            lambda _resume: HealthLogic(run_id, interval_ms, now_ms),
        )
        health_blocks = op.map("health_blocks", health, lambda key_block: key_block[1])
        merged = op.merge("all_metrics", blocks, funnel_blocks, health_blocks)
        op.output("metrics", op.map("metric_items", merged, _metric_item), sinks.metrics)
    return flow


def warn_of_short_live_state_ttl(ttl_s: int, catalog: Catalog) -> bool:
    """Log a warning (and return True) when live-state keys can expire while an instance is
    open: an instance is written at its events and its stall, then not until it closes."""
    longest = max(
        max([j.close_after_ms, *(s.timeout_ms for s in j.steps)]) for j in catalog.journeys
    )
    if ttl_s * 1000 >= longest:
        return False
    log.warning(
        "redis.live_state_ttl_s (%d s) is shorter than the catalog's longest step timeout or"
        " close_after (%d s): live state of an open instance may expire before it closes",
        ttl_s, longest // 1000,
    )  # fmt: skip
    return True


def policy_context(
    config: Settings, catalog: Catalog, now_ms: Callable[[], int]
) -> PolicyContext | None:
    """The contact policy's context when ``redis.url`` is set (the policy file is read and
    checked against the catalog now), else None: every stall is sent as the catalog says."""
    settings = config.redis
    if not settings.enabled:
        return None
    policy = for_catalog(load_policy(settings.policy_file or None), catalog)
    return PolicyContext(
        catalog=catalog,
        policy=policy,
        client=connect(settings),
        profile_ttl_s=settings.profile_ttl_s,
        profile_cache=max(1_000, 1_000_000 // config.engine.shards),
        max_waiting=settings.max_deferred,
        outage_wait_s=settings.outage_wait_s,
        now_ms=now_ms,
    )


def json_lines(docs: Iterable[dict[str, Any]]) -> bytes:
    """Documents as JSON lines in one block.

    Each ``orjson.dumps`` result is copied out and dropped at once: holding many of them alive
    costs far more than the encoding (each keeps a 4 KiB buffer).
    """
    block = bytearray()
    for doc in docs:
        block += orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE)
    return bytes(block)


def _funnel_update(out: ShardOutput) -> list[tuple[str, FunnelUpdate]]:
    """A shard output's funnel counts and watermark, for the one funnel step."""
    if out.funnel is None:
        return []
    update = FunnelUpdate(out.shard, out.watermark, out.funnel, out.final, out.paused)
    return [(FUNNEL_KEY, update)]


def _metric_item(block: MetricBlock | DeferredBlock) -> tuple[str, MetricBlock | DeferredBlock]:
    return (OUTPUT_KEY, block)


def _block(docs: Iterable[dict[str, Any]]) -> list[tuple[str, bytes]]:
    block = json_lines(docs)
    return [(OUTPUT_KEY, block)] if block else []


def _dead_lines(batch: DecodedBatch) -> list[tuple[str, bytes]]:
    return _block(d.to_doc() for d in batch.dead)


def _decision_lines(out: ShardOutput) -> list[tuple[str, bytes]]:
    return _block(out.decisions.docs()) if out.decisions is not None and len(out.decisions) else []


def _intervention_lines(out: ShardOutput) -> list[tuple[str, bytes]]:
    block = out.interventions.lines
    return [(OUTPUT_KEY, block)] if block else []


def _late_lines(out: ShardOutput) -> list[tuple[str, bytes]]:
    late = out.late
    if late is None:
        return []
    return _block(late_docs(late, out.watermark, out.late_partitions))


def _intervention_records(out: ShardOutput) -> list[tuple[str, list[Record]]]:
    batch = out.interventions
    if not len(batch):
        return []
    schema = SCHEMA.encode()
    clients, ids = batch.client_id_bytes.tolist(), batch.id_bytes.tolist()
    records = [
        Record(client, value, [("schema", schema), ("intervention_id", iid)])
        for client, iid, value in zip(clients, ids, batch.values(), strict=True)
    ]
    return [(out.shard, records)]


def _dead_records(batch: DecodedBatch) -> list[tuple[str, list[Record]]]:
    if not batch.dead:
        return []
    records = [
        Record(None, orjson.dumps(dead_letter_doc(d)), [("reason", d.reason.encode())])
        for d in batch.dead
    ]
    return [(batch.partition, records)]


def _late_records(out: ShardOutput) -> list[tuple[str, list[Record]]]:
    if out.late is None:
        return []
    records = [
        Record(doc["client_id"].encode(), orjson.dumps(doc), [("reason", b"late")])
        for doc in late_docs(out.late, out.watermark, out.late_partitions, kafka=True)
    ]
    return [(out.shard, records)]


def dead_letter_doc(dead: DeadLetter) -> dict[str, Any]:
    """A dead letter as a document; Kafka partitions (``topic#N``) name topic and partition."""
    doc = dead.to_doc()
    doc.update(_source_of(dead.partition))
    return doc


def _source_of(partition: str) -> dict[str, Any]:
    """``source_topic`` and ``source_partition`` of a Kafka partition name (``topic#N``)."""
    topic, sep, number = partition.rpartition("#")
    if sep and number.isdigit():
        return {"source_topic": topic, "source_partition": int(number)}
    return {}


def late_docs(
    late: EventColumns,
    watermark: int,
    partitions: tuple[tuple[str, int], ...] = (),
    kafka: bool = False,
) -> list[dict[str, Any]]:
    """Late events as documents: where they came from (``partitions``: the input partition of
    each run of rows, see :attr:`ShardOutput.late_partitions`; with ``kafka``, partitions are
    Kafka's and name ``source_topic`` and ``source_partition`` too), their time, and the
    original bytes."""
    client_ids = client_id_texts(late.client_id)
    names = [name for name, count in partitions for _ in range(count)]
    if len(names) != len(late):
        names = [""] * len(late)  # not known
    return [
        {
            "reason": "late",
            "client_id": client_ids[i],
            "ts": int(late.ts[i]),
            "channel": CHANNELS[int(late.channel[i])],
            "watermark_after": watermark,
            "partition": names[i],
            "offset": int(late.offset[i]),
            **(_source_of(names[i]) if kafka else {}),
            **({"raw_b64": None} if late.raw is None else raw_fields(late.raw[i])),
        }
        for i in range(len(late))
    ]


def _decode_progress(batch: DecodedBatch) -> dict[str, Any]:
    item: dict[str, Any] = {"in": batch.n_in, "dead": len(batch.dead), "max_ts": batch.max_ts}
    if batch.lag is not None:
        item["lag"] = {batch.partition: batch.lag}
    return item


def _shard_progress(out: ShardOutput) -> dict[str, Any]:
    return {
        "shard": out.shard,
        "latency_ms": out.latency_ms,
        "applied": out.applied,
        "late": out.late_count,
        "interventions": len(out.interventions),
        "watermark": out.watermark,
        "open": out.open_instances,
        "bytes": out.state_bytes,
        "redis_outages": out.redis_outages,
        "redis_waiting": out.redis_waiting,
    }
