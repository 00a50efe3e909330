-- The comment analysts read on funnel_minute.advanced (DESCRIBE, system.columns) said "moves
-- to this (non-terminal) step"; what the column counts, as docs/analytics.md says, is every
-- event that put an open instance on a non-terminal step: moves forward, back-steps and an
-- event of the step it is already on. Metadata only; safe to re-run.

ALTER TABLE {db}.funnel_minute
    COMMENT COLUMN advanced 'events that put an open instance on a non-terminal step: moves forward, back-steps, and an event of the step it is already on';
