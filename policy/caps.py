"""Frequency caps and cooldowns shared by every flow process, enforced atomically in Redis.

Per client one key, with the client id as Redis Cluster hash tag:
``ato:sent:{<client_id>}``, a sorted set with one member per sent intervention,
``<journey>`` U+001F ``<intervention id>``, scored by the epoch ms it was sent at (event time).
A candidate decided at ``now`` counts only the sends at or before ``now``: the caps count
them in the client's local day and ISO week, the cooldown looks for one of the same journey
less than the cooldown before ``now``. Sends later in event time (a replay after a restart
re-deciding older candidates) never change a decision, and the member doubles as the
idempotency record, so a replayed id never counts twice.

One Lua script checks the cooldown and both caps and records the send in one step, so two
processes deciding for the same client at once never exceed a cap. A batch costs one
pipeline of EVALSHA calls (one round trip). Sends older than the retention (a week plus a
day, or the longest cooldown) are pruned on each call, and the key expires that long (wall
clock) after its last write.
"""

from collections.abc import Sequence

import redis

from policy.localtime import periods
from policy.profiles import Profile, zone
from policy.routing import Route
from policy.rules import SENT, SUPPRESSED, Candidate, Decision, decision, precheck
from policy.scripts import Script
from policy.settings import Policy

RETAIN_MS = 8 * 86_400_000  # a week plus a day of local-time slack
SENT_PREFIX = "ato:sent:"
SEPARATOR = "\x1f"  # between journey and intervention id in a member

# KEYS: sent zset. ARGV: member (journey SEP id), journey SEP, now, day_start, week_start,
# per_day, per_week, cooldown_ms, prune_before, ttl_ms.
# Returns {code, day count, week count}; code 0 sent, 1 already sent (replay), 2 cooldown,
# 3 daily cap, 4 weekly cap.
LUA = """
local sent = KEYS[1]
if redis.call('ZSCORE', sent, ARGV[1]) then return {1, -1, -1} end
redis.call('ZREMRANGEBYSCORE', sent, '-inf', '(' .. ARGV[9])
local now = tonumber(ARGV[3])
local cooldown = tonumber(ARGV[8])
if cooldown > 0 then
  local recent = redis.call('ZRANGEBYSCORE', sent, '(' .. (now - cooldown), now)
  local prefix = ARGV[2]
  for _, member in ipairs(recent) do
    if string.sub(member, 1, #prefix) == prefix then return {2, -1, -1} end
  end
end
local day = redis.call('ZCOUNT', sent, ARGV[4], now)
if day >= tonumber(ARGV[6]) then return {3, day, -1} end
local week = redis.call('ZCOUNT', sent, ARGV[5], now)
if week >= tonumber(ARGV[7]) then return {4, day, week} end
redis.call('ZADD', sent, now, ARGV[1])
redis.call('PEXPIRE', sent, ARGV[10])
return {0, day + 1, week + 1}
"""
_REASONS = {2: "cooldown", 3: "daily_cap", 4: "weekly_cap"}


def sent_key(client_id: str) -> str:
    """The client's sorted set of sent intervention ids."""
    return f"{SENT_PREFIX}{{{client_id}}}"


class CapStore:
    """Applies :func:`policy.rules.decide` to batches, with the send history in Redis.

    The script is loaded at the first call that needs it.
    """

    def __init__(self, client: "redis.Redis", policy: Policy) -> None:
        self.client = client
        self.policy = policy
        longest = max([policy.cooldown_ms, *policy.cooldown_journeys.values()])
        self.ttl_ms = max(RETAIN_MS, longest)
        self.script = Script(client, LUA)
        self.stats = self.script.stats

    def decide(self, items: Sequence[tuple[Candidate, Profile]]) -> list[Decision]:
        """Decisions for ``items`` in order; every one that passes the pure checks costs one
        EVALSHA, all in one pipeline. Sent ones are recorded (idempotent per id)."""
        out: list[Decision | None] = []
        pending: list[tuple[int, Candidate, Profile, Route, list[str]]] = []
        for i, (c, profile) in enumerate(items):
            r, early = precheck(c, profile, self.policy)
            out.append(early)
            if early is None:
                pending.append((i, c, profile, r, self._args(c, profile)))
        replies = self.script.run([(args[:1], args[1:]) for *_, args in pending])
        for (i, c, profile, r, _), reply in zip(pending, replies, strict=True):
            code = int(reply[0])
            if code in _REASONS:
                out[i] = decision(c, profile, r, SUPPRESSED, _REASONS[code])
            else:
                out[i] = decision(c, profile, r, SENT, replayed=code == 1)
        return [d for d in out if d is not None]

    def _args(self, c: Candidate, profile: Profile) -> list[str]:
        p = periods(c.now_ms, zone(profile.tz))
        values = (
            f"{c.journey}{SEPARATOR}{c.intervention_id}",
            f"{c.journey}{SEPARATOR}",
            c.now_ms,
            p.day_start,
            p.week_start,
            self.policy.per_day,
            self.policy.per_week,
            self.policy.cooldown_for(c.journey),
            c.now_ms - self.ttl_ms,
            self.ttl_ms,
        )
        return [sent_key(c.client_id), *map(str, values)]
