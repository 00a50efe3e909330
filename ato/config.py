"""Settings: one typed object with every knob, its default and its meaning in one place.

``docs/configuration.md`` lists the same keys; ``tests/ato/test_config_docs.py`` checks that
the two agree, so a default changed here without the docs fails the build. Settings come from
the defaults, then a TOML file (:func:`load_settings`), then ``ATO_<SECTION>_<KEY>``
environment variables, then command-line options.
"""

import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import quote, urlsplit, urlunsplit

from ato.exceptions import ConfigError

CLOCKS = ("replay", "live")
LATE_POLICIES = ("output", "count")
DECODERS = ("scan", "orjson")


def _knob(default: Any, doc: str, secret: bool = False) -> Any:
    metadata = {"doc": doc, "secret": secret}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata, repr=not secret)
    return field(default=default, metadata=metadata, repr=not secret)


def _default(f: Any) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


INT64_MAX = 2**63 - 1  # integer settings end up in int64 arrays and librdkafka properties
# upper bounds of engine settings whose larger values hang or overflow a run
ENGINE_MAXIMA = {
    "shards": 65_536,  # one key each: more take minutes to build before any event
    "lanes": 8,  # ato.threads.MAX_HELPERS + 1
    "tick_ms": 86_400_000,
    "epoch_interval_s": 86_400.0,
    "max_message_bytes": 1 << 30,
}
MAX_SPAN_S = 100 * 365 * 86_400
REDIS_MAXIMA = {
    # Redis turns an expiry into epoch ms: far larger ones overflow (6.2 then deletes the key)
    "live_state_ttl_s": 10 * 365 * 86_400,
    "profile_ttl_s": 86_400.0,
    "timeout_s": 3_600.0,
    "outage_wait_s": 7 * 86_400.0,
    "live_state_interval_ms": 86_400_000,
}


def report_timeout_ms(engine: "EngineSettings") -> int:
    """Longest silence (ms) of a caught-up input partition that still counts it as caught up
    (and so idle once it has had no events for ``idle_timeout_ms``); also the most one gap
    between two shard calls counts towards idleness. Bytewax calls every shard at least
    every ``tick_ms`` while the worker is free."""
    return max(1_000, 5 * engine.tick_ms)


@dataclass(frozen=True)
class EngineSettings:
    """How the journey flow batches, keys and times its work."""

    shards: int = _knob(
        16,
        "Clients hash into this many state shards (fixed; at least the workers of all"
        " processes, or some workers own none).",
    )
    lanes: int = _knob(
        1,
        "Each shard's clients split into this many lanes (1 to 8; fixed, like shards), whose"
        " state a call updates side by side (the first lane on the worker's thread, the others"
        " on helper threads) once it has 16,384 events or more. 2 lets one worker use a second"
        " core in catch-up replays with large batches (see batch_size).",
    )
    batch_size: int = _knob(
        50_000,
        "Most raw messages a source hands over as one batch. A long catch-up replay (many"
        " batches per partition) runs faster with 400000 (and 2 lanes): fewer, larger shard"
        " calls; more memory per batch.",
    )
    allowed_lateness_ms: int = _knob(
        500, "Watermark = per-partition max event time minus this (ms)."
    )
    idle_timeout_ms: int = _knob(
        10_000,
        "A partition with no valid event this long (wall clock, ms) stops holding the"
        " watermark, once its source said it is caught up (or it has sent only bad input this"
        " long).",
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
    decode_threads: int = _knob(
        2,
        "Threads scanning a batch's chunks side by side (the numba scanner releases the GIL);"
        " 1 scans on the flow's own thread.",
    )
    decode_ahead: bool = _knob(
        True,
        "Decode each input partition's next batch in the background while the flow works on"
        " the one before (one read held back per partition).",
    )
    max_message_bytes: int = _knob(65_536, "Larger messages are dead-lettered as oversized.")
    max_client_id_len: int = _knob(64, "Longer client ids are dead-lettered.")
    min_event_ts_ms: int = _knob(
        946_684_800_000, "Events before this epoch-ms (2000-01-01) are absurd: dead-lettered."
    )
    max_future_ms: int = _knob(
        86_400_000,
        "Events this far (ms) ahead of the wall clock are absurd: dead-lettered (nearer ones"
        " wait, with the live clock, until the wall clock reaches them).",
    )
    epoch_interval_s: float = _knob(
        10.0, "Bytewax epoch length (s): snapshot and sink-flush interval."
    )

    def __post_init__(self) -> None:
        positive = (
            "shards", "lanes", "batch_size", "tick_ms", "decode_threads", "max_message_bytes",
            "max_client_id_len",
        )  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                msg = f"engine.{name}: must be > 0, got {getattr(self, name)!r}"
                raise ConfigError(msg)
        for name in ("allowed_lateness_ms", "idle_timeout_ms", "max_future_ms"):
            if getattr(self, name) < 0:
                msg = f"engine.{name}: must be >= 0, got {getattr(self, name)!r}"
                raise ConfigError(msg)
        for name, most in ENGINE_MAXIMA.items():
            if getattr(self, name) > most:
                msg = f"engine.{name}: at most {most:,}, got {getattr(self, name)!r}"
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
    journeys_per_client: float = _knob(
        1.5, "Mean journey instances a client starts (at least 1, at most one per journey)."
    )
    span_s: int = _knob(
        3 * 86_400,
        "Event-time span of the journeys' starts (s); their later steps and resumes run on"
        " past it, for as long as the catalog's timeouts (up to weeks).",
    )
    start_ms: int = _knob(
        1_767_600_000_000, "Event time of the first event (epoch ms; replay clock)."
    )
    seed: int = _knob(7, "Random seed: the same seed gives the same events and ground truth.")
    stall_share: float = _knob(0.3, "Share of journey instances made to stall at some step.")
    resume_share: float = _knob(0.4, "Share of stalled instances that resume after the stall.")
    partitions: int = _knob(4, "Input partitions (clients dealt round-robin).")
    disorder_ms: int = _knob(
        400,
        "Events arrive shuffled by up to this much (ms); keep <= engine.allowed_lateness_ms"
        " (`ato run` warns).",
    )
    rate: float = _knob(
        0.0,
        "Events/s to pace the generator at; 0 = as fast as possible. Replay clock only (live,"
        " events come at their arrival times).",
    )

    def __post_init__(self) -> None:
        for name in ("clients", "partitions", "span_s"):
            if getattr(self, name) <= 0:
                msg = f"generator.{name}: must be > 0, got {getattr(self, name)!r}"
                raise ConfigError(msg)
        if self.span_s > MAX_SPAN_S:
            msg = f"generator.span_s: at most {MAX_SPAN_S:,} (100 years), got {self.span_s!r}"
            raise ConfigError(msg)
        for name in ("stall_share", "resume_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                msg = f"generator.{name}: must be within [0, 1], got {getattr(self, name)!r}"
                raise ConfigError(msg)
        for name in ("disorder_ms", "rate"):  # also refuses nan and inf from the command line
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                msg = f"generator.{name}: must be a finite number >= 0, got {getattr(self, name)!r}"
                raise ConfigError(msg)
        if not (math.isfinite(self.journeys_per_client) and self.journeys_per_client > 0):
            msg = f"generator.journeys_per_client: must be > 0, got {self.journeys_per_client!r}"
            raise ConfigError(msg)


START_POSITIONS = ("earliest", "latest")
DAY_MS = 86_400_000
MIN_FLUSH_TIMEOUT_S = 0.01
MAX_FLUSH_TIMEOUT_S = 2_147_483.0
SECURITY_PROTOCOLS = ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")


@dataclass(frozen=True)
class KafkaSettings:
    """The Kafka path: input topics in, interventions and dead letters out."""

    brokers: str = _knob(
        "", "Bootstrap servers (host:port,...). Empty: no Kafka, the generator or files feed."
    )
    input_topics: tuple[str, ...] = _knob(
        ("ato.events",), "Topics of input events (app, call, branch may be separate)."
    )
    interventions_topic: str = _knob("ato.interventions", "Where interventions are produced.")
    dead_letter_topic: str = _knob("ato.dead-letters", "Where bad input goes, with its reason.")
    start: str = _knob(
        "earliest",
        "Where a fresh run starts: earliest, latest, or an epoch-ms timestamp (a resumed run"
        " reads a partition its snapshot has no offset for from its earliest).",
    )
    stop_at_end: bool = _knob(
        False, "Stop when a read finds nothing past the end a partition had at start (backfills)."
    )
    catch_up_batches: int = _knob(
        20, "After a wait of >= 1 s, a partition reads up to this many batches at once."
    )
    poll_interval_ms: int = _knob(
        50,
        "A partition read to its end is read again after this long (ms): the most an event"
        " waits to be read, and what keeps batches large at low rates. Reads never wait for"
        " the broker, so a quiet partition never holds up the others.",
    )
    end_wait_ms: int = _knob(
        100,
        "With stop_at_end: how long (ms) an empty read at a partition's end waits for more"
        " before the partition counts as finished.",
    )
    flush_timeout_s: float = _knob(
        30.0,
        "Longest wait for delivery at an epoch end; undelivered messages then fail the run."
        " From 0.01 to 2,147,483.",
    )
    max_envelope_bytes: int = _knob(
        16 * 1024 * 1024,
        "A JSON-array message (a collector's envelope of events: a Kafka record, or a line of"
        " an input file) larger than this is not split: it is dead-lettered whole as"
        " oversized (it bounds what one message costs to parse). Input-file lines longer than"
        " this and engine.max_message_bytes are dead-lettered without being held whole.",
    )
    group_id: str = _knob(
        "ato-stream", "Consumer group the read position is committed under (monitoring only)."
    )
    commit_interval_ms: int = _knob(
        1_000,
        "How often (ms) a partition commits its read position to `group_id`, so Kafka tools"
        " show the flow's lag; 0 = never. Recovery never uses it (Bytewax snapshots do).",
    )
    security_protocol: str = _knob("plaintext", "plaintext, ssl, sasl_plaintext or sasl_ssl.")
    sasl_mechanism: str = _knob("", "SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).")
    sasl_username: str = _knob("", "SASL user name.")
    sasl_password: str = _knob("", "SASL password (never printed or logged).", secret=True)
    consumer_config: dict[str, str] = _knob(
        {}, "Extra librdkafka consumer properties (file only), e.g. fetch.max.bytes."
    )
    producer_config: dict[str, str] = _knob(
        {}, "Extra librdkafka producer properties (file only), e.g. compression.type."
    )

    def __post_init__(self) -> None:
        if not self.input_topics or not all(self.input_topics):
            msg = "kafka.input_topics: needs at least one non-empty topic name"
            raise ConfigError(msg)
        digits = self.start.isascii() and self.start.isdigit()
        if self.start not in START_POSITIONS and not (digits and int(self.start) <= INT64_MAX):
            msg = f"kafka.start: expected earliest, latest or epoch ms, got {self.start!r}"
            raise ConfigError(msg)
        if self.security_protocol not in SECURITY_PROTOCOLS:
            msg = (
                f"kafka.security_protocol: expected one of {SECURITY_PROTOCOLS},"
                f" got {self.security_protocol!r}"
            )
            raise ConfigError(msg)
        if (
            self.poll_interval_ms < 0
            or self.end_wait_ms < 0
            or self.catch_up_batches < 1
            or self.commit_interval_ms < 0
            or self.max_envelope_bytes < 1
        ):
            msg = (
                "kafka.poll_interval_ms, end_wait_ms and commit_interval_ms must be >= 0,"
                " kafka.catch_up_batches and max_envelope_bytes >= 1"
            )
            raise ConfigError(msg)
        for name in ("poll_interval_ms", "end_wait_ms", "commit_interval_ms"):
            if getattr(self, name) > DAY_MS:
                msg = f"kafka.{name}: at most a day ({DAY_MS:,}), got {getattr(self, name)!r}"
                raise ConfigError(msg)
        if not MIN_FLUSH_TIMEOUT_S <= self.flush_timeout_s <= MAX_FLUSH_TIMEOUT_S:
            msg = (
                f"kafka.flush_timeout_s: from {MIN_FLUSH_TIMEOUT_S} (above the producer's"
                f" linger.ms of 5) to {MAX_FLUSH_TIMEOUT_S:,} (librdkafka's message.timeout.ms"
                f" is a 32-bit count of ms), got {self.flush_timeout_s!r}"
            )
            raise ConfigError(msg)
        outputs = {"interventions_topic": self.interventions_topic}
        outputs["dead_letter_topic"] = self.dead_letter_topic
        for name, topic in outputs.items():
            if not topic:
                msg = f"kafka.{name}: must not be empty"
                raise ConfigError(msg)
            if topic in self.input_topics:
                msg = (
                    f"kafka.{name}: {topic!r} is also an input topic: the flow would read"
                    " its own output (a dead letter of a dead letter, without end)"
                )
                raise ConfigError(msg)
        if not self.group_id:
            msg = "kafka.group_id: must not be empty"
            raise ConfigError(msg)

    @property
    def enabled(self) -> bool:
        """Whether runs read and write Kafka."""
        return bool(self.brokers)

    def client_config(self) -> dict[str, str | int | float | bool]:
        """librdkafka properties every client of ours shares (brokers, security)."""
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.brokers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password
        return config


CLICKHOUSE_SCHEMES = ("chdb", "http", "https")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ClickHouseSettings:
    """Live metrics in ClickHouse: an embedded chDB database by default, or a server."""

    enabled: bool = _knob(True, "Write metrics (funnels, stalls, decisions, outcomes, health).")
    url: str = _knob(
        "",
        "chdb:///abs/path, chdb://rel/path or http(s)://user@host:port[/db]."
        " Empty: chdb://<out_dir>/clickhouse. chdb://memory: in memory only, lost at exit.",
    )
    password: str = _knob(
        "", "Server password, instead of one in the url (never printed or logged).", secret=True
    )
    database: str = _knob(
        "ato",
        "Database of the metric tables (created by the migrations); a server url's /db path"
        " overrides it. `ato query` runs in it: queries name its tables without a database.",
    )
    flush_interval_s: float = _knob(
        5.0,
        "Buffered rows are inserted at least this often (s; checked as rows arrive, so within"
        " health_interval_s when the flow is quiet), at every epoch end of a run with"
        " recovery (which waits for them), and at the end.",
    )
    flush_rows: int = _knob(100_000, "A table's buffered rows are inserted once this many.")
    max_buffer_rows: int = _knob(
        2_000_000,
        "Rows waiting for ClickHouse beyond this make the flow wait for inserts; if they stay"
        " beyond it with nothing in flight (inserts failing), the run fails instead of growing.",
    )
    retry_timeout_s: float = _knob(
        60.0,
        "Failing inserts are retried (with backoff) this long (s) from the first failed"
        " attempt's start; then the run fails. Also the longest one request to a server may"
        " take (at least 10 s).",
    )
    health_interval_s: float = _knob(10.0, "Wall-clock interval (s) of the flow_health rows.")
    background_inserts: bool = _knob(
        True,
        "Insert from a background thread, so the flow goes on while ClickHouse (or chDB,"
        " which releases the GIL) takes the block; false: the flow waits for each insert.",
    )

    def __post_init__(self) -> None:
        problem = url_address_problem(self.url)
        if problem:
            msg = f"clickhouse.url {mask_url(self.url)!r}: {problem}"
            raise ConfigError(msg)
        scheme = self.url.partition("://")[0].lower() if "://" in self.url else ""
        if self.url and scheme not in CLICKHOUSE_SCHEMES:
            msg = (
                "clickhouse.url: expected chdb://PATH, http://HOST:PORT or https://HOST:PORT,"
                f" got {mask_url(self.url)!r}"
            )
            raise ConfigError(msg)
        if scheme == "chdb" and not chdb_location(self.url):
            msg = (
                f"clickhouse.url {self.url!r} names no directory: chdb:///abs/path or"
                " chdb://rel/path (chdb://memory for a database lost at exit; empty url:"
                " chdb://<out_dir>/clickhouse)"
            )
            raise ConfigError(msg)
        if not _IDENTIFIER.match(self.database):
            msg = f"clickhouse.database: expected a plain identifier, got {self.database!r}"
            raise ConfigError(msg)
        for name in ("flush_interval_s", "flush_rows", "max_buffer_rows", "health_interval_s"):
            if getattr(self, name) <= 0:
                msg = f"clickhouse.{name}: must be > 0, got {getattr(self, name)!r}"
                raise ConfigError(msg)
        if self.retry_timeout_s < 0:
            msg = f"clickhouse.retry_timeout_s: must be >= 0, got {self.retry_timeout_s!r}"
            raise ConfigError(msg)
        if self.max_buffer_rows < self.flush_rows:
            msg = (
                f"clickhouse.max_buffer_rows ({self.max_buffer_rows}) must be >= flush_rows"
                f" ({self.flush_rows})"
            )
            raise ConfigError(msg)

    def __repr__(self) -> str:
        """Every setting but the password; a password inside ``url`` shows as ``***``."""
        shown = [
            f"{f.name}={mask_url(self.url) if f.name == 'url' else getattr(self, f.name)!r}"
            for f in fields(self)
            if not f.metadata["secret"]
        ]
        return f"ClickHouseSettings({', '.join(shown)})"


REDIS_SCHEMES = ("redis", "rediss", "unix")


def _check_redis_address(url: str) -> None:
    """Refuse a redis(s):// URL that is malformed, whose port is not a port number or whose
    database is not a number, or whose query names options redis-py does not take."""
    problem = url_address_problem(url)
    if problem:
        msg = f"redis.url {mask_url(url)!r}: {problem}"
        raise ConfigError(msg)
    parts = urlsplit(url)
    if parts.scheme.lower() in ("redis", "rediss") and not parts.hostname:
        msg = f"redis.url: no host in {mask_url(url)!r} (expected redis://HOST:PORT/DB)"
        raise ConfigError(msg)
    db = parts.path.strip("/")
    if db and not db.isdigit():
        msg = f"redis.url: the database after the port must be a number, got {mask_url(url)!r}"
        raise ConfigError(msg)
    import redis  # noqa: PLC0415 - only for a Redis url: every ato command reads settings

    try:  # builds a connection object from the URL's options; connects to nothing
        redis.ConnectionPool.from_url(url).make_connection()
    except (TypeError, ValueError) as exc:
        msg = f"redis.url: {mask_url(url)!r}: {exc}"
        raise ConfigError(msg) from None


@dataclass(frozen=True)
class RedisSettings:
    """Redis: client profiles, contact-policy caps and live journey state (docs/policy.md)."""

    url: str = _knob(
        "",
        "redis://[user@]host:port/db, rediss://... or unix:///path."
        " Empty: no Redis, contact policy off.",
    )
    password: str = _knob(
        "", "Password, instead of one in the url (never printed or logged).", secret=True
    )
    profile_ttl_s: float = _knob(
        60.0, "Profiles are cached in-process this long (s); a reload shows after at most this."
    )
    policy_file: str = _knob(
        "", "Contact-policy TOML file. Empty: the shipped policy/default_policy.toml."
    )
    live_state_ttl_s: int = _knob(
        30 * 86_400,
        "Live journey-state hashes expire this long (s) after their last field set; keep it"
        " above the catalog's longest step timeout and close_after (a warning says so).",
    )
    timeout_s: float = _knob(2.0, "Connect and command timeout (s) of every Redis call.")
    max_deferred: int = _knob(
        100_000,
        "Decisions that may wait per shard while Redis is unreachable; when full, the flow"
        " pauses (retrying) rather than drop or skip the caps.",
    )
    outage_wait_s: float = _knob(
        300.0,
        "How long a paused flow (full buffer, or input ended) retries Redis before it stops"
        " with an error; its recovery snapshot keeps the waiting decisions.",
    )
    live_state: bool = _knob(True, "Write live journey state (ato:journey:<client>) to Redis.")
    live_state_interval_ms: int = _knob(
        1_000, "Live state is written at most this often per shard (ms), latest state only."
    )

    def __post_init__(self) -> None:
        scheme = self.url.partition("://")[0].lower() if "://" in self.url else ""
        if self.url and scheme not in REDIS_SCHEMES:
            msg = (
                "redis.url: expected redis://HOST:PORT/DB, rediss://HOST:PORT/DB or"
                f" unix:///PATH, got {mask_url(self.url)!r}"
            )
            raise ConfigError(msg)
        if scheme in ("redis", "rediss"):
            _check_redis_address(self.url)
        if self.profile_ttl_s < 0:
            msg = f"redis.profile_ttl_s: must be >= 0, got {self.profile_ttl_s!r}"
            raise ConfigError(msg)
        for name in (
            "live_state_ttl_s", "timeout_s", "max_deferred", "outage_wait_s",
            "live_state_interval_ms",
        ):  # fmt: skip
            if getattr(self, name) <= 0:
                msg = f"redis.{name}: must be > 0, got {getattr(self, name)!r}"
                raise ConfigError(msg)
        for name, most in REDIS_MAXIMA.items():
            if getattr(self, name) > most:
                msg = f"redis.{name}: at most {most:,}, got {getattr(self, name)!r}"
                raise ConfigError(msg)

    @property
    def enabled(self) -> bool:
        """Whether runs use Redis (profiles, contact policy, live state)."""
        return bool(self.url)

    def connection_url(self) -> str:
        """``url`` with ``password`` filled in (unless the url has one); never print it."""
        if not self.password or urlsplit(self.url).password is not None:
            return self.url
        parts = urlsplit(self.url)
        user = quote(parts.username or "", safe="")
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{user}:{quote(self.password, safe='')}@{host}"
        return urlunsplit(parts._replace(netloc=netloc))

    def __repr__(self) -> str:
        """Every setting but the password; a password inside ``url`` shows as ``***``."""
        shown = [
            f"{f.name}={mask_url(self.url) if f.name == 'url' else getattr(self, f.name)!r}"
            for f in fields(self)
            if not f.metadata["secret"]
        ]
        return f"RedisSettings({', '.join(shown)})"


NETWORK_SCHEMES = ("http", "https", "redis", "rediss")  # URLs with a host (not chdb:// or unix://)
_ENCODE_HINT = (
    "a '/', '?', '#' or '@' in the user or password must be percent-encoded, e.g. '/' as %2F"
)


def url_address_problem(url: str) -> str | None:
    """What is wrong with the host and port of ``url``, in words that show no part of its
    password, or None. A password holding an unencoded ``/``, ``?`` or ``#`` ends the address
    early: what follows its ``:`` is read as the port, and the rest of it as the path."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL": names no part of the URL
        return str(exc)
    hint = f"; {_ENCODE_HINT}" if "@" in url else ""
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a port number
    except ValueError:  # its message quotes the "port", which may be a piece of the password
        return f"the port is not a port number (0-65535){hint}"
    after = url.partition("://")[2][len(parts.netloc) :]  # a path, query or fragment
    if parts.scheme.lower() in NETWORK_SCHEMES and "@" in after:
        return f"an '@' after the host and port{hint}"
    return None


def chdb_location(url: str) -> str:
    """What a ``chdb://`` URL names after its scheme, without a query: a directory,
    ``memory``, or nothing."""
    return url.split("://", 1)[1].split("?", 1)[0]


def mask_url(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***`` (for messages)."""
    if url_address_problem(url):  # not parsed as given: mask between the user and the last @
        return re.sub(r"(://[^:/@]*:).*@", r"\1***@", url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def clickhouse_url(settings: "Settings") -> str:
    """The ClickHouse URL a run writes to, with ``clickhouse.password`` filled in.

    Empty ``clickhouse.url``: the embedded database ``chdb://<out_dir>/clickhouse`` (absolute).
    """
    ch = settings.clickhouse
    if not ch.url:
        return f"chdb://{(settings.out_dir / 'clickhouse').resolve()}"
    if not ch.password or not ch.url.lower().startswith("http"):
        return ch.url
    parts = urlsplit(ch.url)
    user = quote(parts.username or "default", safe="")
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(ch.password, safe='')}@{host}"))


@dataclass(frozen=True)
class Settings:
    """Everything a run needs; defaults run the embedded job."""

    engine: EngineSettings = field(default_factory=EngineSettings)
    generator: GeneratorSettings = field(default_factory=GeneratorSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = field(default_factory=ClickHouseSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    catalog: Path | None = _knob(None, "Journey catalog file; default: the shipped catalog.")
    out_dir: Path = _knob(
        Path("runs/latest"), "Where a run writes its JSON-lines outputs (one run at a time)."
    )
    workers: int = _knob(1, "Bytewax worker threads in each process.")
    processes: int = _knob(1, "Processes of a local Bytewax cluster (ato run --processes).")

    def __post_init__(self) -> None:
        for name in ("workers", "processes"):
            if getattr(self, name) < 1:
                msg = f"{name}: must be >= 1, got {getattr(self, name)}"
                raise ConfigError(msg)
        envelope, message = self.kafka.max_envelope_bytes, self.engine.max_message_bytes
        if envelope < message:
            msg = (
                f"kafka.max_envelope_bytes ({envelope:,}) must be at least"
                f" engine.max_message_bytes ({message:,}): an envelope too large to split must"
                " be too large to read, so that it is dead-lettered as oversized"
            )
            raise ConfigError(msg)
        poll, reports = self.kafka.poll_interval_ms, report_timeout_ms(self.engine)
        if poll * 2 > reports:
            msg = (
                f"kafka.poll_interval_ms ({poll:,}) must be at most half of {reports:,} ms"
                " (the larger of 1,000 and 5 x engine.tick_ms): a caught-up partition that"
                " reports less often than that holds the watermark, as one held back would"
            )
            raise ConfigError(msg)

    def with_overrides(self, section: str, **values: Any) -> "Settings":
        """Return a copy with ``values`` replaced in ``section`` ("engine", "generator", "")."""
        clean = {k: v for k, v in values.items() if v is not None}
        if not clean:
            return self
        if not section:
            return replace(self, **clean)
        return replace(self, **{section: replace(getattr(self, section), **clean)})


_SECTIONS: dict[str, type] = {
    "engine": EngineSettings,
    "generator": GeneratorSettings,
    "kafka": KafkaSettings,
    "clickhouse": ClickHouseSettings,
    "redis": RedisSettings,
}


def toml_literal(value: Any) -> str:
    """``value`` as a settings file writes it (``(unset)`` for None: leave the key out)."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return str(value)


def documented_defaults() -> dict[str, tuple[Any, str]]:
    """Every key as ``section.name`` with its default and its doc line."""
    out: dict[str, tuple[Any, str]] = {}
    for section, cls in _SECTIONS.items():
        for f in fields(cls):
            out[f"{section}.{f.name}"] = (_default(f), f.metadata["doc"])
    for f in fields(Settings):
        if "doc" in f.metadata:
            out[f.name] = (_default(f), f.metadata["doc"])
    return out


def load_settings(
    path: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults, then the TOML file at ``path``, then ``ATO_*`` variables of ``environ``.

    A file has top-level keys (``out_dir``, ``workers``, ...) and ``[engine]``, ``[generator]``,
    ``[kafka]``, ``[clickhouse]`` and ``[redis]`` tables. A variable is named
    ``ATO_<SECTION>_<KEY>`` or ``ATO_<KEY>`` for top-level keys, e.g. ``ATO_KAFKA_BROKERS``;
    lists are comma-separated.
    Errors name the file or variable and the key.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    origin = "ATO_* environment"
    if path is not None:
        origin = str(path)
        try:
            # utf-8-sig: a byte-order mark (some editors write one) is not TOML
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8-sig"))
        except OSError as exc:
            msg = f"{path}: cannot read settings: {exc.strerror}"
            raise ConfigError(msg) from exc
        except UnicodeDecodeError as exc:
            msg = f"{path}: cannot read settings: not UTF-8 ({exc})"
            raise ConfigError(msg) from exc
        except tomllib.TOMLDecodeError as exc:
            msg = f"{path}: not valid TOML: {exc}"
            raise ConfigError(msg) from exc
    top = _typed(Settings, {k: v for k, v in raw.items() if k not in _SECTIONS}, f"{origin}: ")
    sections = {}
    for name, cls in _SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            msg = f"{origin}: [{name}] must be a table"
            raise ConfigError(msg)
        sections[name] = _typed(cls, table, f"{origin}: {name}.")
    for var, text in environ.items():
        if not var.startswith("ATO_"):
            continue
        section, key = _env_key(var)
        cls = _SECTIONS.get(section, Settings) if section else Settings
        hint = _field_type(cls, key, f"environment variable {var}")
        where = f"environment variable {var}"
        value = _coerce(hint, _from_env(hint, text, where), where)
        (sections[section] if section else top)[key] = value
    applied = sorted(v for v in environ if v.startswith("ATO_"))
    if path is not None and applied:  # the bad value may come from either
        origin = f"{origin} with {', '.join(applied)}"
    try:
        built = {name: _SECTIONS[name](**values) for name, values in sections.items()}
        return Settings(**built, **top)
    except ConfigError as exc:
        msg = f"{origin}: {exc}"
        raise ConfigError(msg) from exc


def _typed(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    return {
        k: _coerce(_field_type(cls, k, f"{where}{k}"), v, f"{where}{k}") for k, v in values.items()
    }


def _env_key(var: str) -> tuple[str, str]:
    name = var.removeprefix("ATO_").lower()
    for section in _SECTIONS:
        if name.startswith(section + "_"):
            return section, name.removeprefix(section + "_")
    return "", name


def _field_type(cls: type, key: str, where: str) -> Any:
    """The type of setting ``key`` of ``cls``; a clear error if there is no such key."""
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls) if f.name not in _SECTIONS]
    if key not in names:
        known = ", ".join(names + ([f"[{s}]" for s in _SECTIONS] if cls is Settings else []))
        msg = f"{where}: unknown setting (known: {known})"
        raise ConfigError(msg)
    return hints[key]


def _from_env(hint: Any, text: str, where: str) -> Any:
    if hint == tuple[str, ...]:
        return [part.strip() for part in text.split(",") if part.strip()]
    if hint is bool:
        word = text.strip().lower()
        if word in _TRUE_WORDS or word in _FALSE_WORDS:
            return word in _TRUE_WORDS
        return text  # _coerce names the key and the expected type
    if hint is int:
        return _parse(int, text)
    if hint is float:
        return _parse(float, text)
    if hint == dict[str, str]:
        msg = f"{where}: tables of properties can only be set in the settings file"
        raise ConfigError(msg)
    return text


_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")  # an empty value is an error, not "no"


def _parse(kind: type, text: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        return text  # _coerce names the key and the expected type


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """``value`` as the type ``hint`` asks for, or a ConfigError naming ``where``."""
    ok: bool
    if hint == tuple[str, ...]:
        ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    elif hint == dict[str, str]:
        ok = isinstance(value, dict)
        value = {str(k): str(v) for k, v in value.items()} if ok else value
    elif hint == Path | None and value == "":
        ok, value = True, None  # unset: the default
    elif hint in (Path, Path | None):
        ok = isinstance(value, str) and value != ""
        value = Path(value) if ok else value
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and isinstance(value, int) and abs(value) > INT64_MAX:
            msg = f"{where}: {value} is too large"
            raise ConfigError(msg)
        value = float(value) if ok else value
        if ok and not math.isfinite(value):
            msg = f"{where}: expected a finite number, got {value!r}"
            raise ConfigError(msg)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and abs(value) > INT64_MAX:
            msg = f"{where}: {value} is too large (at most {INT64_MAX})"
            raise ConfigError(msg)
    elif hint is str:
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, hint)
    if not ok:
        msg = f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}"
        raise ConfigError(msg)
    return value
