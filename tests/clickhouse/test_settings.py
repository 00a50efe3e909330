"""The [clickhouse] settings: defaults, the default URL, secrets and checks."""

from pathlib import Path

import pytest

from ato.config import ClickHouseSettings, Settings, clickhouse_url, load_settings, mask_url
from ato.exceptions import ConfigError


def test_metrics_are_on_by_default_in_the_out_dir() -> None:
    s = Settings(out_dir=Path("runs/x"))
    assert s.clickhouse.enabled
    assert clickhouse_url(s) == f"chdb://{Path('runs/x/clickhouse').resolve()}"


def test_the_password_never_shows(tmp_path: Path) -> None:
    env = {
        "ATO_CLICKHOUSE_URL": "https://analyst@ch.example:8443/metrics",
        "ATO_CLICKHOUSE_PASSWORD": "p@ss/word",
    }
    s = load_settings(None, env)
    assert "p@ss" not in repr(s) and "password" not in repr(s.clickhouse)
    assert clickhouse_url(s) == "https://analyst:p%40ss%2Fword@ch.example:8443/metrics"
    inline = ClickHouseSettings(url="http://bob:s3cret@h:8123")
    assert "s3cret" not in repr(inline) and "http://bob:***@h:8123" in repr(inline)
    assert mask_url("http://bob:s3cret@h:8123/db?x=1") == "http://bob:***@h:8123/db?x=1"


def test_a_file_sets_the_section(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[clickhouse]\nenabled = false\nflush_rows = 500\ndatabase = "metrics"\n')
    s = load_settings(path, {"ATO_CLICKHOUSE_RETRY_TIMEOUT_S": "5"})
    assert (s.clickhouse.enabled, s.clickhouse.flush_rows) == (False, 500)
    assert (s.clickhouse.database, s.clickhouse.retry_timeout_s) == ("metrics", 5.0)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"url": "mysql://h"}, "clickhouse.url: expected chdb://PATH"),
        ({"database": "my-db"}, "clickhouse.database: expected a plain identifier"),
        ({"flush_rows": 0}, "clickhouse.flush_rows: must be > 0"),
        ({"retry_timeout_s": -1.0}, "clickhouse.retry_timeout_s: must be >= 0"),
        ({"max_buffer_rows": 10, "flush_rows": 20}, "max_buffer_rows .* must be >= flush_rows"),
        ({"url": "http://u:S3cret@[::1/x"}, r"clickhouse.url 'http://u:\*\*\*@\[::1/x': Invalid"),
        ({"url": "http://h:99999"}, "clickhouse.url 'http://h:99999': the port is not a port"),
        ({"url": "chdb://"}, "clickhouse.url 'chdb://' names no directory"),
        ({"url": "chdb://?x=1"}, "clickhouse.url 'chdb://\\?x=1' names no directory"),
    ],
)
def test_bad_values_name_the_key(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ClickHouseSettings(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "https://analyst:Tr0ub4dor/xyz@ch.example.com:8443",  # the "port" was 'Tr0ub4dor'
        "https://analyst:1234/Tr0ub4dor@ch.example.com:8443",  # port 1234, host 'analyst'
        "https://analyst:Tr0ub4dor?x@ch.example.com:8443",
        "https://analyst:Tr0ub4dor#x@ch.example.com:8443",
    ],
)
def test_a_password_with_an_unencoded_slash_is_refused_without_showing_it(url: str) -> None:
    """Python's URL parser ends the address at the first '/', '?' or '#': the message quoted
    a piece of the password as the port, or the URL passed with the password in its path
    and was shown unmasked."""
    with pytest.raises(ConfigError, match="must be percent-encoded, e.g. '/' as %2F") as info:
        ClickHouseSettings(url=url)
    text = str(info.value)
    assert "Tr0ub4dor" not in text and "1234" not in text
    assert "analyst:***@ch.example.com:8443" in text
    assert "Tr0ub4dor" not in mask_url(url)


def test_a_password_holding_an_at_sign_is_masked_whole() -> None:
    assert mask_url("http://bob:p@ss@h:8123/db") == "http://bob:***@h:8123/db"
    assert mask_url("chdb:///tmp/a@b") == "chdb:///tmp/a@b"  # a path, not a user part
