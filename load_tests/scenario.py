"""Load-test scenarios as data: ``load_tests/scenarios/*.toml`` (format: docs/loadtest.md).

A scenario says how much traffic to send and how it is shaped: a rate (events/s) times a
piecewise-linear ``profile`` of multipliers over the live part, an optional stall burst at one
step, an optional backfill (history sent at full speed before the live part) and an optional
population of idle clients, each with one open journey, loaded before the live part.
"""

import bisect
import tomllib
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from ato.exceptions import ConfigError

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
        """The highest rate the profile asks for (events/s)."""
        return self.rate * max([m for _, m in self.profile] or [1.0])

    def with_rate(self, rate: float) -> "Scenario":
        """The same shape at another base rate."""
        return replace(self, rate=rate)

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
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                _bad(where, key, f"expected a number >= 0, got {value!r}")
            values[key] = kind(value)
    scenario = Scenario(**values)
    if scenario.clock not in ("live", "replay"):
        _bad(where, "clock", f"expected live or replay, got {scenario.clock!r}")
    if scenario.duration_s <= 0 or scenario.rate <= 0 or scenario.partitions <= 0:
        _bad(where, "duration_s/rate/partitions", "must be > 0")
    if scenario.warmup_s >= scenario.duration_s:
        _bad(where, "warmup_s", "must be shorter than duration_s")
    profile = _profile(raw.get("profile", []), scenario.duration_s, where)
    burst = _burst(raw["burst"], where) if "burst" in raw else None
    return replace(scenario, profile=profile, burst=burst)


def _profile(raw: Any, duration_s: float, where: str) -> tuple[tuple[float, float], ...]:
    if not isinstance(raw, list):
        _bad(where, "profile", "expected a list of [seconds, multiplier] points")
    points: list[tuple[float, float]] = []
    for point in raw:
        ok = isinstance(point, list) and len(point) == 2
        if not ok or not all(isinstance(v, int | float) and v >= 0 for v in point):
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
    if not 0.0 <= raw["share"] <= 1.0:
        _bad(where, "burst.share", "must be within [0, 1]")
    return Burst(
        str(raw["journey"]),
        str(raw["step"]),
        float(raw["at_s"]),
        float(raw["for_s"]),
        float(raw["share"]),
    )
