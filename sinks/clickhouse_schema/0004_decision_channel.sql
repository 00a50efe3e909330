-- decisions made by the contact policy (issue 5) say where a sent intervention goes: the
-- contact channel and, for the offline tier, the relationship manager. Rows written before
-- (or by a flow without the policy) have both empty. ADD COLUMN IF NOT EXISTS makes each
-- statement safe to re-run.

ALTER TABLE {db}.decisions
    ADD COLUMN IF NOT EXISTS channel LowCardinality(String) DEFAULT ''
    COMMENT 'contact channel of a sent decision (push, chat, voice_bot, phone, video, rm_task); empty without the policy'
    AFTER tier;

ALTER TABLE {db}.decisions
    ADD COLUMN IF NOT EXISTS rm_id String DEFAULT ''
    COMMENT 'relationship manager of an offline decision, else empty'
    AFTER channel;
