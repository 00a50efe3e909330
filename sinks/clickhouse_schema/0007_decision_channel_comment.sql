-- The comment on decisions.channel said "contact channel of a sent decision", but every
-- decision of the contact policy carries its route: a deferred or suppressed one names the
-- tier, channel and RM it would have gone to (so suppressions can be counted by channel).
-- Metadata only; safe to re-run.

ALTER TABLE {db}.decisions
    COMMENT COLUMN channel 'contact channel the decision routed to (push, chat, voice_bot, phone, video, rm_task): where a sent one goes, where a deferred or suppressed one would have gone; empty without the policy';

ALTER TABLE {db}.decisions
    COMMENT COLUMN rm_id 'relationship manager of a decision routed to the offline tier, else empty';
