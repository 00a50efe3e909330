-- flow_health says what the contact policy's Redis did to the flow (issue 5): outages met in
-- the interval, and candidates due but waiting for Redis at its end. Rows written before
-- (or by a flow without the policy) have 0. The hour table holds nothing of its own (each
-- refresh recomputes it from flow_health), so it is dropped with its view, view first (a
-- refresh under way would swap the old table back in), and both are made again with the new
-- columns; the new view's first refresh fills the table. Every statement is safe to re-run.

ALTER TABLE {db}.flow_health
    ADD COLUMN IF NOT EXISTS redis_outages Int64 DEFAULT 0
    COMMENT 'Redis outages the contact policy met in the interval (each shard counts the ones it met); 0 without the policy'
    AFTER state_bytes;

ALTER TABLE {db}.flow_health
    ADD COLUMN IF NOT EXISTS decisions_waiting Int64 DEFAULT 0
    COMMENT 'intervention candidates due and waiting for Redis, as of each shard''s last report; 0 without the policy'
    AFTER redis_outages;

DROP VIEW IF EXISTS {db}.flow_health_hour_mv SYNC;

DROP TABLE IF EXISTS {db}.flow_health_hour SYNC;

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
    state_bytes_max           Int64,
    redis_outages             Int64,
    decisions_waiting_max     Int64 COMMENT 'highest decisions_waiting of the intervals'
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
    max(open_instances) AS open_instances_max, max(state_bytes) AS state_bytes_max,
    sum(redis_outages) AS redis_outages, max(decisions_waiting) AS decisions_waiting_max
FROM {db}.flow_health FINAL
GROUP BY hour, run_id, worker;
