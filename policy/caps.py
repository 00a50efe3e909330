"""Frequency caps and cooldowns shared by every flow process, enforced atomically in Redis.

Per client one key (the braces are a Redis Cluster hash tag, kept for a future cluster mode):
``ato:sent:{<client_id>}``, a sorted set with one member per sent intervention,
``<journey>`` U+001F ``<intervention id>``, scored by the epoch ms it was sent at (event time).
A candidate decided at ``now`` counts only the sends at or before ``now``: the caps count
them in the client's local day and ISO week, the cooldown looks for one of the same journey
less than the cooldown before ``now``. Sends later in event time (a replay after a restart
re-deciding older candidates) never change a decision, and the member doubles as the
idempotency record, so a replayed id never counts twice.

One Lua script checks the cooldown and both caps and records the send in one step, so two
processes deciding for the same client at once never exceed a cap. It takes up to ``chunk``
candidates per call, in order; a batch costs one pipeline of such calls (one round trip).
The calls touch many clients' keys, so this needs a single Redis, not a Redis Cluster.
Sends older than the retention (a week plus a day, or the longest cooldown) are pruned on
each call, and the key expires that long (wall clock) after its last write.
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

# KEYS: the candidates' sent sets, in decision order. ARGV[1]: retention and expiry (ms);
# then 8 per candidate: member (journey SEP id), journey SEP, now, day_start, week_start,
# per_day, per_week, cooldown_ms. Returns one code per candidate: 0 sent, 1 already sent
# (replay), 2 cooldown, 3 daily cap, 4 weekly cap.
LUA = """
local ttl = tonumber(ARGV[1])
local out = {}
for i, sent in ipairs(KEYS) do
  local b = 1 + (i - 1) * 8
  local member, prefix, now = ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3])
  local code = 0
  if redis.call('ZSCORE', sent, member) then
    code = 1
  else
    redis.call('ZREMRANGEBYSCORE', sent, '-inf', '(' .. (now - ttl))
    local cooldown = tonumber(ARGV[b + 8])
    if cooldown > 0 then
      for _, m in ipairs(redis.call('ZRANGEBYSCORE', sent, '(' .. (now - cooldown), now)) do
        if string.sub(m, 1, #prefix) == prefix then code = 2 break end
      end
    end
    if code == 0 and redis.call('ZCOUNT', sent, ARGV[b + 4], now) >= tonumber(ARGV[b + 6]) then
      code = 3
    end
    if code == 0 and redis.call('ZCOUNT', sent, ARGV[b + 5], now) >= tonumber(ARGV[b + 7]) then
      code = 4
    end
    if code == 0 then
      redis.call('ZADD', sent, now, member)
      redis.call('PEXPIRE', sent, ttl)
    end
  end
  out[i] = code
end
return out
"""
_REASONS = {2: "cooldown", 3: "daily_cap", 4: "weekly_cap"}


def sent_key(client_id: str) -> str:
    """The client's sorted set of sent intervention ids."""
    return f"{SENT_PREFIX}{{{client_id}}}"


class CapStore:
    """Applies :func:`policy.rules.decide` to batches, with the send history in Redis.

    The script is loaded at the first call that needs it.
    """

    def __init__(self, client: "redis.Redis", policy: Policy, chunk: int = 500) -> None:
        self.client = client
        self.policy = policy
        self.chunk = chunk
        longest = max([policy.cooldown_ms, *policy.cooldown_journeys.values()])
        self.ttl_ms = max(RETAIN_MS, longest)
        self.script = Script(client, LUA)
        self.stats = self.script.stats

    def decide(
        self,
        items: Sequence[tuple[Candidate, Profile]],
        prechecked: Sequence[tuple[Route, Decision | None]] | None = None,
    ) -> list[Decision]:
        """Decisions for ``items`` in order. Those that pass the pure checks (``prechecked``:
        :func:`policy.rules.precheck` of each item, when the caller has it) go through the
        script ``chunk`` at a time, all calls in one pipeline. Sent ones are recorded
        (idempotent per id)."""
        if prechecked is None:
            prechecked = [precheck(c, profile, self.policy) for c, profile in items]
        out: list[Decision | None] = []
        pending: list[tuple[int, Candidate, Profile, Route]] = []
        for i, ((c, profile), (r, early)) in enumerate(zip(items, prechecked, strict=True)):
            out.append(early)
            if early is None:
                pending.append((i, c, profile, r))
        calls = []
        for start in range(0, len(pending), self.chunk):
            keys: list[str | bytes] = []
            args: list[str | bytes | int] = [self.ttl_ms]
            for _, c, profile, _ in pending[start : start + self.chunk]:
                keys.append(sent_key(c.client_id))
                args += self._args(c, profile)
            calls.append((keys, args))
        codes = [int(code) for reply in self.script.run(calls) for code in reply]
        for (i, c, profile, r), code in zip(pending, codes, strict=True):
            if code in _REASONS:
                out[i] = decision(c, profile, r, SUPPRESSED, _REASONS[code])
            else:
                out[i] = decision(c, profile, r, SENT, replayed=code == 1)
        return [d for d in out if d is not None]

    def _args(self, c: Candidate, profile: Profile) -> tuple[str | int, ...]:
        p = periods(c.now_ms, zone(profile.tz))
        return (
            f"{c.journey}{SEPARATOR}{c.intervention_id}",
            f"{c.journey}{SEPARATOR}",
            c.now_ms,
            p.day_start,
            p.week_start,
            self.policy.per_day,
            self.policy.per_week,
            self.policy.cooldown_for(c.journey),
        )
