-- funnel_minute without the shard column: the flow now sums every shard's counts before it
-- writes a minute (one row per key instead of one per key and shard). Rows written under
-- 0001 are summed over their shards into the new table, then the old table is dropped.
-- Rename, create, copy and drop run in this order once (the migration is recorded after its
-- last statement); funnel_hour_mv reads funnel_minute by name at each refresh.

RENAME TABLE {db}.funnel_minute TO {db}.funnel_minute_by_shard;

CREATE TABLE {db}.funnel_minute
(
    minute      DateTime64(3, 'UTC') COMMENT 'start of the event-time minute',
    journey     LowCardinality(String) COMMENT 'instance the event counted in; empty: none',
    step        LowCardinality(String) COMMENT 'its step after the event',
    channel     LowCardinality(String),
    segment     LowCardinality(String) COMMENT 'attrs.segment of the event; unknown when absent',
    events      Int64 COMMENT 'events applied to the step',
    started     Int64 COMMENT 'journey instances started',
    advanced    Int64 COMMENT 'moves of an open instance to this (non-terminal) step',
    completed   Int64 COMMENT 'instances that reached a success step',
    abandoned   Int64 COMMENT 'instances ended without success: failure step, or stall window lapsed'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (journey, step, minute, channel, segment)
COMMENT 'funnel counts per event-time minute over all shards; key (minute, journey, step, channel, segment)';

INSERT INTO {db}.funnel_minute
SELECT
    minute, journey, step, channel, segment,
    sum(events), sum(started), sum(advanced), sum(completed), sum(abandoned)
FROM {db}.funnel_minute_by_shard FINAL
GROUP BY minute, journey, step, channel, segment;

DROP TABLE {db}.funnel_minute_by_shard;
