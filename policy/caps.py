"""Frequency caps and cooldowns shared by every flow process, enforced atomically in Redis.

Per client one key (the braces are a Redis Cluster hash tag, kept for a future cluster mode):
``ato:sent:{<client_id>}``, a sorted set with one member per sent intervention,
``<journey>`` U+001F ``<intervention id>``, scored by the epoch ms it was sent at (event time).
A candidate decided at ``now`` counts every send recorded in the client's local day and ISO
week of ``now``, before or after ``now`` in event time, and the cooldown looks for a send of
the same journey less than the cooldown away from ``now`` on either side. So a cap holds
even when sends are recorded out of event-time order: two flows sharing the Redis at
different event times, or a pipeline retried after some of its calls ran. A replay after a
restart decides the same way: an id it decided before is in the set (the member doubles as
the idempotency record: reported sent again, never counted twice), and one it suppressed
meets at least the sends it met then.

One Lua script checks the cooldown and both caps and records the send in one step, so two
processes deciding for the same client at once never exceed a cap. It takes up to ``chunk``
candidates per call, in order; a batch costs one pipeline of such calls (one round trip).
The calls touch many clients' keys, so this needs a single Redis, not a Redis Cluster.
One read of the client's whole set per candidate (it holds a few sends: the caps bound
it, and members older than the retention go) gives the replay check, the cooldown and both
counts; a send prunes members older than the retention (a week plus a day, or the longest
cooldown) when it saw one, and the key expires that long (wall clock) after its last
write. The prune's cutoff stays in the set (:data:`HORIZON`): a candidate that would have
to count sends before it is suppressed as ``history_pruned``, never sent.
"""

from collections.abc import Sequence

import orjson
import redis

from policy.localtime import periods
from policy.profiles import Profile, zone
from policy.routing import Route
from policy.rules import SENT, SUPPRESSED, Candidate, Decision, decision, precheck
from policy.scripts import Call, Script, ScriptReplies
from policy.settings import Policy

RETAIN_MS = 8 * 86_400_000  # a week plus a day of local-time slack
NO_REPLAY = 2**62  # safe_ms of a caller whose decisions are never made again
SENT_PREFIX = "ato:sent:"
SEPARATOR = "\x1f"  # between journey and intervention id in a member

# The member (journey left empty, so no send's) whose score is the newest cutoff a prune used:
# sends before it are gone, so a candidate whose day, week or cooldown reaches back past it
# cannot be counted (a flow more than the retention behind in event time, or a replay after
# a later send pruned the set) and is suppressed, never sent.
HORIZON = SEPARATOR

# ARGV: retention and expiry (ms), per_day, per_week, the latest time a prune may count from
# (ms: see CapStore.send), and a JSON array with one [sent set key,
# member (journey SEP id), journey SEP, now, day_start, day_end, week_start, week_end,
# cooldown_ms] per candidate, in decision order (one JSON argument: the client library's
# per-argument cost stays out of the flow; the keys are not declared, so a single Redis
# only). Returns one code per candidate: 0 sent, 1 already sent (replay), 2 cooldown,
# 3 daily cap, 4 weekly cap, 5 history pruned (its sends before HORIZON are gone).
LUA = """
local ttl, per_day, per_week = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local safe = tonumber(ARGV[4])
local horizon_member = '\\031'
local out = {}
for i, c in ipairs(cjson.decode(ARGV[5])) do
  local sent, member, prefix, now = c[1], c[2], c[3], c[4]
  local day_start, day_end, week_start, week_end, cooldown = c[5], c[6], c[7], c[8], c[9]
  local code, replay, cooling, old = 0, false, false, false
  local day, week, horizon = 0, 0, nil
  local cutoff = math.min(now, safe) - ttl
  local all = redis.call('ZRANGE', sent, 0, -1, 'WITHSCORES')
  for k = 1, #all, 2 do
    local score = tonumber(all[k + 1])
    if all[k] == horizon_member then
      horizon = score
    else
      if all[k] == member then replay = true end
      if score > now - cooldown and score < now + cooldown
          and string.sub(all[k], 1, #prefix) == prefix then
        cooling = true
      end
      if score >= day_start and score < day_end then day = day + 1 end
      if score >= week_start and score < week_end then week = week + 1 end
      if score < cutoff then old = true end
    end
  end
  if replay then code = 1
  elseif horizon and math.min(day_start, week_start, now - cooldown) < horizon then code = 5
  elseif cooling then code = 2
  elseif day >= per_day then code = 3
  elseif week >= per_week then code = 4
  else
    if old then
      redis.call('ZREMRANGEBYSCORE', sent, '-inf', '(' .. string.format('%d', cutoff))
      if not horizon or cutoff > horizon then
        redis.call('ZADD', sent, string.format('%d', cutoff), horizon_member)
      end
    end
    redis.call('ZADD', sent, string.format('%d', now), member)
    redis.call('PEXPIRE', sent, ttl)
  end
  out[i] = code
end
return out
"""
_REASONS = {2: "cooldown", 3: "daily_cap", 4: "weekly_cap", 5: "history_pruned"}


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
        safe_ms: int = NO_REPLAY,
    ) -> list[Decision]:
        """Decisions for ``items`` in order. Those that pass the pure checks (``prechecked``:
        :func:`policy.rules.precheck` of each item, when the caller has it) go through the
        script ``chunk`` at a time, all calls in one pipeline. Sent ones are recorded
        (idempotent per id). ``safe_ms``: see :meth:`send`."""
        if prechecked is None:
            prechecked = [precheck(c, profile, self.policy) for c, profile in items]
        out: list[Decision | None] = []
        pending: list[tuple[int, Candidate, Profile, Route]] = []
        for i, ((c, profile), (r, early)) in enumerate(zip(items, prechecked, strict=True)):
            out.append(early)
            if early is None:
                pending.append((i, c, profile, r))
        codes = self.codes([self._row(c, profile) for _, c, profile, _ in pending], safe_ms)
        for (i, c, profile, r), code in zip(pending, codes, strict=True):
            if code in _REASONS:
                out[i] = decision(c, profile, r, SUPPRESSED, _REASONS[code])
            else:
                out[i] = decision(c, profile, r, SENT, replayed=code == 1)
        return [d for d in out if d is not None]

    def codes(self, rows: Sequence[Sequence[str | int]], safe_ms: int = NO_REPLAY) -> list[int]:
        """The script's code of each row (:meth:`rows`), in order: 0 sent, 1 sent before
        (a replay), 2 cooldown, 3 daily cap, 4 weekly cap. One pipeline."""
        return self.send(rows, safe_ms).read()

    def send(self, rows: Sequence[Sequence[str | int]], safe_ms: int = NO_REPLAY) -> "CapCodes":
        """:meth:`codes` in two halves: the pipeline goes out now, the codes are read by the
        result's :meth:`~CapCodes.read` (the sends are recorded as Redis runs the script).

        ``safe_ms``: no candidate decided at or before this will be decided again (a flow
        with recovery: its watermark some snapshots ago). A send prunes sends older than
        the retention before the earlier of its own time and this one, so a replay after a
        restart still finds the ids it re-decides, and every send its windows count, even
        when the crashed run had gone on days of event time past its last snapshot."""
        scalars = [self.ttl_ms, self.policy.per_day, self.policy.per_week, safe_ms]
        calls: list[Call] = [
            ([], [*scalars, orjson.dumps(rows[start : start + self.chunk])])
            for start in range(0, len(rows), self.chunk)
        ]
        return CapCodes(self.script.send(calls) if calls else None)

    @staticmethod
    def rows(
        clients: Sequence[str],
        journeys: Sequence[str],
        ids: Sequence[str],
        now: Sequence[int],
        day_start: Sequence[int],
        day_end: Sequence[int],
        week_start: Sequence[int],
        week_end: Sequence[int],
        cooldown: Sequence[int],
    ) -> list[list[str | int]]:
        """The script's row of each candidate, from columns (the day and week bounds of
        :func:`policy.localtime.periods` in the client's zone)."""
        columns = (clients, journeys, ids, now, day_start, day_end, week_start, week_end)
        return [
            [f"{SENT_PREFIX}{{{c}}}", f"{j}{SEPARATOR}{i}", f"{j}{SEPARATOR}", n, *bounds, cd]
            for c, j, i, n, *bounds, cd in zip(*columns, cooldown, strict=True)
        ]

    def _row(self, c: Candidate, profile: Profile) -> list[str | int]:
        p = periods(c.now_ms, zone(profile.tz))
        cooldown = self.policy.cooldown_for(c.journey)
        ids = [c.intervention_id]
        return self.rows(
            [c.client_id], [c.journey], ids, [c.now_ms],
            [p.day_start], [p.day_end], [p.week_start], [p.week_end], [cooldown],
        )[0]  # fmt: skip


class CapCodes:
    """The codes of a :meth:`CapStore.send`, to be read once."""

    def __init__(self, replies: ScriptReplies | None) -> None:
        self.replies = replies

    def read(self) -> list[int]:
        """The codes, in order (raises redis-py's errors)."""
        if self.replies is None:
            return []
        return [int(code) for reply in self.replies.read() for code in reply]

    def drop(self) -> None:
        """Give up on the codes (the connection is closed; sends may have been recorded)."""
        if self.replies is not None:
            self.replies.drop()
