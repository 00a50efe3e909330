"""Load-test scenarios as data: ``load_tests/scenarios/*.toml`` (format: docs/loadtest.md).

A scenario says how much traffic to send and how it is shaped: a rate (events/s) times a
piecewise-linear ``profile`` of multipliers over the live part, an optional stall burst at one
step, an optional backfill (history sent at full speed before the live part) and an optional
population of idle clients, each with one open journey, loaded before the live part.
"""

import bisect
import math
import tomllib
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from ato.catalog import Catalog, load_catalog
from ato.exceptions import AtoError, ConfigError

SCENARIO_DIR = "load_tests.scenarios"
CATALOG_DIR = "load_tests.catalogs"


@dataclass(frozen=True)
class Burst:
    """Instances reaching ``journey``/``step`` in ``[at_s, at_s + for_s)`` stall with ``share``."""

    journey: str
    step: str
    at_s: float
    for_s: float
    share: float


@dataclass(frozen=True)
class Scenario:
    """One load-test scenario; times in seconds from the start of the live part.

    ``lead_s``: seconds between the producers' release (population and backfill are sent
    then, at full speed) and the start of the live part. ``clock``: the flow's
    ``engine.clock``; a backfill needs ``replay``, since in live mode a watermark that
    followed the wall clock while the topic was empty makes all history late.
    """

    name: str
    description: str = ""
    duration_s: float = 60.0
    rate: float = 20_000.0
    profile: tuple[tuple[float, float], ...] = ()
    warmup_s: float = 20.0
    catalog: str = "fast.toml"
    partitions: int = 8
    seed: int = 11
    allowed_lateness_ms: int = 200
    disorder_ms: int = 100
    backfill_s: float = 0.0
    population: int = 0
    burst: Burst | None = None
    lead_s: float = 0.0
    clock: str = "live"

    def multiplier(self, t_s: float) -> float:
        """The profile's rate multiplier at ``t_s`` (clamped to its first and last points)."""
        if not self.profile:
            return 1.0
        times = [p[0] for p in self.profile]
        i = bisect.bisect_right(times, t_s)
        if i == 0:
            return self.profile[0][1]
        if i == len(self.profile):
            return self.profile[-1][1]
        (t0, m0), (t1, m1) = self.profile[i - 1], self.profile[i]
        return m0 + (m1 - m0) * (t_s - t0) / (t1 - t0)

    def peak_rate(self) -> float:
        """The highest rate the profile asks for during the live part (events/s); points past
        ``duration_s`` (a shortened run) do not count."""
        inside = [t for t, _ in self.profile if 0.0 <= t <= self.duration_s]
        return self.rate * max(self.multiplier(t) for t in [0.0, self.duration_s, *inside])

    def with_rate(self, rate: float) -> "Scenario":
        """The same shape at another base rate."""
        return replace(self, rate=rate)

    def with_duration(self, duration_s: float) -> "Scenario":
        """The same scenario with ``duration_s`` live seconds (the warm-up shrinks to a third
        if it would not fit); a burst starting at or after the end is an error."""
        if self.burst is not None and self.burst.at_s >= duration_s:
            msg = (
                f"--duration {duration_s:g}: scenario {self.name}'s burst starts at"
                f" {self.burst.at_s:g} s, after the run would end; use a duration over"
                f" {self.burst.at_s:g}"
            )
            raise ConfigError(msg)
        warmup_s = self.warmup_s if self.warmup_s < duration_s else duration_s / 3
        note = (
            f" (this run: {duration_s:g} s live, figures over {warmup_s:g}-{duration_s:g} s)"
            if duration_s != self.duration_s
            else ""
        )
        return replace(
            self, duration_s=duration_s, warmup_s=warmup_s, description=self.description + note
        )

    def catalog_path(self) -> Path:
        """The catalog file: a bare name is one of ``load_tests/catalogs``."""
        path = Path(self.catalog)
        if path.is_absolute() or path.parent != Path():
            return path
        return Path(str(resources.files(CATALOG_DIR).joinpath(self.catalog)))

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for reports."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["profile"] = [list(p) for p in self.profile]
        out["burst"] = None if self.burst is None else vars(self.burst)
        out["peak_rate"] = self.peak_rate()
        return out


def scenario_names() -> list[str]:
    """The scenarios shipped in ``load_tests/scenarios``."""
    files = resources.files(SCENARIO_DIR).iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".toml"))


def load_scenario(name_or_path: str) -> Scenario:
    """A shipped scenario by name, or a scenario file; errors name the file and key."""
    path = Path(name_or_path)
    if not path.suffix:
        if name_or_path not in scenario_names():
            known = ", ".join(scenario_names())
            msg = f"no scenario {name_or_path!r}; shipped ones: {known} (or give a .toml path)"
            raise ConfigError(msg)
        path = Path(str(resources.files(SCENARIO_DIR).joinpath(f"{name_or_path}.toml")))
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        msg = f"scenario {path}: {exc}"
        raise ConfigError(msg) from exc
    return parse_scenario(raw, str(path))


_NUMBERS = {
    "duration_s": float,
    "rate": float,
    "warmup_s": float,
    "partitions": int,
    "seed": int,
    "allowed_lateness_ms": int,
    "disorder_ms": int,
    "backfill_s": float,
    "population": int,
    "lead_s": float,
}


def _bad(where: str, key: str, why: str) -> NoReturn:
    msg = f"scenario {where}: {key}: {why}"
    raise ConfigError(msg)


def parse_scenario(raw: dict[str, Any], where: str) -> Scenario:
    """Validate a parsed scenario table."""

    known = {f.name for f in fields(Scenario)}
    for key in raw:
        if key not in known:
            _bad(where, key, f"unknown key (known: {', '.join(sorted(known))})")
    if not isinstance(raw.get("name"), str) or not raw["name"]:
        _bad(where, "name", "a non-empty string is required")
    values: dict[str, Any] = {"name": raw["name"]}
    for key in ("description", "catalog", "clock"):
        if key in raw:
            if not isinstance(raw[key], str):
                _bad(where, key, "expected a string")
            values[key] = raw[key]
    for key, kind in _NUMBERS.items():
        if key in raw:
            value = raw[key]
            if kind is int and not (isinstance(value, int) and not isinstance(value, bool)):
                _bad(where, key, f"expected an integer >= 0, got {value!r}")
            number = _number(value, where, key)
            values[key] = value if kind is int else number
    scenario = Scenario(**values)
    if scenario.clock not in ("live", "replay"):
        _bad(where, "clock", f"expected live or replay, got {scenario.clock!r}")
    if scenario.duration_s <= 0 or scenario.rate <= 0 or scenario.partitions <= 0:
        _bad(where, "duration_s/rate/partitions", "must be > 0")
    if scenario.warmup_s >= scenario.duration_s:
        _bad(where, "warmup_s", "must be shorter than duration_s")
    profile = _profile(raw.get("profile", []), scenario.duration_s, where)
    try:
        catalog = load_catalog(scenario.catalog_path())
    except AtoError as exc:
        _bad(where, "catalog", str(exc))
    burst = _burst(raw["burst"], where) if "burst" in raw else None
    if burst is not None:
        _check_burst(burst, scenario, catalog, where)
    return replace(scenario, profile=profile, burst=burst)


def _number(value: Any, where: str, key: str) -> float:
    """A finite number >= 0 (a TOML int or float)."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or value < 0:
        _bad(where, key, f"expected a finite number >= 0, got {value!r}")
    return float(value)


def _profile(raw: Any, duration_s: float, where: str) -> tuple[tuple[float, float], ...]:
    if not isinstance(raw, list):
        _bad(where, "profile", "expected a list of [seconds, multiplier] points")
    points: list[tuple[float, float]] = []
    for point in raw:
        ok = isinstance(point, list) and len(point) == 2
        if not ok or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
            for v in point
        ):
            _bad(where, "profile", f"expected [seconds, multiplier >= 0], got {point!r}")
        if points and point[0] <= points[-1][0]:
            _bad(where, "profile", "times must increase")
        if point[0] > duration_s:
            _bad(where, "profile", f"time {point[0]} is past duration_s ({duration_s})")
        points.append((float(point[0]), float(point[1])))
    if points and not any(m > 0 for _, m in points):
        _bad(where, "profile", "every multiplier is 0: no traffic")
    return tuple(points)


def _burst(raw: Any, where: str) -> Burst:
    if not isinstance(raw, dict) or set(raw) != {"journey", "step", "at_s", "for_s", "share"}:
        _bad(where, "burst", "expected a table with journey, step, at_s, for_s, share")
    for key in ("journey", "step"):
        if not isinstance(raw[key], str):
            _bad(where, f"burst.{key}", f"expected a string, got {raw[key]!r}")
    at_s, for_s, share = (_number(raw[k], where, f"burst.{k}") for k in ("at_s", "for_s", "share"))
    if for_s <= 0:
        _bad(where, "burst.for_s", "must be > 0")
    if share > 1.0:
        _bad(where, "burst.share", "must be within [0, 1]")
    return Burst(raw["journey"], raw["step"], float(at_s), float(for_s), float(share))


def _check_burst(burst: Burst, scenario: Scenario, catalog: Catalog, where: str) -> None:
    """The burst starts within the live part, at a journey and step of the catalog."""
    if burst.at_s >= scenario.duration_s:
        _bad(where, "burst.at_s", f"must be before duration_s ({scenario.duration_s:g})")
    journeys = {j.name: j for j in catalog.journeys}
    if burst.journey not in journeys:
        _bad(where, "burst.journey", f"no journey {burst.journey!r} in {scenario.catalog}")
    steps = [s.name for s in journeys[burst.journey].steps]
    if burst.step not in steps:
        _bad(where, "burst.step", f"no step {burst.step!r} in journey {burst.journey!r}")
