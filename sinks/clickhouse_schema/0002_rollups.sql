-- Hour rollups of the row tables, by refreshable materialized views.
--
-- Why not a plain (insert-triggered) materialized view: it sums each inserted block, so a row
-- re-inserted by a replay or a retried insert would be counted twice. Each view below instead
-- recomputes its whole hour table from the row table read with FINAL (duplicates collapsed)
-- and swaps it in atomically, so an hour table never counts a key twice. Its window: an hour
-- table lags its row table by at most the refresh period (1 minute) plus one refresh; the
-- ClickHouse sink forces a refresh (SYSTEM REFRESH VIEW) when a run closes. Needs ClickHouse
-- >= 24.10 (refreshable materialized views) and an Atomic database (the default).

CREATE TABLE IF NOT EXISTS {db}.funnel_hour
(
    hour       DateTime64(3, 'UTC'),
    journey    LowCardinality(String),
    step       LowCardinality(String),
    channel    LowCardinality(String),
    segment    LowCardinality(String),
    events     Int64,
    started    Int64,
    advanced   Int64,
    completed  Int64,
    abandoned  Int64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (journey, step, hour, channel, segment)
COMMENT 'funnel_minute summed per hour over shards (refreshed every minute)';

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.funnel_hour_mv
REFRESH EVERY 1 MINUTE TO {db}.funnel_hour AS
SELECT
    toStartOfHour(minute) AS hour, journey, step, channel, segment,
    sum(events) AS events, sum(started) AS started, sum(advanced) AS advanced,
    sum(completed) AS completed, sum(abandoned) AS abandoned
FROM {db}.funnel_minute FINAL
GROUP BY hour, journey, step, channel, segment;

CREATE TABLE IF NOT EXISTS {db}.stalls_hour
(
    hour              DateTime64(3, 'UTC') COMMENT 'hour of the stall (deadline)',
    journey           LowCardinality(String),
    step              LowCardinality(String),
    segment           LowCardinality(String),
    stalls            UInt64,
    clients           UInt64 COMMENT 'distinct clients that stalled in the hour',
    errors            Int64,
    back_steps        Int64,
    channel_switches  Int64,
    time_on_step_ms_sum  Int64 COMMENT 'divide by stalls for the mean',
    elapsed_ms_sum       Int64 COMMENT 'divide by stalls for the mean',
    priority_sum         Float64 COMMENT 'divide by stalls for the mean'
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (journey, step, hour, segment)
COMMENT 'stalls per hour by journey, step and segment (refreshed every minute)';

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.stalls_hour_mv
REFRESH EVERY 1 MINUTE TO {db}.stalls_hour AS
SELECT
    toStartOfHour(deadline) AS hour, journey, step, segment,
    count() AS stalls, uniqExact(client_id) AS clients,
    sum(errors) AS errors, sum(back_steps) AS back_steps,
    sum(channel_switches) AS channel_switches, sum(time_on_step_ms) AS time_on_step_ms_sum,
    sum(elapsed_ms) AS elapsed_ms_sum, sum(priority) AS priority_sum
FROM {db}.stalls FINAL
GROUP BY hour, journey, step, segment;

CREATE TABLE IF NOT EXISTS {db}.decisions_hour
(
    hour       DateTime64(3, 'UTC') COMMENT 'hour of the decision (decided_at)',
    journey    LowCardinality(String),
    decision   LowCardinality(String),
    reason     LowCardinality(String),
    tier       LowCardinality(String),
    decisions  UInt64,
    clients    UInt64 COMMENT 'distinct clients in the hour'
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (decision, reason, tier, hour, journey)
COMMENT 'decisions per hour by decision, reason, tier and journey (refreshed every minute)';

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.decisions_hour_mv
REFRESH EVERY 1 MINUTE TO {db}.decisions_hour AS
SELECT
    toStartOfHour(decided_at) AS hour, journey, decision, reason, tier,
    count() AS decisions, uniqExact(client_id) AS clients
FROM {db}.decisions FINAL
GROUP BY hour, journey, decision, reason, tier;

CREATE TABLE IF NOT EXISTS {db}.outcomes_hour
(
    hour                    DateTime64(3, 'UTC') COMMENT 'hour of the stall (stalled_at)',
    journey                 LowCardinality(String),
    tier                    LowCardinality(String),
    outcome                 LowCardinality(String),
    outcomes                UInt64,
    recovered               UInt64,
    time_to_recovery_ms_sum  Int64 COMMENT 'over recovered stalls',
    recoveries_timed         UInt64 COMMENT 'stalls with a time to recovery (the divisor)'
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (journey, tier, outcome, hour)
COMMENT 'stall outcomes per hour by journey, tier and outcome (refreshed every minute)';

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.outcomes_hour_mv
REFRESH EVERY 1 MINUTE TO {db}.outcomes_hour AS
SELECT
    toStartOfHour(stalled_at) AS hour, journey, tier, outcome,
    count() AS outcomes, sum(recovered) AS recovered,
    sum(ifNull(time_to_recovery_ms, 0)) AS time_to_recovery_ms_sum,
    count(time_to_recovery_ms) AS recoveries_timed
FROM {db}.outcomes FINAL
GROUP BY hour, journey, tier, outcome;

CREATE TABLE IF NOT EXISTS {db}.flow_health_hour
(
    hour                   DateTime64(3, 'UTC'),
    run_id                 LowCardinality(String),
    worker                 LowCardinality(String),
    intervals              UInt64,
    events_in              Int64,
    batches                Int64,
    decode_errors          Int64,
    late_events            Int64,
    watermark_delay_ms_max    Int64,
    kafka_lag_max             Nullable(Int64) COMMENT 'NULL when never known',
    batch_latency_p99_ms_max  Float64 COMMENT 'highest p99 of the intervals',
    batch_latency_max_ms      Float64,
    open_instances_max        Int64,
    state_bytes_max           Int64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, run_id, worker)
COMMENT 'flow health per hour per worker (refreshed every minute)';

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.flow_health_hour_mv
REFRESH EVERY 1 MINUTE TO {db}.flow_health_hour AS
SELECT
    toStartOfHour(interval_start) AS hour, run_id, worker,
    count() AS intervals, sum(events_in) AS events_in, sum(batches) AS batches,
    sum(decode_errors) AS decode_errors, sum(late_events) AS late_events,
    max(watermark_delay_ms) AS watermark_delay_ms_max, max(kafka_lag) AS kafka_lag_max,
    max(batch_latency_p99_ms) AS batch_latency_p99_ms_max,
    max(batch_latency_max_ms) AS batch_latency_max_ms,
    max(open_instances) AS open_instances_max, max(state_bytes) AS state_bytes_max
FROM {db}.flow_health FINAL
GROUP BY hour, run_id, worker;
