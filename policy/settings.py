"""The contact-policy file: parse and validate it into one typed :class:`Policy`.

The format, every key and its default are in ``docs/policy.md``; the shipped file is
``policy/default_policy.toml``. Errors are :class:`~policy.exceptions.PolicyError` naming the
file and the field (``routing.rules[2].segment``).
"""

import dataclasses
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from ato.catalog import CHANNELS, SEGMENTS, TIERS, Catalog
from ato.durations import parse_duration_ms
from policy.exceptions import PolicyError
from policy.localtime import Window
from policy.profiles import TIER_CHANNELS, VALUE_TIERS

RESUME_ON = ("progress",)
_TOP_KEYS = {"version", "routing", "channels", "quiet_hours", "caps", "cooldown", "dispatch"}
_TOP_KEYS |= {"resume"}
_RULE_MATCH = ("journey", "step", "segment", "value_tier")
_RULE_KEYS = {*_RULE_MATCH, "ladder", "priority"}


@dataclass(frozen=True)
class Rule:
    """One routing rule; a match field of None matches anything (``*``)."""

    index: int
    journey: frozenset[str] | None = None
    step: frozenset[str] | None = None
    segment: frozenset[str] | None = None
    value_tier: frozenset[str] | None = None
    ladder: tuple[str, ...] = ()
    priority: int = 0

    def matches(self, journey: str, step: str, segment: str, value_tier: str) -> bool:
        """Does every match field accept these names?"""
        return (
            (self.journey is None or journey in self.journey)
            and (self.step is None or step in self.step)
            and (self.segment is None or segment in self.segment)
            and (self.value_tier is None or value_tier in self.value_tier)
        )


@dataclass(frozen=True)
class Policy:
    """The whole contact policy; the defaults here are those of an empty file."""

    source: str = "<defaults>"
    rules: tuple[Rule, ...] = ()
    offline_without_rm: str = "remote"
    channels: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(TIER_CHANNELS))
    quiet_default: Window | None = field(default_factory=lambda: Window.parse("21:00-08:00"))
    quiet_segments: dict[str, Window | None] = field(default_factory=dict)
    per_day: int = 2
    per_week: int = 5
    cooldown_ms: int = 12 * 3_600_000
    cooldown_journeys: dict[str, int] = field(default_factory=dict)
    max_delay_ms: int = 24 * 3_600_000
    resume_on: str = "progress"
    resume_channels: tuple[str, ...] = CHANNELS
    # the tiers each journey's catalog entry allows (``for_catalog``); a journey not named
    # here allows all three
    journey_tiers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # routes already computed (policy.routing.route); not part of the policy's value, and
    # not an __init__ argument, so a dataclasses.replace copy starts with its own
    route_cache: dict[tuple[object, ...], Any] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def quiet_window(self, segment: str) -> Window | None:
        """The quiet hours of a segment (its override, else the default)."""
        return self.quiet_segments.get(segment, self.quiet_default)

    def cooldown_for(self, journey: str) -> int:
        """The cooldown (ms) of a journey."""
        return self.cooldown_journeys.get(journey, self.cooldown_ms)

    def allowed_tiers(self, journey: str) -> tuple[str, ...]:
        """The tiers ``journey`` may be routed to (its catalog ``tiers``)."""
        return self.journey_tiers.get(journey, TIERS)


def default_policy_path() -> Path:
    """The shipped ``policy/default_policy.toml``."""
    return Path(str(resources.files("policy") / "default_policy.toml"))


def load_policy(path: Path | str | None = None) -> Policy:
    """Read and validate a policy file (the shipped default when ``path`` is None)."""
    path = Path(path) if path is not None else default_policy_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        msg = f"{path}: cannot read the policy file: {exc}"
        raise PolicyError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"{path}: not valid TOML: {exc}"
        raise PolicyError(msg) from exc
    return parse_policy(raw, str(path))


class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> NoReturn:
        """Raise PolicyError naming the file and ``key`` (inside ``except``: chained)."""
        msg = f"{self.source}: field '{key}': {problem}"
        raise PolicyError(msg)

    def table(self, raw: dict[str, Any], key: str, allowed: set[str] | None) -> dict[str, Any]:
        value = raw.get(key.rpartition(".")[2], {})
        if not isinstance(value, dict):
            self.fail(key, f"expected a table, got {type(value).__name__}")
        if allowed is not None:
            unknown = sorted(set(value) - allowed)
            if unknown:
                known = ", ".join(sorted(allowed))
                self.fail(f"{key}.{unknown[0]}", f"unknown field (allowed: {known})")
        return value

    def names(self, value: object, key: str, allowed: tuple[str, ...] | None) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            self.fail(key, "expected a name or a non-empty list of names")
        for item in items:
            if not isinstance(item, str) or not item:
                self.fail(key, f"expected non-empty strings, got {item!r}")
            if allowed is not None and item not in allowed:
                self.fail(key, f"{item!r} is not one of {', '.join(allowed)}")
        return tuple(items)

    def count(self, table: dict[str, Any], key: str, default: int) -> int:
        value = table.get(key.rpartition(".")[2], default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(key, f"expected an integer >= 0, got {value!r}")
        return value

    def duration(self, value: object, key: str) -> int:
        try:
            return parse_duration_ms(value)
        except ValueError as exc:
            self.fail(key, str(exc))

    def window(self, value: object, key: str) -> Window | None:
        if not isinstance(value, str):
            self.fail(key, f"expected 'HH:MM-HH:MM' or 'none', got {value!r}")
        if value.strip().lower() == "none":
            return None
        try:
            return Window.parse(value)
        except ValueError as exc:
            self.fail(key, str(exc))


def parse_policy(raw: dict[str, Any], source: str = "<policy>") -> Policy:
    """Validate a parsed TOML document; missing keys take :class:`Policy`'s defaults."""
    check = _Checker(source)
    defaults = Policy()
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        check.fail(unknown[0], f"unknown field (allowed: {', '.join(sorted(_TOP_KEYS))})")
    version = raw.get("version", 1)
    if type(version) is not int or version != 1:
        check.fail("version", f"only version 1 is supported, got {version!r}")

    routing = check.table(raw, "routing", {"offline_without_rm", "rules"})
    fallback = routing.get("offline_without_rm", defaults.offline_without_rm)
    if fallback not in ("ai", "remote"):
        check.fail("routing.offline_without_rm", f"expected 'ai' or 'remote', got {fallback!r}")
    raw_rules = routing.get("rules", [])
    if not isinstance(raw_rules, list):
        check.fail("routing.rules", "expected an array of tables ([[routing.rules]])")
    rules = tuple(_parse_rule(check, r, i) for i, r in enumerate(raw_rules))

    chan_table = check.table(raw, "channels", set(TIERS))
    channels = dict(defaults.channels)
    for tier, value in chan_table.items():
        channels[tier] = check.names(value, f"channels.{tier}", TIER_CHANNELS[tier])

    quiet = check.table(raw, "quiet_hours", {"default", "segments"})
    quiet_default = defaults.quiet_default
    if "default" in quiet:
        quiet_default = check.window(quiet["default"], "quiet_hours.default")
    seg_table = check.table(quiet, "quiet_hours.segments", set(SEGMENTS))
    quiet_segments = {
        seg: check.window(value, f"quiet_hours.segments.{seg}") for seg, value in seg_table.items()
    }

    caps = check.table(raw, "caps", {"per_day", "per_week"})
    per_day = check.count(caps, "caps.per_day", defaults.per_day)
    per_week = check.count(caps, "caps.per_week", defaults.per_week)

    cooldown = check.table(raw, "cooldown", {"default", "journeys"})
    cooldown_ms = defaults.cooldown_ms
    if "default" in cooldown:
        cooldown_ms = check.duration(cooldown["default"], "cooldown.default")
    journeys = check.table(cooldown, "cooldown.journeys", None)
    cooldown_journeys = {
        name: check.duration(value, f"cooldown.journeys.{name}") for name, value in journeys.items()
    }

    dispatch = check.table(raw, "dispatch", {"max_delay"})
    max_delay_ms = defaults.max_delay_ms
    if "max_delay" in dispatch:
        max_delay_ms = check.duration(dispatch["max_delay"], "dispatch.max_delay")

    resume = check.table(raw, "resume", {"on", "channels"})
    resume_on = resume.get("on", defaults.resume_on)
    if resume_on == "activity":
        check.fail(
            "resume.on",
            "'activity' is not supported: the instance's first event after its stall deadline"
            " (any step, the stalled one again included) already ends the stall; use 'progress'",
        )
    if resume_on not in RESUME_ON:
        check.fail("resume.on", f"expected one of {', '.join(RESUME_ON)}, got {resume_on!r}")
    resume_channels = defaults.resume_channels
    if "channels" in resume:
        resume_channels = check.names(resume["channels"], "resume.channels", CHANNELS)

    return Policy(
        source=source,
        rules=rules,
        offline_without_rm=fallback,
        channels=channels,
        quiet_default=quiet_default,
        quiet_segments=quiet_segments,
        per_day=per_day,
        per_week=per_week,
        cooldown_ms=cooldown_ms,
        cooldown_journeys=cooldown_journeys,
        max_delay_ms=max_delay_ms,
        resume_on=resume_on,
        resume_channels=resume_channels,
    )


def _parse_rule(check: _Checker, raw: object, index: int) -> Rule:
    where = f"routing.rules[{index}]"
    if not isinstance(raw, dict):
        check.fail(where, f"expected a table, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        known = ", ".join(sorted(_RULE_KEYS))
        check.fail(f"{where}.{unknown[0]}", f"unknown field (allowed: {known})")
    allowed: dict[str, tuple[str, ...] | None] = {
        "journey": None,  # checked against a catalog by check_names()
        "step": None,
        "segment": SEGMENTS,
        "value_tier": VALUE_TIERS,
    }
    match: dict[str, frozenset[str] | None] = {}
    for key in _RULE_MATCH:
        value = raw.get(key, "*")
        names = check.names(value, f"{where}.{key}", None)
        if "*" in names and len(names) > 1:
            check.fail(f"{where}.{key}", '"*" matches everything: give it alone, not in a list')
        if "*" in names:
            match[key] = None
        else:
            match[key] = frozenset(check.names(value, f"{where}.{key}", allowed[key]))
    if "ladder" not in raw:
        check.fail(f"{where}.ladder", "a list of tiers is required (attempt 1, 2, ...)")
    ladder = check.names(raw["ladder"], f"{where}.ladder", TIERS)
    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 100:
        check.fail(f"{where}.priority", f"expected an integer in -100..100, got {priority!r}")
    return Rule(index=index, ladder=ladder, priority=priority, **match)


def for_catalog(policy: Policy, catalog: Catalog) -> Policy:
    """``policy`` checked against ``catalog`` (:func:`check_names`) and bound to its
    journeys' allowed tiers, which routing keeps to."""
    check_names(policy, catalog)
    return dataclasses.replace(policy, journey_tiers={j.name: j.tiers for j in catalog.journeys})


def check_names(policy: Policy, catalog: Catalog) -> None:
    """Fail when the policy names a journey or step the catalog does not have (a typo)."""
    check = _Checker(policy.source)
    steps = {j.name: {s.name for s in j.steps} for j in catalog.journeys}
    all_steps = set().union(*steps.values()) if steps else set()
    for rule in policy.rules:
        where = f"routing.rules[{rule.index}]"
        for name in sorted(rule.journey or ()):
            if name not in steps:
                check.fail(f"{where}.journey", f"no journey {name!r} in the catalog")
        known = set().union(*(steps[j] for j in rule.journey)) if rule.journey else all_steps
        for name in sorted(rule.step or ()):
            if name not in known:
                check.fail(f"{where}.step", f"no step {name!r} in the matched journeys")
    for name in sorted(policy.cooldown_journeys):
        if name not in steps:
            check.fail(f"cooldown.journeys.{name}", f"no journey {name!r} in the catalog")
