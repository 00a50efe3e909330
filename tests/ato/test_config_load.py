"""Settings from a TOML file and ATO_* variables: precedence, types, errors, secrets."""

from pathlib import Path

import pytest

from ato.config import Settings, load_settings
from ato.exceptions import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kafka.toml"


def test_no_file_no_environment_is_the_defaults() -> None:
    assert load_settings(None, {}) == Settings()


def test_the_shipped_example_loads() -> None:
    s = load_settings(EXAMPLE, {})
    assert s.kafka.enabled
    assert s.kafka.input_topics == ("ato.events",)
    assert s.kafka.consumer_config == {"fetch.max.bytes": "52428800"}
    assert s.out_dir == Path("runs/kafka")


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('workers = 3\n[engine]\nshards = 8\n[kafka]\nbrokers = "a:1"\n')
    env = {
        "ATO_KAFKA_BROKERS": "b:2",
        "ATO_KAFKA_INPUT_TOPICS": "app, call,branch",
        "ATO_ENGINE_ALLOWED_LATENESS_MS": "900",
        "HOME": "/root",  # not ours: ignored
    }
    s = load_settings(path, env)
    assert (s.kafka.brokers, s.engine.shards, s.workers) == ("b:2", 8, 3)
    assert s.kafka.input_topics == ("app", "call", "branch")
    assert s.engine.allowed_lateness_ms == 900


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[engine]\nshardz = 4\n", {}, r"s.toml: engine.shardz: unknown setting"),
        ('[engine]\nshards = "4"\n', {}, r"engine.shards: expected int, got '4'"),
        ("[engine]\nshards = 0\n", {}, r"engine.shards: must be > 0"),
        ("engine = 3\n", {}, r"\[engine\] must be a table"),
        ("[kafka\n", {}, r"not valid TOML"),
        ("", {"ATO_ENGINE_SHARDS": "many"}, r"ATO_ENGINE_SHARDS: expected int"),
        ("", {"ATO_KAFKA_BROKER": "x"}, r"ATO_KAFKA_BROKER: unknown setting"),
        ("", {"ATO_KAFKA_START": "yesterday"}, r"kafka.start: expected earliest"),
        (
            "",
            {"ATO_KAFKA_CONSUMER_CONFIG": "a=b"},
            r"ATO_KAFKA_CONSUMER_CONFIG: tables of properties can only be set in the settings file",
        ),
    ],
)
def test_errors_name_the_source_and_the_key(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, env)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[engine]\n# caf\xe9\nshards = 4\n", r"cannot read settings: not UTF-8"),
        (b"[engine]\nepoch_interval_s = " + b"1" * 400 + b"\n", r"epoch_interval_s: .* too large"),
        (b"[engine]\nshards = " + b"1" * 30 + b"\n", r"engine.shards: .* too large"),
    ],
    ids=["not-utf-8", "huge-float", "huge-int"],
)
def test_file_contents_that_used_to_give_a_traceback(
    tmp_path: Path, data: bytes, message: str
) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, {})


def test_a_byte_order_mark_and_a_misspelt_section(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(b"\xef\xbb\xbf[engine]\nshards = 4\n")
    assert load_settings(path, {}).engine.shards == 4
    path.write_text("[enigne]\nshards = 4\n")
    with pytest.raises(ConfigError, match=r"enigne: unknown setting \(known: .*\[engine\]"):
        load_settings(path, {})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.toml: cannot read settings"):
        load_settings(tmp_path / "nope.toml", {})


def test_password_is_never_in_the_repr() -> None:
    s = load_settings(None, {"ATO_KAFKA_SASL_PASSWORD": "hunter2", "ATO_KAFKA_BROKERS": "h:1"})
    assert s.kafka.sasl_password == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.kafka)


def test_start_accepts_a_timestamp() -> None:
    assert load_settings(None, {"ATO_KAFKA_START": "1767600000000"}).kafka.start == "1767600000000"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ATO_WORKERS": "0"}, r"workers: must be >= 1, got 0"),
        ({"ATO_PROCESSES": "-2"}, r"processes: must be >= 1, got -2"),
        ({"ATO_ENGINE_EPOCH_INTERVAL_S": "nan"}, r"ATO_ENGINE_EPOCH_INTERVAL_S: expected a finite"),
        ({"ATO_KAFKA_FLUSH_TIMEOUT_S": "inf"}, r"ATO_KAFKA_FLUSH_TIMEOUT_S: expected a finite"),
        ({"ATO_CLICKHOUSE_ENABLED": "ture"}, r"ATO_CLICKHOUSE_ENABLED: expected bool, got 'ture'"),
        ({"ATO_OUT_DIR": ""}, r"ATO_OUT_DIR: expected Path, got ''"),
        ({"ATO_REDIS_LIVE_STATE": ""}, r"ATO_REDIS_LIVE_STATE: expected bool, got ''"),
        ({"ATO_KAFKA_START": "²"}, r"kafka.start: expected earliest"),
        ({"ATO_KAFKA_START": "9" * 23}, r"kafka.start: expected earliest"),
        ({"ATO_KAFKA_FLUSH_TIMEOUT_S": "0.0004"}, r"kafka.flush_timeout_s: from 0.01"),
        ({"ATO_KAFKA_FLUSH_TIMEOUT_S": "0.005"}, r"above the producer's linger.ms"),
        ({"ATO_KAFKA_FLUSH_TIMEOUT_S": "4294968"}, r"kafka.flush_timeout_s: from 0.01"),
        ({"ATO_KAFKA_POLL_INTERVAL_MS": str(10**15)}, r"kafka.poll_interval_ms: at most a day"),
        ({"ATO_KAFKA_END_WAIT_MS": str(10**10)}, r"kafka.end_wait_ms: at most a day"),
        ({"ATO_KAFKA_DEAD_LETTER_TOPIC": "ato.events"}, r"dead_letter_topic: 'ato.events' is"),
        ({"ATO_KAFKA_INTERVENTIONS_TOPIC": "ato.events"}, r"interventions_topic: 'ato.events'"),
        ({"ATO_KAFKA_INTERVENTIONS_TOPIC": ""}, r"interventions_topic: must not be empty"),
        ({"ATO_KAFKA_MAX_ENVELOPE_BYTES": "100"}, r"max_envelope_bytes \(100\) must be at"),
        ({"ATO_KAFKA_POLL_INTERVAL_MS": "600"}, r"poll_interval_ms \(600\) must be at most half"),
        ({"ATO_ENGINE_TICK_MS": str(9 * 10**18)}, r"engine.tick_ms: at most 86,400,000"),
        ({"ATO_ENGINE_SHARDS": "10000000"}, r"engine.shards: at most 65,536"),
        ({"ATO_ENGINE_EPOCH_INTERVAL_S": "1e15"}, r"engine.epoch_interval_s: at most 86,400"),
        ({"ATO_GENERATOR_SPAN_S": str(9 * 10**18)}, r"generator.span_s: at most"),
        ({"ATO_ENGINE_MAX_MESSAGE_BYTES": str(10**20)}, r"MAX_MESSAGE_BYTES: .* is too large"),
    ],
)
def test_values_that_would_fail_deep_in_a_run_are_rejected_by_name(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, env)


def test_yes_no_words_and_an_empty_catalog_variable() -> None:
    on = load_settings(None, {"ATO_ENGINE_DECODE_AHEAD": "Off", "ATO_CATALOG": ""})
    assert on.engine.decode_ahead is False and on.catalog is None
    assert load_settings(None, {"ATO_ENGINE_DECODE_AHEAD": "yes"}).engine.decode_ahead is True


def test_a_bad_value_names_the_variables_beside_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[engine]\nshards = 4\n")
    with pytest.raises(ConfigError, match=r"s.toml with ATO_ENGINE_SHARDS: engine.shards: must"):
        load_settings(path, {"ATO_ENGINE_SHARDS": "0"})


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:abc/0", "redis.url '.*': the port is not a port number"),
        ("redis://127.0.0.1:99999/0", "redis.url '.*': the port is not a port number"),
        ("redis://[::1/0", "redis.url '.*': Invalid IPv6 URL"),
        ("redis://", "redis.url: no host"),
        ("rediss:///0", "redis.url: no host"),
        ("redis://127.0.0.1:6379/0?foo=bar", "redis.url: .*foo"),
        ("redis://127.0.0.1:6379/0?socket_timeout=abc", "redis.url: .*socket_timeout"),
        ("redis://127.0.0.1:6379/notadb", "the database after the port must be a number"),
        ("http://127.0.0.1:6379/0", "expected redis://HOST:PORT/DB"),
    ],
)
def test_a_malformed_redis_url_is_a_clear_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings().with_overrides("redis", url=url)


@pytest.mark.parametrize(
    "url", ["redis://:Tr0ub4dor/xyz@127.0.0.1:6379/0", "redis://:1234/Tr0ub4dor@h:6379/0"]
)
def test_a_password_with_an_unencoded_slash_is_refused_without_showing_it(url: str) -> None:
    """Before, the first said the port was bad and the second named no host; their messages
    (or a later one's URL) showed the password."""
    with pytest.raises(ConfigError, match="must be percent-encoded") as info:
        Settings().with_overrides("redis", url=url)
    assert "Tr0ub4dor" not in str(info.value) and "1234" not in str(info.value)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "redis://:secret@host:1/15", "redis://h", "unix:///s"]
)
def test_well_formed_redis_urls_are_accepted(url: str) -> None:
    assert Settings().with_overrides("redis", url=url).redis.url == url
