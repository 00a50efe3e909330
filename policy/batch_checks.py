"""Contact-policy checks 1-4 of :func:`policy.rules.precheck` over columns of candidates.

The policy step decides hundreds of thousands of stalls in a run; a Python call and a few
objects per candidate cost more than the rest of the flow. :class:`BatchChecks` is the
columnar twin of :func:`policy.rules.precheck` (the reference; tests compare the two on
random batches): numpy over the batch, with what depends on few distinct inputs (routing,
zone offsets, the end of quiet hours, local days and weeks) worked out once per distinct
input. Profiles come in as numbers of a :class:`ProfileTable`.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np

from ato.catalog import SEGMENTS, TIERS, Catalog
from policy.localtime import period_bounds_many, quiet_until_many, wall_ms_many
from policy.profiles import CONTACT_CHANNELS, VALUE_TIERS, ProfileValues, zone
from policy.routing import route_parts
from policy.settings import Policy

# reason codes: PASS goes on to the cooldown and caps, QUIET is deferred, the rest suppressed
REASONS: tuple[str, ...] = (
    "", "do_not_contact", "resumed", "stale", "quiet_hours", "cooldown", "daily_cap",
    "weekly_cap", "history_pruned",
)  # fmt: skip
PASS, DO_NOT_CONTACT, RESUMED, STALE, QUIET = range(5)
# the reason code of each policy.caps script code: 0 sent, 1 sent before, 2-4 cooldown and
# caps, 5 history pruned
CAP_REASON = np.array([PASS, PASS, 5, 6, 7, 8], np.int64)


class ProfileTable:
    """The distinct profiles a policy step has seen (the cache's value tuples,
    :meth:`policy.profiles.Profile.values`), numbered, with their fields as arrays indexed
    by number. Starts over when it holds more than ``max_entries`` (between batches only)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._reset()

    def _reset(self) -> None:
        self.numbers: dict[ProfileValues, int] = {}
        self.values: list[ProfileValues] = []
        self.zone_names: list[str] = []
        self._zone_numbers: dict[str, int] = {}
        self._fields: list[list[int]] = [[], [], [], [], [], []]
        self._arrays: tuple[np.ndarray, ...] | None = None

    def encode(self, values: Sequence[ProfileValues]) -> np.ndarray:
        """The number of each profile (int64), adding new ones."""
        if len(self.values) > self.max_entries:
            self._reset()
        get = self.numbers.get
        found = [get(v, -1) for v in values]
        for i, number in enumerate(found):
            if number < 0:
                found[i] = self._add(values[i])
        return np.array(found, np.int64)

    def _add(self, v: ProfileValues) -> int:
        number = self.numbers.get(v)
        if number is not None:
            return number
        segment, value_tier, rm_id, preferred, tz, do_not_contact, _ = v
        if tz not in self._zone_numbers:
            self._zone_numbers[tz] = len(self.zone_names)
            self.zone_names.append(tz)
        row = (
            SEGMENTS.index(segment), VALUE_TIERS.index(value_tier), int(bool(rm_id)),
            CONTACT_CHANNELS.index(preferred) + 1 if preferred else 0,
            self._zone_numbers[tz], int(do_not_contact),
        )  # fmt: skip
        for column, value in zip(self._fields, row, strict=True):
            column.append(value)
        number = len(self.values)
        self.numbers[v] = number
        self.values.append(v)
        self._arrays = None
        return number

    def arrays(self) -> tuple[np.ndarray, ...]:
        """(segment, value tier, has an RM, preferred channel + 1 (0: none), zone number,
        do not contact) by profile number."""
        if self._arrays is None:
            self._arrays = tuple(np.array(f, np.int64) for f in self._fields)
        return self._arrays

    def zones(self) -> list[ZoneInfo]:
        """The ``ZoneInfo`` of each zone number."""
        return [zone(name) for name in self.zone_names]

    def rm_ids(self, numbers: np.ndarray) -> list[str]:
        """The RM of each profile number."""
        values = self.values
        return [values[n][2] for n in numbers.tolist()]


@dataclass(frozen=True)
class Checked:
    """Checks 1-4 of a batch (aligned with it): route and reason codes, and the end of quiet
    hours for deferred rows (else 0)."""

    tier: np.ndarray  # index into ato.catalog.TIERS
    channel: np.ndarray  # index into policy.profiles.CONTACT_CHANNELS
    priority: np.ndarray  # after the routing rule's adjustment
    reason: np.ndarray  # index into REASONS
    recheck: np.ndarray

    def take(self, rows: np.ndarray) -> "Checked":
        """The rows ``rows`` (indices or a mask)."""
        return Checked(
            self.tier[rows], self.channel[rows], self.priority[rows], self.reason[rows],
            self.recheck[rows],
        )  # fmt: skip

    @staticmethod
    def concat(parts: "Sequence[Checked]") -> "Checked":
        """The rows of ``parts``, in order."""
        return Checked(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in Checked.__annotations__)
        )


class BatchChecks:
    """Checks 1-4 and the cap arguments of a policy over columns of candidates.

    Journeys and steps are catalog codes; the catalog-ladder tier of a candidate is
    ``ladder_tier[journey, min(attempt, 3) - 1]`` (as the intervention documents have it).
    """

    def __init__(self, policy: Policy, catalog: Catalog, profiles: ProfileTable) -> None:
        self.policy = policy
        self.profiles = profiles
        journeys = catalog.journeys
        self.journey_names = [j.name for j in journeys]
        self.step_names = catalog.step_names()
        self.width = len(self.step_names[0])
        self.ladder_tier = np.array(
            [[TIERS.index(t) for t in row] for row in catalog.ladder_tiers()], np.int64
        )
        self.attempts = max([3, *(len(r.ladder) for r in policy.rules)])
        self.cooldown = np.array([policy.cooldown_for(n) for n in self.journey_names], np.int64)
        windows = [policy.quiet_window(s) for s in SEGMENTS]
        self.windows = list(dict.fromkeys(w for w in windows if w is not None))
        self.segment_window = np.array(
            [-1 if w is None else self.windows.index(w) for w in windows], np.int64
        )
        self.window_start = np.array([w.start_ms for w in self.windows], np.int64)
        self.window_end = np.array([w.end_ms for w in self.windows], np.int64)
        self._routes: dict[int, tuple[int, int, int]] = {}

    def check(
        self,
        journey: np.ndarray,
        step: np.ndarray,
        attempt: np.ndarray,
        deadline: np.ndarray,
        now: np.ndarray,
        priority: np.ndarray,
        resumed: np.ndarray,
        profile: np.ndarray,
    ) -> Checked:
        """:func:`policy.rules.precheck` of each row, as of ``now``."""
        segment, value_tier, has_rm, preferred, zone_no, dnc = (
            a[profile] for a in self.profiles.arrays()
        )
        tier, channel, adjust = self._route(
            journey, step, attempt, segment, value_tier, has_rm, preferred
        )
        reason = np.zeros(len(now), np.int64)
        reason[dnc == 1] = DO_NOT_CONTACT
        reason[(reason == PASS) & resumed] = RESUMED
        max_delay = self.policy.max_delay_ms
        latest = deadline + max_delay
        if max_delay:
            reason[(reason == PASS) & (now > latest)] = STALE
        recheck = np.zeros(len(now), np.int64)
        window = self.segment_window[segment]
        open_ = np.flatnonzero((reason == PASS) & (window >= 0))
        if len(open_):
            until = self._quiet_until(now[open_], zone_no[open_], window[open_])
            quiet = until >= 0
            rows, until = open_[quiet], until[quiet]
            late = until > latest[rows] if max_delay else np.zeros(len(rows), bool)
            reason[rows] = np.where(late, STALE, QUIET)
            recheck[rows[~late]] = until[~late]
        priority = np.clip(priority + adjust, 0, 100)
        return Checked(tier, channel, priority, reason, recheck)

    def _route(
        self,
        journey: np.ndarray,
        step: np.ndarray,
        attempt: np.ndarray,
        segment: np.ndarray,
        value_tier: np.ndarray,
        has_rm: np.ndarray,
        preferred: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tier, channel and priority adjustment of each row, :func:`route_parts` once per
        distinct input."""
        ladder = self.ladder_tier[journey, np.minimum(attempt, 3) - 1]
        key = journey
        for value, radix in (
            (step, self.width), (np.clip(attempt, 1, self.attempts), self.attempts + 1),
            (ladder, len(TIERS)), (segment, len(SEGMENTS)), (value_tier, len(VALUE_TIERS)),
            (has_rm, 2), (preferred, len(CONTACT_CHANNELS) + 1),
        ):  # fmt: skip
            key = key * radix + value
        keys, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        routes = self._routes
        if len(routes) > 100_000:
            routes.clear()
        found = []
        for k, row in zip(keys.tolist(), first.tolist(), strict=True):
            r = routes.get(k)
            if r is None:
                r = routes[k] = self._route_one(
                    journey[row], step[row], attempt[row], ladder[row], segment[row],
                    value_tier[row], has_rm[row], preferred[row],
                )  # fmt: skip
            found.append(r)
        table = np.array(found, np.int64).reshape(-1, 3)[inverse]
        return table[:, 0], table[:, 1], table[:, 2]

    def _route_one(
        self, j: int, s: int, attempt: int, ladder: int, seg: int, vt: int, rm: int, pref: int
    ) -> tuple[int, int, int]:
        tier, channel, adjust, _ = route_parts(
            self.policy, self.journey_names[j], self.step_names[j][s], int(attempt),
            SEGMENTS[seg], VALUE_TIERS[vt], bool(rm), CONTACT_CHANNELS[pref - 1] if pref else "",
            TIERS[ladder],
        )  # fmt: skip
        return TIERS.index(tier), CONTACT_CHANNELS.index(channel), adjust

    def _quiet_until(self, now: np.ndarray, zone_no: np.ndarray, window: np.ndarray) -> np.ndarray:
        """End of quiet hours of each row (``window``: index into ``windows``), -1 where it is
        not quiet."""
        zones = self.profiles.zones()
        return quiet_until_many(
            now, wall_ms_many(now, zone_no, zones), zone_no, zones, self.window_start[window],
            self.window_end[window],
        )  # fmt: skip

    def period_bounds(
        self, now: np.ndarray, profile: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Start and end of each row's local day and ISO week
        (:func:`policy.localtime.periods`): day start, day end, week start, week end."""
        zone_no = self.profiles.arrays()[4][profile]
        zones = self.profiles.zones()
        return period_bounds_many(wall_ms_many(now, zone_no, zones), zone_no, zones)
