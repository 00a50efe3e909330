"""The journey catalog: journeys as data, validated at start-up, compiled to lookup tables.

A catalog is a TOML file (format in ``docs/catalog.md``). ``load_catalog`` validates it and
raises :class:`~ato.exceptions.CatalogError` naming the file, the journey and the field.
``Catalog.tables`` holds the numpy lookup tables the decode step and the numba kernels use.
"""

import hashlib
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ato.columns import CLIENT_ID_CONTROL as CONTROL_CHARACTERS
from ato.durations import parse_duration_ms
from ato.exceptions import CatalogError

CHANNELS: tuple[str, ...] = ("app", "call", "branch", "ai")
# the eight client segments (BRIEF §2); an event names its client's in ``attrs.segment``
SEGMENTS: tuple[str, ...] = (
    "executive",
    "ultra_high_net_worth",
    "small_business_owner",
    "wealth_white_collar",
    "savvy_regular",
    "senior",
    "young_trendsetter",
    "car_owner",
)
TIERS: tuple[str, ...] = ("ai", "remote", "offline")
TERMINALS: tuple[str, ...] = ("success", "failure")

FLAG_ERROR = 1
FLAG_CALL = 2
FLAG_SESSION = 4

MAX_JOURNEYS = 1022  # the kernels' ordering key keeps journey + 1 in 10 bits
MAX_STEPS = 62  # and step + 1 in 6 bits
MAX_STEP_NAMES = 32_767  # distinct step names over all journeys: their codes are int16
MAX_EVENT_TYPES = 32_766  # distinct event types: with "other", their codes fit in int16

TERMINAL_NONE = 0
TERMINAL_SUCCESS = 1
TERMINAL_FAILURE = 2

OTHER_TYPE = "other"  # type code 0: every event type the catalog does not name
RESERVED_TYPE = "'other' is reserved: it stands for the event types the catalog does not name"
_JOURNEY_KEYS = {"name", "title", "priority", "tiers", "close_after", "abandon", "steps"}
_STEP_KEYS = {"name", "on", "timeout", "terminal"}
_FEATURE_KEYS = {
    "error_types",
    "call_types",
    "session_types",
    "known_types",
    "decay_half_life",
    "client_idle_ttl",
}


@dataclass(frozen=True)
class Step:
    """One step of a journey; ``timeout_ms`` is 0 for terminal steps."""

    name: str
    index: int
    on: tuple[str, ...]
    timeout_ms: int
    terminal: str | None


@dataclass(frozen=True)
class Journey:
    """A multi-step business process and its stall rules."""

    name: str
    title: str
    index: int
    priority: int
    tiers: tuple[str, ...]
    close_after_ms: int
    abandon_ms: dict[str, int]
    steps: tuple[Step, ...]

    def step(self, name: str) -> Step:
        """Return the step called ``name``."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)


@dataclass(frozen=True)
class CatalogTables:
    """Lookup tables compiled from a catalog, indexed by journey, step and type codes.

    Type code 0 is "a type the catalog does not name". -1 means "none" everywhere.
    """

    step_timeout: np.ndarray  # int64 [J, S]: ms, 0 for terminal steps
    step_terminal: np.ndarray  # int8 [J, S]: TERMINAL_*
    step_count: np.ndarray  # int16 [J]
    step_by_name: np.ndarray  # int16 [J, N step names]
    type_step_in_journey: np.ndarray  # int16 [J, T]
    type_journey: np.ndarray  # int16 [T]: the one journey a type maps to, else -1
    type_step: np.ndarray  # int16 [T]
    type_flags: np.ndarray  # int8 [T]: FLAG_*
    abandon_grace: np.ndarray  # int64 [J, T]: ms, -1 when the type is no abandon signal
    close_after: np.ndarray  # int64 [J]


@dataclass(frozen=True)
class Catalog:
    """A validated journey catalog and its vocabularies."""

    source: str
    journeys: tuple[Journey, ...]
    error_types: tuple[str, ...]
    call_types: tuple[str, ...]
    session_types: tuple[str, ...]
    decay_half_life_ms: int
    client_idle_ttl_ms: int
    type_names: tuple[str, ...]  # index = type code; 0 is "other"
    type_codes: dict[str, int] = field(repr=False)
    journey_codes: dict[str, int] = field(repr=False)
    step_name_codes: dict[str, int] = field(repr=False)
    tables: CatalogTables = field(repr=False)

    def journey(self, name: str) -> Journey:
        """Return the journey called ``name``."""
        return self.journeys[self.journey_codes[name]]

    @cached_property
    def codes_fingerprint(self) -> str:
        """A digest of the names that journey, step and event-type codes number, in order:
        state saved under one catalog reads the same under another only if they agree."""
        names = [[j.name, [s.name for s in j.steps]] for j in self.journeys]
        return _digest((names, self.type_names, sorted(self.step_name_codes.items())))

    def digest(self) -> str:
        """A digest of everything the catalog says (timeouts, graces, rules, names), not
        of where it was read from: generated traffic is the same only if they agree."""
        return _digest((
            self.journeys, self.error_types, self.call_types, self.session_types,
            self.decay_half_life_ms, self.client_idle_ttl_ms, self.type_names,
        ))  # fmt: skip

    def step_names(self) -> list[list[str]]:
        """Step name by [journey code, step code], each journey's row padded to the longest
        journey with its last step."""
        width = max(len(j.steps) for j in self.journeys)
        return [
            [j.steps[min(s, len(j.steps) - 1)].name for s in range(width)] for j in self.journeys
        ]

    def ladder_tiers(self) -> list[list[str]]:
        """The tier of the catalog ladder by [journey code, min(attempt, 3) - 1] (a ladder's
        last tier repeats)."""
        return [[j.tiers[min(a, len(j.tiers) - 1)] for a in range(3)] for j in self.journeys]


def _digest(value: object) -> str:
    """16 hex digits of the SHA-1 of ``value``'s repr (stable across processes)."""
    return hashlib.sha1(repr(value).encode(), usedforsecurity=False).hexdigest()[:16]


def default_catalog_path() -> Path:
    """Return the path of the catalog shipped with ato-stream."""
    return Path(str(resources.files("ato") / "catalogs" / "default.toml"))


def load_catalog(path: Path | str | None = None) -> Catalog:
    """Read, validate and compile the catalog at ``path`` (default: the shipped one)."""
    file = Path(path) if path is not None else default_catalog_path()
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        msg = f"{file}: catalog file not found"
        raise CatalogError(msg) from exc
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"{file}: cannot read the catalog file: {exc}"
        raise CatalogError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"{file}: not valid TOML: {exc}"
        raise CatalogError(msg) from exc
    return parse_catalog(raw, str(file))


def parse_catalog(raw: dict[str, Any], source: str = "<catalog>") -> Catalog:
    """Validate a catalog already read into a dict; ``source`` names it in errors."""
    _Checker(source).check_keys(raw, {"version", "features", "journeys"}, "catalog")
    version = raw.get("version", 1)
    if type(version) is not int or version != 1:
        msg = f"{source}: field 'version': only version 1 is supported, got {version!r}"
        raise CatalogError(msg)
    features = raw.get("features", {})
    check = _Checker(source, "features")
    check.check_keys(features, _FEATURE_KEYS, "features")
    error_types = check.names(features, "error_types")
    call_types = check.names(features, "call_types")
    session_types = check.names(features, "session_types")
    known_types = check.names(features, "known_types")
    half_life = check.duration(features, "decay_half_life", default="1d", positive=True)
    idle_ttl = check.duration(features, "client_idle_ttl", default="2d", positive=True)

    raw_journeys = raw.get("journeys")
    if not isinstance(raw_journeys, list) or not raw_journeys:
        msg = f"{source}: field 'journeys': at least one [[journeys]] table is required"
        raise CatalogError(msg)
    if len(raw_journeys) > MAX_JOURNEYS:
        msg = f"{source}: field 'journeys': at most {MAX_JOURNEYS} journeys"
        raise CatalogError(msg)
    journeys: list[Journey] = []
    problems: list[str] = []  # every invalid journey's first problem, not only the first's
    for index, raw_journey in enumerate(raw_journeys):
        try:
            journeys.append(_parse_journey(raw_journey, index, source))
        except CatalogError as exc:
            problems.append(str(exc))
    if len(problems) == 1:
        raise CatalogError(problems[0])
    if problems:
        listed = "\n".join(f"  {problem}" for problem in problems)
        msg = f"{source}: {len(problems)} journeys are invalid:\n{listed}"
        raise CatalogError(msg)
    names = [j.name for j in journeys]
    for name in names:
        if names.count(name) > 1:
            msg = f"{source}: journey '{name}': field 'name': defined more than once"
            raise CatalogError(msg)

    type_names = _type_vocabulary(journeys, error_types, call_types, session_types, known_types)
    if len(type_names) - 1 > MAX_EVENT_TYPES:
        msg = (
            f"{source}: field 'journeys': {len(type_names) - 1:,} distinct event types (steps'"
            f" 'on', abandon signals and features), at most {MAX_EVENT_TYPES:,}"
        )
        raise CatalogError(msg)
    type_codes = {name: code for code, name in enumerate(type_names) if code > 0}
    step_names = sorted({s.name for j in journeys for s in j.steps})
    if len(step_names) > MAX_STEP_NAMES:
        msg = (
            f"{source}: field 'journeys': {len(step_names):,} distinct step names, at most"
            f" {MAX_STEP_NAMES:,}"
        )
        raise CatalogError(msg)
    step_name_codes = {name: code for code, name in enumerate(step_names)}
    journey_codes = {j.name: j.index for j in journeys}
    tables = _compile_tables(
        journeys,
        type_codes,
        step_name_codes,
        {"error": error_types, "call": call_types, "session": session_types},
    )
    return Catalog(
        source=source,
        journeys=tuple(journeys),
        error_types=error_types,
        call_types=call_types,
        session_types=session_types,
        decay_half_life_ms=half_life,
        client_idle_ttl_ms=idle_ttl,
        type_names=tuple(type_names),
        type_codes=type_codes,
        journey_codes=journey_codes,
        step_name_codes=step_name_codes,
        tables=tables,
    )


class _Checker:
    """Field checks that raise CatalogError naming file, journey/step and field."""

    def __init__(self, source: str, where: str = "") -> None:
        self.prefix = f"{source}: {where}: " if where else f"{source}: "

    def fail(self, key: str, problem: str) -> CatalogError:
        return CatalogError(f"{self.prefix}field '{key}': {problem}")

    def check_keys(self, table: object, allowed: set[str], what: str) -> None:
        if not isinstance(table, dict):
            raise self.fail(what, f"expected a table, got {type(table).__name__}")
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.fail(unknown[0], f"unknown field (allowed: {', '.join(sorted(allowed))})")

    def text(self, table: dict[str, Any], key: str, default: str | None = None) -> str:
        value = table.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "a non-empty string is required")
        return value

    def name(self, table: dict[str, Any], key: str) -> str:
        """A journey or step name: :meth:`text` that events can match as written."""
        value = self.text(table, key)
        problem = name_problem(value)
        if problem:
            raise self.fail(key, problem)
        return value

    def names(self, table: dict[str, Any], key: str) -> tuple[str, ...]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "expected a list of non-empty strings")
        if OTHER_TYPE in value:
            raise self.fail(key, RESERVED_TYPE)
        seen: set[str] = set()
        for v in value:
            problem = name_problem(v)
            if problem:
                raise self.fail(key, problem)
            if v in seen:
                raise self.fail(key, f"{v!r} is listed more than once")
            seen.add(v)
        return tuple(value)

    def duration(
        self,
        table: dict[str, Any],
        key: str,
        default: str | None = None,
        positive: bool = False,
        label: str | None = None,
    ) -> int:
        """``table[key]`` in ms; errors name the field ``label`` (default: ``key``)."""
        label = label or key
        value = table.get(key, default)
        if value is None:
            raise self.fail(label, "a duration is required")
        try:
            ms = parse_duration_ms(value)
        except ValueError as exc:
            raise self.fail(label, str(exc)) from exc
        if positive and ms <= 0:
            raise self.fail(label, "must be longer than zero")
        return ms


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a journey, step or event type name (None when it can): events
    name them exactly, so white space around a name (a typo an event would never carry) and
    control characters are refused."""
    if name != name.strip():
        return f"{name!r} has white space at its start or end"
    if CONTROL_CHARACTERS.search(name):
        return f"{name!r} holds a control character"
    return None


def _parse_journey(raw: object, index: int, source: str) -> Journey:
    name = raw.get("name") if isinstance(raw, dict) else None
    label = f"journey {name!r}" if isinstance(name, str) else f"journeys[{index}]"
    check = _Checker(source, label)
    check.check_keys(raw, _JOURNEY_KEYS, "journeys")
    assert isinstance(raw, dict)
    name = check.name(raw, "name")
    title = check.text(raw, "title", default=name)
    priority = raw.get("priority", 50)
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 100:
        raise check.fail("priority", "an integer from 0 to 100 is required")
    tiers = check.names(raw, "tiers")
    if "tiers" in raw and not tiers:
        raise check.fail("tiers", "at least one tier is required (leave tiers out for all three)")
    tiers = tiers or ("ai", "remote", "offline")
    for tier in tiers:
        if tier not in TIERS:
            raise check.fail("tiers", f"unknown tier {tier!r} (allowed: {', '.join(TIERS)})")
    close_after = check.duration(raw, "close_after", default="3d", positive=True)
    raw_abandon = raw.get("abandon", {})
    if not isinstance(raw_abandon, dict):
        raise check.fail("abandon", "expected a table of event type = grace duration")
    abandon: dict[str, int] = {}
    for signal in raw_abandon:
        if signal == OTHER_TYPE:
            raise check.fail("abandon", RESERVED_TYPE)
        problem = "an event type cannot be empty" if not signal else name_problem(signal)
        if problem:
            raise check.fail("abandon", problem)
        abandon[signal] = check.duration(raw_abandon, signal, label=f"abandon.{signal}")
    raw_steps = raw.get("steps")
    if not isinstance(raw_steps, list) or len(raw_steps) < 2:
        raise check.fail("steps", "at least two [[journeys.steps]] are required")
    if len(raw_steps) > MAX_STEPS:
        raise check.fail("steps", f"at most {MAX_STEPS} steps")
    steps = tuple(_parse_step(s, i, source, label) for i, s in enumerate(raw_steps))
    step_names = [s.name for s in steps]
    seen_types: dict[str, str] = {}
    for step in steps:
        if step_names.count(step.name) > 1:
            raise check.fail("steps", f"step name {step.name!r} used more than once")
        for event_type in step.on:
            if event_type in seen_types:
                raise check.fail(
                    "steps",
                    f"event type {event_type!r} maps to both step "
                    f"{seen_types[event_type]!r} and step {step.name!r}",
                )
            seen_types[event_type] = step.name
    if not any(s.terminal == "success" for s in steps):
        raise check.fail("steps", 'at least one step needs terminal = "success"')
    if steps[0].terminal is not None:
        raise check.fail("steps", "the first step cannot be terminal")
    for signal in abandon:
        if signal in seen_types:
            raise check.fail(
                "abandon", f"{signal!r} is also a step event of {seen_types[signal]!r}"
            )
    return Journey(name, title, index, priority, tiers, close_after, abandon, steps)


def _parse_step(raw: object, index: int, source: str, journey_label: str) -> Step:
    name = raw.get("name") if isinstance(raw, dict) else None
    label = f"step {name!r}" if isinstance(name, str) else f"steps[{index}]"
    check = _Checker(source, f"{journey_label} {label}")
    check.check_keys(raw, _STEP_KEYS, "steps")
    assert isinstance(raw, dict)
    name = check.name(raw, "name")
    on = check.names(raw, "on")
    terminal = raw.get("terminal")
    if terminal is not None and terminal not in TERMINALS:
        raise check.fail("terminal", f"expected one of {', '.join(TERMINALS)}")
    if terminal is None:
        timeout = check.duration(raw, "timeout", positive=True)
    elif "timeout" in raw:
        raise check.fail("timeout", "a terminal step has no timeout")
    else:
        timeout = 0
    return Step(name, index, on, timeout, terminal)


def _type_vocabulary(journeys: list[Journey], *lists: tuple[str, ...]) -> list[str]:
    names = [OTHER_TYPE]
    seen = {OTHER_TYPE}
    for journey in journeys:
        for step in journey.steps:
            for t in step.on:
                if t not in seen:
                    seen.add(t)
                    names.append(t)
        for t in journey.abandon_ms:
            if t not in seen:
                seen.add(t)
                names.append(t)
    for type_list in lists:
        for t in type_list:
            if t not in seen:
                seen.add(t)
                names.append(t)
    return names


def _compile_tables(
    journeys: list[Journey],
    type_codes: dict[str, int],
    step_name_codes: dict[str, int],
    flag_lists: dict[str, tuple[str, ...]],
) -> CatalogTables:
    n_j = len(journeys)
    n_t = len(type_codes) + 1
    n_s = max(len(j.steps) for j in journeys)
    step_timeout = np.zeros((n_j, n_s), dtype=np.int64)
    step_terminal = np.zeros((n_j, n_s), dtype=np.int8)
    step_count = np.zeros(n_j, dtype=np.int16)
    step_by_name = np.full((n_j, max(len(step_name_codes), 1)), -1, dtype=np.int16)
    type_step_in_journey = np.full((n_j, n_t), -1, dtype=np.int16)
    type_journey = np.full(n_t, -1, dtype=np.int16)
    type_step = np.full(n_t, -1, dtype=np.int16)
    type_owners = np.zeros(n_t, dtype=np.int32)
    abandon_grace = np.full((n_j, n_t), -1, dtype=np.int64)
    close_after = np.zeros(n_j, dtype=np.int64)
    terminal_codes = {None: TERMINAL_NONE, "success": TERMINAL_SUCCESS, "failure": TERMINAL_FAILURE}
    for j in journeys:
        step_count[j.index] = len(j.steps)
        close_after[j.index] = j.close_after_ms
        for s in j.steps:
            step_timeout[j.index, s.index] = s.timeout_ms
            step_terminal[j.index, s.index] = terminal_codes[s.terminal]
            step_by_name[j.index, step_name_codes[s.name]] = s.index
            for t in s.on:
                code = type_codes[t]
                type_step_in_journey[j.index, code] = s.index
                type_owners[code] += 1
                type_journey[code] = j.index
                type_step[code] = s.index
        for t, grace in j.abandon_ms.items():
            abandon_grace[j.index, type_codes[t]] = grace
    ambiguous = type_owners > 1  # such types map only when the event names its journey
    type_journey[ambiguous] = -1
    type_step[ambiguous] = -1
    type_flags = np.zeros(n_t, dtype=np.int8)
    for flag, key in ((FLAG_ERROR, "error"), (FLAG_CALL, "call"), (FLAG_SESSION, "session")):
        for t in flag_lists[key]:
            type_flags[type_codes[t]] |= flag
    return CatalogTables(
        step_timeout=step_timeout,
        step_terminal=step_terminal,
        step_count=step_count,
        step_by_name=step_by_name,
        type_step_in_journey=type_step_in_journey,
        type_journey=type_journey,
        type_step=type_step,
        type_flags=type_flags,
        abandon_grace=abandon_grace,
        close_after=close_after,
    )
