"""The contact-policy step: every stall becomes sent, deferred or suppressed, in event time.

One :class:`PolicyLogic` per shard key, right after the shard step. Each shard output brings
new stall records (candidates), outcome records (the client moved on after a stall) and the
shard's watermark. A candidate is decided at event time ``due``: its stall deadline at
first, the end of the client's quiet hours after a deferral. It is decided once the shard's
watermark has reached ``due``, so every event before ``due`` has been applied and every
outcome before it seen: a progress, completion or failure before ``due`` makes it
``resumed``. Candidates due together are decided in (due, priority from highest, id) order,
and the caps count every send of the day and week, before or after ``due``
(``policy.caps``), so no ordering of sends lets a cap be exceeded, and a replay decides the
same way. Their cap
scripts go out in one call and the replies are read in the next (:class:`Capping`), so the
flow works while Redis runs them; a call reads the last call's replies before it sends its
own scripts, which keeps the order. The profile lookups of the candidates due go out before
that read, so Redis answers them meanwhile.

Profiles and caps need Redis. When Redis does not answer, the candidates wait in the step
(and in its snapshot) and are decided, as of their own ``due``, once it answers: an outage
delays decisions, never changes them, and nothing goes out without passing the caps. While
more than ``max_waiting`` wait, or when input has ended, the step retries instead of going
on, for at most ``outage_wait_s``, then fails with an error.
"""

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import redis
from bytewax.operators import StatefulBatchLogic

from ato.catalog import CHANNELS, TIERS, Catalog
from operators.batches import InterventionBatch, ShardOutput
from operators.decode import wall_ms
from operators.interventions import InterventionBuilder, Routing
from policy.backoff import RedisBackoff
from policy.batch_checks import CAP_REASON, PASS, QUIET, BatchChecks, Checked, ProfileTable
from policy.caps import CapCodes, CapStore
from policy.connection import is_transient
from policy.decision_columns import CHANNEL_NAMES, SEGMENT_NAMES, TIER_NAMES, DecisionColumns
from policy.exceptions import PolicyError
from policy.live_state import where
from policy.profiles import ProfileLookup, ProfileStore, ProfileValues
from policy.settings import Policy
from state.base import Records
from state.layout import (
    O_ATTEMPT,
    O_DEADLINE,
    O_JOURNEY,
    O_OUTCOME,
    O_RESOLVE_CHANNEL,
    O_RESOLVED_AT,
    O_STEP,
    OUTCOME_LAPSED,
)

log = logging.getLogger(__name__)
RETRY_MS = 1_000  # wall-clock pause between attempts while Redis does not answer
# a restart resumes from one of the last this many snapshots (Bytewax's resume epoch is the
# slowest worker's: its epochs trail the others' by one at most)
SAFE_SNAPSHOTS = 3
NEVER = np.iinfo(np.int64).max  # no progress seen after the stall
_OFFLINE = TIERS.index("offline")


@dataclass(frozen=True)
class PolicyContext:
    """What every policy step of a flow shares."""

    catalog: Catalog
    policy: Policy
    client: "redis.Redis"
    profile_ttl_s: float = 60.0
    profile_cache: int = 100_000  # cached profiles per shard
    max_waiting: int = 100_000
    outage_wait_s: float = 300.0
    now_ms: Callable[[], int] = wall_ms
    sleep: Callable[[float], None] = time.sleep
    # when to try a Redis that does not answer again: one schedule for every shard
    backoff: RedisBackoff = field(default_factory=RedisBackoff)


@dataclass(frozen=True)
class Held:
    """Candidates not decided for good yet, as columns aligned with ``records``."""

    records: Records
    ids: np.ndarray  # uint8 [n, 36]: intervention ids
    due: np.ndarray  # int64: event time of the next decision
    resolved: np.ndarray  # int64: earliest progress after the stall seen, NEVER if none

    def __len__(self) -> int:
        return len(self.records)

    @staticmethod
    def empty() -> "Held":
        """No candidates."""
        no = np.empty(0, np.int64)
        return Held(Records.empty(), np.empty((0, 36), np.uint8), no, no.copy())

    @staticmethod
    def concat(parts: "list[Held]") -> "Held":
        """The candidates of ``parts``, in order."""
        parts = [p for p in parts if len(p)]
        if len(parts) <= 1:
            return parts[0] if parts else Held.empty()
        return Held(
            Records.concat([p.records for p in parts]),
            np.concatenate([p.ids for p in parts]),
            np.concatenate([p.due for p in parts]),
            np.concatenate([p.resolved for p in parts]),
        )

    def take(self, rows: np.ndarray) -> "Held":
        """The candidates at ``rows`` (indices or a mask)."""
        index = np.flatnonzero(rows) if rows.dtype == np.bool_ else rows
        return Held(
            self.records.take(index), self.ids[index], self.due[index], self.resolved[index]
        )

    def resumed(self) -> np.ndarray:
        """Did the client move on before the decision time ``due``?"""
        return self.resolved < self.due


@dataclass(frozen=True)
class Capping:
    """Candidates to decide for good once their cap codes are read, in (due, priority from
    highest, id) order."""

    todo: Held
    profile: np.ndarray  # ProfileTable codes, aligned with todo
    checked: Checked  # checks 1-4; rows ``passed`` get their reason from the codes
    passed: np.ndarray  # rows of todo whose cap scripts went out, in order
    codes: CapCodes


class PolicyLogic(StatefulBatchLogic[ShardOutput, ShardOutput, dict[str, Any]]):
    """Contact-policy decisions of one shard's stalls inside a ``stateful_batch`` step."""

    def __init__(self, ctx: PolicyContext, resume: dict[str, Any] | None) -> None:
        self.ctx = ctx
        self.builder = InterventionBuilder(ctx.catalog)
        self.shard = resume["shard"] if resume is not None else ""
        self.watermark = resume["watermark"] if resume is not None else np.iinfo(np.int64).min
        # the watermarks of the last snapshots: a restart resumes from one of them, so no
        # candidate due at or before the oldest is decided again (see CapStore.send)
        self.snapshot_marks: deque[int] = deque([int(self.watermark)], maxlen=SAFE_SNAPSHOTS)
        self.held = resume["held"] if resume is not None else Held.empty()
        self.profiles = ProfileStore(
            ctx.client, ctx.profile_ttl_s, max_entries=max(1, ctx.profile_cache)
        )
        self.caps: CapStore | None = None  # loads its script on first use
        self.table = ProfileTable(max(1, ctx.profile_cache))
        self.checks = BatchChecks(ctx.policy, ctx.catalog, self.table)
        # channel codes (the catalog's order) on which an event after the stall is a resume
        self.resume_channels = np.array(
            [CHANNELS.index(c) for c in ctx.policy.resume_channels], np.int64
        )
        self.capping: Capping | None = None  # cap scripts sent, replies not read yet
        self.last: ShardOutput | None = None  # the latest output passed on
        self.outage_since_ms: int | None = None
        self.stats = {"decided": 0, "sent": 0, "deferred": 0, "suppressed": 0, "outages": 0}
        self.outages_reported = 0  # of stats["outages"], those already on an output

    # ------------------------------------------------------------------ Bytewax hooks

    def on_batch(self, values: list[ShardOutput]) -> tuple[list[ShardOutput], bool]:
        """Take each shard output's stalls and outcomes, decide what is due, pass it on."""
        outputs = []
        for out in values:
            self.shard = out.shard
            self.watermark = max(self.watermark, out.watermark)
            self._take(out)
            crowded = self._waiting() > self.ctx.max_waiting
            interventions, decisions = self._decide(wait=crowded or out.final)
            self.last = out
            outputs.append(self._counted(out, interventions, decisions))
        return outputs, self.RETAIN

    def on_notify(self) -> tuple[list[ShardOutput], bool]:
        """Read cap codes sent in the last call; retry decisions waiting for Redis."""
        if self.last is None or not (self.capping is not None or self._waiting()):
            return [], self.RETAIN
        return self._quiet(*self._decide(wait=False)), self.RETAIN

    def on_eof(self) -> tuple[list[ShardOutput], bool]:
        """Input ended, every decision is made (the last batch waited for Redis): close the
        process's idle Redis connections (the shards' final live-state writes came before). A
        later use would reconnect. Candidates deferred past the last watermark stay undecided (their
        deferral was emitted); they are logged, and a run with recovery keeps them."""
        outputs = self._quiet(*self._decide(wait=True)) if self.capping is not None else []
        # idle connections only: the other worker threads of the process share the pool, and
        # closing one they are using would look to them like Redis going away
        self.ctx.client.connection_pool.disconnect(inuse_connections=False)
        if len(self.held):
            log.info(
                "contact policy, shard %s: %d deferred candidates are due after the last"
                " event (watermark %d); a run with recovery decides them when it resumes",
                self.shard, len(self.held), self.watermark,
            )  # fmt: skip
        return outputs, self.RETAIN

    def notify_at(self) -> datetime | None:
        """At once while cap codes are on their way; soon while decisions wait for Redis."""
        if self.capping is not None:
            return datetime.now(UTC)
        if not self._waiting():
            return None
        return datetime.now(UTC) + timedelta(milliseconds=RETRY_MS)

    def snapshot(self) -> dict[str, Any]:
        """The candidates not decided for good (deferred, waiting for Redis, or waiting for
        their cap codes: a resumed run decides those again, and the caps find any send a
        script recorded)."""
        held = self.held
        if self.capping is not None:
            held = Held.concat([held, self.capping.todo])
        self.snapshot_marks.append(int(self.watermark))
        return {"shard": self.shard, "watermark": self.watermark, "held": held}

    def _quiet(
        self, interventions: InterventionBatch, decisions: DecisionColumns
    ) -> list[ShardOutput]:
        """An output carrying only decisions (none without any), like the latest one."""
        if not len(decisions) or self.last is None:
            return []
        quiet = replace(
            self.last, stalls=Records.empty(), stall_ids=None, outcomes=Records.empty(),
            outcome_ids=None,
            funnel=None, late=None, late_count=0, applied=0, latency_ms=None, final=False,
            emitted_at_ms=self.ctx.now_ms(), redis_outages=0,
        )  # fmt: skip
        return [self._counted(quiet, interventions, decisions)]

    def _counted(
        self, out: ShardOutput, interventions: InterventionBatch, decisions: DecisionColumns
    ) -> ShardOutput:
        """``out`` with the decisions, and the Redis outages and waiting candidates to count."""
        outages = self.stats["outages"] - self.outages_reported
        self.outages_reported = self.stats["outages"]
        return replace(
            out, interventions=interventions, decisions=decisions,
            redis_outages=out.redis_outages + outages,
            redis_waiting=self._waiting(),
        )  # fmt: skip

    # ------------------------------------------------------------------ work

    def _waiting(self) -> int:
        """Candidates due now: only more than zero between calls while Redis is away."""
        return int((self.held.due <= self.watermark).sum())

    def _take(self, out: ShardOutput) -> None:
        """New candidates from the stalls, then the time the client moved on from the
        outcomes (an outcome can come in the same output as its stall). Kept, not compared
        yet: a deferral can still move ``due`` later."""
        held = self.held
        stalls = out.stalls
        if len(stalls):
            ids = out.stall_ids if out.stall_ids is not None else self.builder.ids(stalls)
            never = np.full(len(stalls), NEVER, np.int64)
            held = Held.concat([held, Held(stalls, ids, stalls.ints[O_DEADLINE].copy(), never)])
        outcomes = out.outcomes
        if len(outcomes) and len(held):
            ids = out.outcome_ids if out.outcome_ids is not None else self.builder.ids(outcomes)
            moved = (outcomes.ints[O_OUTCOME] != OUTCOME_LAPSED) & np.isin(
                outcomes.ints[O_RESOLVE_CHANNEL], self.resume_channels
            )
            moved_ids = ids[moved].view("S36").ravel().tolist()
            at_list = outcomes.ints[O_RESOLVED_AT][moved].tolist()
            resolved = dict(zip(moved_ids, at_list, strict=True))
            if resolved:
                held_ids = held.ids.view("S36").ravel()
                at = np.array([resolved.get(i, NEVER) for i in held_ids], np.int64)
                held = replace(held, resolved=np.minimum(held.resolved, at))
        self.held = held

    def _decide(self, wait: bool) -> tuple[InterventionBatch, DecisionColumns]:
        """Decide every candidate due at the watermark. Their cap scripts go out now and
        their replies are read at the next call (:meth:`_collect`), so the flow works while
        Redis runs them; with ``wait`` they are read at once. When Redis does not answer the
        candidates stay; with ``wait`` this retries until it does or ``outage_wait_s``
        passes. Without ``wait``, while Redis is in a pause (:class:`RedisBackoff`) this
        leaves it alone."""
        due_now = np.flatnonzero(self.held.due <= self.watermark)
        if self.capping is None and not len(due_now):
            return InterventionBatch.empty(), self._no_decisions()  # nothing for Redis
        if not wait and not self.ctx.backoff.may_try(self.ctx.now_ms()):
            return InterventionBatch.empty(), self._no_decisions()
        lookup = self._prefetch(due_now)
        sent, decisions = self._collect()
        known = self._prefetched(lookup)
        due = self.held.due <= self.watermark
        if not due.any():
            return sent, decisions
        todo = self.held.take(due)
        paused_at: int | None = None  # when this call began to wait for Redis
        while True:
            try:
                deferrals, later, capping = self._prepare(todo, known)
                if wait:
                    finals = self._finish(capping)
                break
            except redis.RedisError as exc:
                self._failed(exc, len(todo))
                if not wait:
                    return sent, decisions
                paused_at = self.ctx.now_ms() if paused_at is None else paused_at
                self._pause(len(todo), paused_at)
                known = None
        self._recovered(len(todo))
        self.held = Held.concat([self.held.take(~due), later])
        self._count(deferrals)
        if not wait:
            self.capping = capping
            return sent, DecisionColumns.concat([decisions, deferrals])
        return (
            InterventionBatch.concat([sent, self._sent(capping.todo, finals)]),
            DecisionColumns.concat([decisions, deferrals, finals]),
        )

    def _prefetch(self, due: np.ndarray) -> ProfileLookup | None:
        """The profile lookups of the candidates due now (rows ``due`` of ``held``), sent, so
        that Redis answers them while the last call's cap replies are read; None when there
        are none or Redis fails (then :meth:`_prepare` looks them up itself)."""
        if not len(due):
            return None
        try:
            return self.profiles.prefetch(self.held.records.take(due).client_texts())
        except redis.RedisError:
            return None

    def _prefetched(self, lookup: ProfileLookup | None) -> dict[str, ProfileValues] | None:
        """The profiles of ``lookup``, once read; None when it failed."""
        if lookup is None:
            return None
        try:
            return lookup.finish()
        except redis.RedisError:
            return None

    def _collect(self) -> tuple[InterventionBatch, DecisionColumns]:
        """The decisions whose cap scripts went out in an earlier call, once their replies
        are read; when Redis fails meanwhile, their candidates wait again (a script that ran
        recorded its sends, and a retry finds them: ``replayed``)."""
        capping, self.capping = self.capping, None
        if capping is None:
            return InterventionBatch.empty(), self._no_decisions()
        try:
            finals = self._finish(capping)
        except redis.RedisError as exc:
            capping.codes.drop()
            self.held = Held.concat([self.held, capping.todo])
            self._failed(exc, len(self.held))
            return InterventionBatch.empty(), self._no_decisions()
        self._recovered(len(capping.todo))
        return self._sent(capping.todo, finals), finals

    def _failed(self, exc: redis.RedisError, count: int) -> None:
        """A transient Redis failure is an outage; any other is fatal."""
        if not is_transient(exc):
            msg = f"contact policy: Redis at {where(self.ctx.client)}: {exc}"
            raise PolicyError(msg) from exc
        self._outage(exc, count)

    def _no_decisions(self) -> DecisionColumns:
        return DecisionColumns.empty(self.builder.journey_names, self.builder.step_names)

    def _count(self, decided: DecisionColumns, final: bool = False) -> None:
        for outcome, n in decided.counts().items():
            self.stats[outcome] += n
        if final:
            self.stats["decided"] += len(decided)

    def _prepare(
        self, todo: Held, known: dict[str, ProfileValues] | None = None
    ) -> tuple[DecisionColumns, Held, "Capping"]:
        """Checks of ``todo`` and the cap scripts of those that pass them, sent (raises
        RedisError; then nothing has changed but sends recorded in Redis, which a retry
        finds again).

        Deferrals come first: a candidate whose quiet hours end at or before the watermark
        is deferred and then decided again at their end, in the same call. The rest go to
        the caps in (due, priority from highest, id) order, so sends count towards caps in
        event-time order, and at the same due the cap's last slot goes to the most urgent (the
        next call's scripts go out only after these replied). ``known``: profiles just read
        (:meth:`_prefetch`). Returns (deferral decisions, candidates deferred past the
        watermark, the candidates decided for good, waiting for their cap codes).
        """
        clients = todo.records.client_texts()
        found = self.profiles.values_many(clients, known)
        profile = self.table.encode([found[c] for c in clients])
        if self.caps is None:
            self.caps = CapStore(self.ctx.client, self.ctx.policy)
        checked = self._check(todo, profile)
        deferrals = [self._no_decisions()]
        later: list[Held] = []
        while True:
            rows = checked.reason == QUIET
            if not rows.any():
                break
            deferrals.append(
                self._decision_list(todo.take(rows), profile[rows], checked.take(rows))
            )
            moved = replace(todo.take(rows), due=checked.recheck[rows])
            soon = moved.due <= self.watermark
            later.append(moved.take(~soon))
            again = moved.take(soon)  # quiet hours already over: decide now, as of their end
            again_profile = profile[rows][soon]
            todo = Held.concat([todo.take(~rows), again])
            profile = np.concatenate([profile[~rows], again_profile])
            checked = Checked.concat([checked.take(~rows), self._check(again, again_profile)])
        # due first; at the same due (deferrals ending together) the higher priority first,
        # as it is the one a cap's last slot should go to
        order = np.lexsort((todo.ids.view("S36").ravel(), -checked.priority, todo.due))
        todo, profile, checked = todo.take(order), profile[order], checked.take(order)
        passed = np.flatnonzero(checked.reason == PASS)
        codes = (
            self._send_caps(todo.take(passed), profile[passed]) if len(passed) else CapCodes(None)
        )
        capping = Capping(todo, profile, checked, passed, codes)
        return DecisionColumns.concat(deferrals), Held.concat(later), capping

    def _finish(self, capping: "Capping") -> DecisionColumns:
        """The final decisions of ``capping.todo``, once its cap codes are read (raises
        RedisError)."""
        todo, checked, passed = capping.todo, capping.checked, capping.passed
        codes = np.array(capping.codes.read(), np.int64)
        replayed = np.zeros(len(todo), bool)
        if len(passed):
            reason = checked.reason.copy()
            reason[passed] = CAP_REASON[codes]
            replayed[passed] = codes == 1
            checked = replace(checked, reason=reason)
        finals = self._decision_list(todo, capping.profile, checked, replayed)
        self._count(finals, final=True)
        return finals

    def _check(self, todo: Held, profile: np.ndarray) -> Checked:
        """Checks 1-4 of the candidates of ``todo`` as of their ``due``."""
        ints = todo.records.ints
        return self.checks.check(
            ints[O_JOURNEY], ints[O_STEP], ints[O_ATTEMPT], ints[O_DEADLINE], todo.due,
            self.builder.priorities(todo.records), todo.resumed(), profile,
        )  # fmt: skip

    def _send_caps(self, todo: Held, profile: np.ndarray) -> CapCodes:
        """The cap scripts of the candidates (in order; they record the sends), sent."""
        assert self.caps is not None
        j = todo.records.ints[O_JOURNEY]
        day_start, day_end, week_start, week_end = self.checks.period_bounds(todo.due, profile)
        rows = self.caps.rows(
            todo.records.client_texts(), self.builder.journey_names[j].tolist(),
            todo.ids.view("S36").ravel().astype("U36").tolist(), todo.due.tolist(),
            day_start.tolist(), day_end.tolist(), week_start.tolist(), week_end.tolist(),
            self.checks.cooldown[j].tolist(),
        )  # fmt: skip
        return self.caps.send(rows, safe_ms=self.snapshot_marks[0])

    def _decision_list(
        self,
        todo: Held,
        profile: np.ndarray,
        checked: Checked,
        replayed: np.ndarray | None = None,
    ) -> DecisionColumns:
        """The decisions of ``todo`` as ``checked`` (its reasons final), decided at ``due``."""
        ints = todo.records.ints
        reason = checked.reason
        offline = (checked.tier == _OFFLINE).tolist()
        rm_ids = self.table.rm_ids(profile)
        n = len(todo)
        return DecisionColumns(
            self.builder.journey_names, self.builder.step_names, todo.ids,
            todo.records.client_texts(), ints[O_JOURNEY], ints[O_STEP], ints[O_ATTEMPT],
            self.table.arrays()[0][profile],
            np.where(reason == PASS, 0, np.where(reason == QUIET, 1, 2)), reason,
            checked.tier, checked.channel, checked.priority,
            [rm if off else "" for rm, off in zip(rm_ids, offline, strict=True)],
            todo.due, checked.recheck,
            np.zeros(n, bool) if replayed is None else replayed,
        )  # fmt: skip

    def _sent(self, decided: Held, decisions: DecisionColumns) -> InterventionBatch:
        """Intervention documents of the sent candidates, routed as decided."""
        rows = decisions.sent_rows()
        if not len(rows):
            return InterventionBatch.empty()
        picked = decided.take(rows)
        routing = Routing(
            tier=TIER_NAMES[decisions.tier[rows]].tolist(),
            channel=CHANNEL_NAMES[decisions.channel[rows]].tolist(),
            priority=decisions.priority[rows].tolist(),
            segment=SEGMENT_NAMES[decisions.segment[rows]].tolist(),
            rm_id=[decisions.rm_id[i] for i in rows.tolist()],
        )
        return self.builder.build(picked.records, self.ctx.now_ms(), picked.ids, routing)

    def _outage(self, exc: Exception, count: int) -> None:
        self.ctx.backoff.failed(self.ctx.now_ms())
        if self.outage_since_ms is None:
            self.outage_since_ms = self.ctx.now_ms()
            self.stats["outages"] += 1
            log.warning(
                "contact policy: Redis at %s does not answer (%s); %d decisions wait",
                where(self.ctx.client), exc, count,
            )  # fmt: skip

    def _pause(self, count: int, paused_at: int) -> None:
        """Sleep before the next attempt; fail once the flow has waited (since ``paused_at``,
        not since the outage began: the flow went on without Redis until then) longer than
        allowed."""
        waited_s = (self.ctx.now_ms() - paused_at) / 1000
        if waited_s >= self.ctx.outage_wait_s:
            msg = (
                f"contact policy: waited {waited_s:.0f} s for Redis at {where(self.ctx.client)}"
                f" to answer, with {count} decisions waiting (redis.outage_wait_s ="
                f" {self.ctx.outage_wait_s:g}); a run with recovery resumes them from its"
                " last snapshot"
            )
            raise PolicyError(msg)
        self.ctx.sleep(RETRY_MS / 1000)

    def _recovered(self, count: int) -> None:
        self.ctx.backoff.answered()
        if self.outage_since_ms is not None:
            log.warning("contact policy: Redis answers again; %d waiting decisions made", count)
            self.outage_since_ms = None
