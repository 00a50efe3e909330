"""Frequency caps and cooldowns shared by every flow process, enforced atomically in Redis.

Per client, two keys with the client id as Redis Cluster hash tag (one slot, one script):

- ``ato:sent:{<client_id>}``: sorted set, member = intervention id, score = the epoch ms it
  was sent at (event time). Caps count members in the client's local day and ISO week;
  the member doubles as the idempotency record, so a replayed id never counts twice.
- ``ato:cooldown:{<client_id>}``: hash, field = journey, value = epoch ms of its last send.

One Lua script checks the cooldown and both caps and records the send in one step, so two
processes deciding for the same client at once never exceed a cap. A batch costs one
pipeline of EVALSHA calls (one round trip). Sends older than ``RETAIN_MS`` (event time) are
pruned on each call; both keys expire ``max(RETAIN_MS, longest cooldown)`` (wall clock)
after their last write.
"""

from collections.abc import Sequence

import redis
from redis.exceptions import NoScriptError

from policy.localtime import periods
from policy.profiles import Profile, zone
from policy.routing import Route
from policy.rules import SENT, SUPPRESSED, Candidate, Decision, decision, precheck
from policy.settings import Policy

RETAIN_MS = 8 * 86_400_000  # a week plus a day of local-time slack
SENT_PREFIX = "ato:sent:"
COOLDOWN_PREFIX = "ato:cooldown:"

# KEYS: sent zset, cooldown hash. ARGV: id, journey, now, day_start, day_end, week_start,
# week_end, per_day, per_week, cooldown_ms, prune_before, ttl_ms.
# Returns {code, day count, week count}; code 0 sent, 1 already sent (replay), 2 cooldown,
# 3 daily cap, 4 weekly cap.
LUA = """
local sent, cool = KEYS[1], KEYS[2]
if redis.call('ZSCORE', sent, ARGV[1]) then return {1, -1, -1} end
redis.call('ZREMRANGEBYSCORE', sent, '-inf', '(' .. ARGV[11])
local now = tonumber(ARGV[3])
local last = redis.call('HGET', cool, ARGV[2])
if last and math.abs(now - tonumber(last)) < tonumber(ARGV[10]) then return {2, -1, -1} end
local day = redis.call('ZCOUNT', sent, ARGV[4], '(' .. ARGV[5])
if day >= tonumber(ARGV[8]) then return {3, day, -1} end
local week = redis.call('ZCOUNT', sent, ARGV[6], '(' .. ARGV[7])
if week >= tonumber(ARGV[9]) then return {4, day, week} end
redis.call('ZADD', sent, ARGV[3], ARGV[1])
if not last or now > tonumber(last) then redis.call('HSET', cool, ARGV[2], ARGV[3]) end
redis.call('PEXPIRE', sent, ARGV[12])
redis.call('PEXPIRE', cool, ARGV[12])
return {0, day + 1, week + 1}
"""
_REASONS = {2: "cooldown", 3: "daily_cap", 4: "weekly_cap"}


def sent_key(client_id: str) -> str:
    """The client's sorted set of sent intervention ids."""
    return f"{SENT_PREFIX}{{{client_id}}}"


def cooldown_key(client_id: str) -> str:
    """The client's hash of last-sent times per journey."""
    return f"{COOLDOWN_PREFIX}{{{client_id}}}"


class CapStore:
    """Applies :func:`policy.rules.decide` to batches, with the send history in Redis.

    Loading the script on construction is also the connectivity check.
    """

    def __init__(self, client: "redis.Redis", policy: Policy) -> None:
        self.client = client
        self.policy = policy
        longest = max([policy.cooldown_ms, *policy.cooldown_journeys.values()])
        self.ttl_ms = max(RETAIN_MS, longest)
        self.sha = str(client.script_load(LUA))
        self.stats = {"round_trips": 0, "script_reloads": 0}

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
        replies = self._run([args for *_, args in pending])
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
            c.intervention_id,
            c.journey,
            c.now_ms,
            p.day_start,
            p.day_end,
            p.week_start,
            p.week_end,
            self.policy.per_day,
            self.policy.per_week,
            self.policy.cooldown_for(c.journey),
            c.now_ms - RETAIN_MS,
            self.ttl_ms,
        )
        return [sent_key(c.client_id), cooldown_key(c.client_id), *map(str, values)]

    def _run(self, calls: list[list[str]]) -> list[list[int]]:
        """One pipeline of EVALSHA; calls that met NOSCRIPT (Redis restarted or flushed)
        run again once after reloading the script."""
        if not calls:
            return []
        replies = self._pipeline(calls)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            self.stats["script_reloads"] += 1
            self.sha = str(self.client.script_load(LUA))
            for i, reply in zip(missing, self._pipeline([calls[i] for i in missing]), strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _pipeline(self, calls: list[list[str]]) -> list:
        with self.client.pipeline(transaction=False) as pipe:
            for args in calls:
                pipe.evalsha(self.sha, 2, *args)
            replies = pipe.execute(raise_on_error=False)
        self.stats["round_trips"] += 1
        return list(replies)
