-- Row tables of the live metrics. Owned by ato-stream: never edit an applied migration, add a
-- numbered file instead ({db} is replaced by clickhouse.database).
--
-- Every table is a ReplacingMergeTree whose sorting key is its duplicate key (plus columns that
-- the key determines): a replay or a restart re-inserts identical rows, background merges
-- collapse them, and queries with FINAL (or SETTINGS final = 1, which `ato query` sets) see
-- each key once at any time. PARTITION BY uses event-time columns that a replay reproduces
-- exactly, so duplicates always land in the same partition.

CREATE TABLE IF NOT EXISTS {db}.funnel_minute
(
    minute      DateTime64(3, 'UTC') COMMENT 'start of the event-time minute',
    journey     LowCardinality(String) COMMENT 'instance the event counted in; empty: none',
    step        LowCardinality(String) COMMENT 'its step after the event',
    channel     LowCardinality(String),
    segment     LowCardinality(String) COMMENT 'attrs.segment of the event; unknown when absent',
    shard       LowCardinality(String) COMMENT 'state shard that counted the rows (sum over shards)',
    events      Int64 COMMENT 'events applied to the step',
    started     Int64 COMMENT 'journey instances started',
    advanced    Int64 COMMENT 'moves of an open instance to this (non-terminal) step',
    completed   Int64 COMMENT 'instances that reached a success step',
    abandoned   Int64 COMMENT 'instances ended without success: failure step, or stall window lapsed'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (journey, step, minute, channel, segment, shard)
COMMENT 'funnel counts per event-time minute; key (minute, journey, step, channel, segment, shard)';

CREATE TABLE IF NOT EXISTS {db}.stalls
(
    intervention_id   String COMMENT 'UUIDv5 of (client, journey, instance start, step, attempt)',
    client_id         String,
    journey           LowCardinality(String),
    step              LowCardinality(String),
    step_index        UInt16,
    attempt           UInt16,
    segment           LowCardinality(String),
    tier              LowCardinality(String),
    priority          Float64,
    instance_start    DateTime64(3, 'UTC'),
    deadline          DateTime64(3, 'UTC') COMMENT 'when the instance stalled (event time)',
    last_progress     DateTime64(3, 'UTC'),
    last_event_type   LowCardinality(String),
    last_channel      LowCardinality(String),
    events            Int64,
    errors            Int64,
    back_steps        Int64,
    channel_switches  Int64,
    time_on_step_ms   Int64,
    elapsed_ms        Int64,
    recent_calls      Float64,
    recent_sessions   Float64,
    emitted_at        DateTime64(3, 'UTC') COMMENT 'wall clock of the emitting run',
    INDEX deadline_minmax deadline TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(deadline)
ORDER BY (journey, step, intervention_id)
COMMENT 'one row per stall; key intervention_id (journey and step are part of the id)';

CREATE TABLE IF NOT EXISTS {db}.decisions
(
    intervention_id  String,
    client_id        String,
    journey          LowCardinality(String),
    step             LowCardinality(String),
    attempt          UInt16,
    segment          LowCardinality(String),
    decision         LowCardinality(String) COMMENT 'sent, deferred or suppressed',
    reason           LowCardinality(String) COMMENT 'why deferred or suppressed; empty when sent',
    tier             LowCardinality(String),
    priority         Float64,
    decided_at       DateTime64(3, 'UTC') COMMENT 'event time of the decision',
    emitted_at       DateTime64(3, 'UTC'),
    INDEX decided_minmax decided_at TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(decided_at)
ORDER BY (journey, decision, reason, step, intervention_id)
COMMENT 'one row per intervention decision; key (intervention_id, decision, reason)';

CREATE TABLE IF NOT EXISTS {db}.outcomes
(
    intervention_id      String,
    client_id            String,
    journey              LowCardinality(String),
    step                 LowCardinality(String),
    attempt              UInt16,
    segment              LowCardinality(String),
    tier                 LowCardinality(String),
    stalled_at           DateTime64(3, 'UTC'),
    outcome              LowCardinality(String) COMMENT 'progressed, completed, failed or lapsed',
    recovered            UInt8 COMMENT '1 when progressed or completed within the window',
    resolved_at          DateTime64(3, 'UTC'),
    time_to_recovery_ms  Nullable(Int64) COMMENT 'NULL when not recovered',
    recovery_channel     LowCardinality(String) COMMENT 'channel of the recovering event; empty when none',
    INDEX stalled_minmax stalled_at TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(stalled_at)
ORDER BY (journey, step, intervention_id)
COMMENT 'how each stall ended within its attribution window; key intervention_id';

CREATE TABLE IF NOT EXISTS {db}.flow_health
(
    interval_start        DateTime64(3, 'UTC') COMMENT 'start of the wall-clock interval',
    run_id                LowCardinality(String),
    worker                LowCardinality(String) COMMENT 'host:pid:thread',
    events_in             Int64,
    batches               Int64,
    decode_errors         Int64,
    late_events           Int64,
    watermark_delay_ms    Int64 COMMENT 'newest event time minus the slowest shard watermark; -1 unknown',
    kafka_lag             Nullable(Int64) COMMENT 'messages behind the partition ends; NULL unknown',
    batch_latency_p50_ms  Float64,
    batch_latency_p99_ms  Float64,
    batch_latency_max_ms  Float64,
    open_instances        Int64,
    state_bytes           Int64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(interval_start)
ORDER BY (run_id, worker, interval_start)
COMMENT 'flow health per worker per interval; key (run_id, worker, interval_start)';
