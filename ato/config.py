"""Settings: one typed object with every knob, its default and its meaning in one place.

``docs/configuration.md`` lists the same keys; ``tests/test_config.py`` checks that the two
agree, so a default changed here without the docs fails the build.
"""

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ato.exceptions import ConfigError

CLOCKS = ("replay", "live")
LATE_POLICIES = ("output", "count")
DECODERS = ("scan", "orjson")


def _knob(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class EngineSettings:
    """How the journey flow batches, keys and times its work."""

    shards: int = _knob(16, "Clients hash into this many state shards (fixed; >= workers).")
    batch_size: int = _knob(50_000, "Most raw messages a source hands over as one batch.")
    allowed_lateness_ms: int = _knob(
        500, "Watermark = per-partition max event time minus this (ms)."
    )
    idle_timeout_ms: int = _knob(
        10_000, "A partition silent this long (wall clock, ms) stops holding the watermark."
    )
    clock: str = _knob(
        "replay", "replay: event time only; live: watermark follows wall clock when all idle."
    )
    tick_ms: int = _knob(200, "How often (wall clock, ms) shards re-check idle inputs.")
    late_events: str = _knob(
        "output", "output: late events go to the late output; count: only counted."
    )
    decoder: str = _knob(
        "scan", "scan: numba scanner, orjson for the rest; orjson: orjson for every message."
    )
    max_message_bytes: int = _knob(65_536, "Larger messages are dead-lettered as oversized.")
    max_client_id_len: int = _knob(64, "Longer client ids are dead-lettered.")
    min_event_ts_ms: int = _knob(
        946_684_800_000, "Events before this epoch-ms (2000-01-01) are absurd: dead-lettered."
    )
    max_future_ms: int = _knob(
        86_400_000, "Events this far (ms) ahead of the wall clock are absurd: dead-lettered."
    )
    epoch_interval_s: float = _knob(
        10.0, "Bytewax epoch length (s): snapshot and sink-flush interval."
    )

    def __post_init__(self) -> None:
        positive = ("shards", "batch_size", "tick_ms", "max_message_bytes", "max_client_id_len")
        for name in positive:
            if getattr(self, name) <= 0:
                msg = f"engine.{name}: must be > 0, got {getattr(self, name)!r}"
                raise ConfigError(msg)
        for name in ("allowed_lateness_ms", "idle_timeout_ms", "max_future_ms"):
            if getattr(self, name) < 0:
                msg = f"engine.{name}: must be >= 0, got {getattr(self, name)!r}"
                raise ConfigError(msg)
        if self.clock not in CLOCKS:
            msg = f"engine.clock: expected one of {CLOCKS}, got {self.clock!r}"
            raise ConfigError(msg)
        if self.decoder not in DECODERS:
            msg = f"engine.decoder: expected one of {DECODERS}, got {self.decoder!r}"
            raise ConfigError(msg)
        if self.late_events not in LATE_POLICIES:
            msg = f"engine.late_events: expected one of {LATE_POLICIES}, got {self.late_events!r}"
            raise ConfigError(msg)
        if self.epoch_interval_s <= 0:
            msg = f"engine.epoch_interval_s: must be > 0, got {self.epoch_interval_s!r}"
            raise ConfigError(msg)


@dataclass(frozen=True)
class GeneratorSettings:
    """The built-in traffic generator (the default input)."""

    clients: int = _knob(100_000, "Simulated clients.")
    journeys_per_client: float = _knob(1.5, "Mean journey instances a client starts.")
    span_s: int = _knob(3 * 86_400, "Event-time span of the generated traffic (s).")
    start_ms: int = _knob(
        1_767_600_000_000, "Event time of the first event (epoch ms; replay clock)."
    )
    seed: int = _knob(7, "Random seed: the same seed gives the same events and ground truth.")
    stall_share: float = _knob(0.3, "Share of journey instances made to stall at some step.")
    resume_share: float = _knob(0.4, "Share of stalled instances that resume after the stall.")
    partitions: int = _knob(4, "Input partitions (clients split by hash).")
    disorder_ms: int = _knob(
        400, "Events arrive shuffled by up to this much (ms); keep < allowed lateness."
    )
    rate: float = _knob(0.0, "Events/s to pace the generator at; 0 = as fast as possible.")

    def __post_init__(self) -> None:
        if self.clients <= 0 or self.partitions <= 0 or self.span_s <= 0:
            msg = "generator.clients, partitions and span_s must be > 0"
            raise ConfigError(msg)
        for name in ("stall_share", "resume_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                msg = f"generator.{name}: must be within [0, 1], got {getattr(self, name)!r}"
                raise ConfigError(msg)
        if self.disorder_ms < 0 or self.rate < 0 or self.journeys_per_client <= 0:
            msg = "generator.disorder_ms and rate must be >= 0, journeys_per_client > 0"
            raise ConfigError(msg)


@dataclass(frozen=True)
class Settings:
    """Everything a run needs; defaults run the embedded job."""

    engine: EngineSettings = field(default_factory=EngineSettings)
    generator: GeneratorSettings = field(default_factory=GeneratorSettings)
    catalog: Path | None = _knob(None, "Journey catalog file; default: the shipped catalog.")
    out_dir: Path = _knob(Path("runs/latest"), "Where a run writes its JSON-lines outputs.")
    workers: int = _knob(1, "Bytewax worker threads in this process.")

    def with_overrides(self, section: str, **values: Any) -> "Settings":
        """Return a copy with ``values`` replaced in ``section`` ("engine", "generator", "")."""
        clean = {k: v for k, v in values.items() if v is not None}
        if not clean:
            return self
        if not section:
            return replace(self, **clean)
        return replace(self, **{section: replace(getattr(self, section), **clean)})


def documented_defaults() -> dict[str, tuple[Any, str]]:
    """Every key as ``section.name`` with its default and its doc line."""
    out: dict[str, tuple[Any, str]] = {}
    for section, cls in (("engine", EngineSettings), ("generator", GeneratorSettings)):
        for f in fields(cls):
            out[f"{section}.{f.name}"] = (f.default, f.metadata["doc"])
    for f in fields(Settings):
        if "doc" in f.metadata:
            out[f.name] = (f.default, f.metadata["doc"])
    return out
