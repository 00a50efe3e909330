"""`ato profiles load|generate|show` against the test redis-server, and generated profiles."""

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ato.catalog import SEGMENTS, load_catalog
from ato.cli import main
from ato.config import GeneratorSettings, RedisSettings
from ato.exceptions import ConfigError
from ato.generator import generate
from policy.generated import generated_profiles
from policy.profile_files import read_profiles
from policy.profiles import VALUE_TIERS

CSV = """client_id,segment,value_tier,rm_id,preferred_channel,tz,do_not_contact
C1,senior,gold,RM7,phone,Europe/London,false
C2,executive,private,,,,1
"""
JSONL = (
    '{"client_id": "J1", "segment": "car_owner", "preferred_channel": "push"}\n'
    '{"client_id": "J2", "segment": "young_trendsetter", "do_not_contact": true}\n'
)
SECRET = "s3cr3t-pw"


@pytest.fixture(autouse=True)
def _no_redis_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose the Redis url themselves."""
    for var in ("ATO_REDIS_URL", "ATO_REDIS_PASSWORD"):
        monkeypatch.delenv(var, raising=False)


def _show(url: str, client_id: str, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """`ato profiles show` output as {"title": first line, field: value}."""
    assert main(["profiles", "show", client_id, "--redis-url", url]) == 0
    title, *rows = capsys.readouterr().out.strip().splitlines()
    return {"title": title} | dict(row.split(maxsplit=1) for row in rows)


def test_load_csv_and_jsonl_then_show(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.csv").write_text(CSV)
    (tmp_path / "p.jsonl").write_text(JSONL)
    for name in ("p.csv", "p.jsonl"):
        assert main(["profiles", "load", str(tmp_path / name), "--redis-url", redis_url]) == 0
        assert "loaded 2 profiles" in capsys.readouterr().out
    c1 = _show(redis_url, "C1", capsys)
    assert c1["title"] == "C1: stored profile"
    assert (c1["segment"], c1["value_tier"], c1["rm_id"]) == ("senior", "gold", "RM7")
    assert (c1["tz"], c1["do_not_contact"]) == ("Europe/London", "false")
    j2 = _show(redis_url, "J2", capsys)
    assert (j2["segment"], j2["value_tier"], j2["do_not_contact"]) == (
        "young_trendsetter",
        "mass",
        "true",
    )


def test_unknown_client_shows_the_defaults(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = _show(redis_url, "nobody", capsys)
    assert shown["title"] == "nobody: unknown client: defaults"
    assert (shown["segment"], shown["value_tier"], shown["tz"]) == (
        "savvy_regular",
        "mass",
        "Asia/Shanghai",
    )


def test_bad_file_names_every_line_and_writes_nothing(
    tmp_path: Path, redis_url: str, r: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("client_id,segment,tz\nC1,senior,Asia/Shanghai\nC2,pirates,\nC3,senior,Mars/X\n")
    assert main(["profiles", "load", str(bad), "--redis-url", redis_url]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3: field 'segment'" in err
    assert f"{bad}:4: field 'tz'" in err
    assert "nothing loaded" in err
    assert r.dbsize() == 0


def test_generate_load_show_round_trip(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gen.jsonl"
    assert main(["profiles", "generate", "--clients", "300", "--seed", "3", "--out", str(out)]) == 0
    assert "wrote 300 profiles" in capsys.readouterr().out
    written = read_profiles(out)
    traffic = generate(load_catalog(None), GeneratorSettings(clients=300, seed=3))
    assert written == generated_profiles(traffic)
    short = tmp_path / "short.jsonl"  # a run with --span-s 21600 has other segments
    argv = ["--clients", "300", "--seed", "3", "--span-s", "21600", "--out", str(short)]
    assert main(["profiles", "generate", *argv]) == 0
    run_traffic = generate(load_catalog(None), GeneratorSettings(clients=300, seed=3, span_s=21600))
    assert read_profiles(short) == generated_profiles(run_traffic) != written
    assert main(["profiles", "load", str(out), "--redis-url", redis_url]) == 0
    capsys.readouterr()
    for profile in written[:5]:
        shown = _show(redis_url, profile.client_id, capsys)
        assert shown["title"] == f"{profile.client_id}: stored profile"
        assert shown["segment"] == profile.segment
        assert shown["value_tier"] == profile.value_tier
        assert shown["rm_id"] == (profile.rm_id or "-")
        assert shown["tz"] == profile.tz


def test_the_documented_profiles_example_holds(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/policy.md's generate, load and show, as a user would run them (the example
    went stale when the generator changed: it showed another segment for its client)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text()
    generated = re.search(r"\$ ato profiles generate --clients (\d+) --seed (\d+) ", doc)
    show = re.search(r"\$ ato profiles show (\S+)\n(\S+: stored profile)\n((?:  .*\n)+)", doc)
    assert generated and show, "docs/policy.md lost its profiles example"
    out = tmp_path / "profiles.jsonl"
    argv = ["--clients", generated[1], "--seed", generated[2], "--out", str(out)]
    assert main(["profiles", "generate", *argv]) == 0
    assert main(["profiles", "load", str(out), "--redis-url", redis_url]) == 0
    capsys.readouterr()
    documented = {"title": show[2]} | dict(row.split(maxsplit=1) for row in show[3].splitlines())
    assert _show(redis_url, show[1], capsys) == documented


def test_generate_needs_a_json_lines_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gen.csv"
    assert main(["profiles", "generate", "--clients", "10", "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err
    assert not out.exists()


def test_env_url_is_used_without_option(
    tmp_path: Path,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "p.csv").write_text(CSV)
    monkeypatch.setenv("ATO_REDIS_URL", redis_url)
    assert main(["profiles", "load", str(tmp_path / "p.csv")]) == 0
    assert main(["profiles", "show", "C2"]) == 0
    assert "C2: stored profile" in capsys.readouterr().out


def test_no_url_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.csv").write_text(CSV)
    assert main(["profiles", "load", str(tmp_path / "p.csv")]) == 2
    assert "--redis-url" in capsys.readouterr().err


@pytest.fixture
def acl_user(r: redis.Redis) -> Iterator[str]:
    """A Redis user ``ato`` with password ``SECRET`` (the default user stays open)."""
    r.acl_setuser("ato", enabled=True, passwords=[f"+{SECRET}"], keys=["*"], commands=["+@all"])
    try:
        yield "ato"
    finally:
        r.acl_deluser("ato")


def test_password_is_used_and_never_printed(
    tmp_path: Path,
    redis_url: str,
    acl_user: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "p.csv").write_text(CSV)
    user_url = redis_url.replace("redis://", f"redis://{acl_user}@")
    monkeypatch.setenv("ATO_REDIS_URL", user_url)
    monkeypatch.setenv("ATO_REDIS_PASSWORD", SECRET)
    assert main(["profiles", "load", str(tmp_path / "p.csv")]) == 0
    assert main(["profiles", "show", "C1"]) == 0
    monkeypatch.setenv("ATO_REDIS_PASSWORD", "wrong")
    assert main(["profiles", "show", "C1"]) == 2  # the password was really used
    url_with_secret = user_url.replace("@", f":{SECRET}@")
    assert main(["profiles", "show", "C1", "--redis-url", url_with_secret]) == 0
    assert (
        main(["profiles", "show", "C1", "--redis-url", "redis://u:" + SECRET + "@127.0.0.1:1"]) == 2
    )
    out, err = capsys.readouterr()
    assert "C1: stored profile" in out
    assert "***" in err
    assert SECRET not in out + err


def test_generated_profiles_are_deterministic_and_cover_every_segment() -> None:
    cfg = GeneratorSettings(clients=3_000, seed=11)
    catalog = load_catalog(None)
    first = generated_profiles(generate(catalog, cfg))
    assert first == generated_profiles(generate(catalog, cfg))
    assert len(first) == 3_000
    assert {p.segment for p in first} == set(SEGMENTS)
    assert {p.value_tier for p in first} == set(VALUE_TIERS)
    zones = Counter(p.tz for p in first)
    assert zones["Asia/Shanghai"] > 0.9 * len(first) and len(zones) > 3
    dnc = sum(p.do_not_contact for p in first)
    assert 0 < dnc < 0.05 * len(first)
    for p in first:
        assert bool(p.rm_id) == (
            p.value_tier in ("platinum", "diamond", "private")
            or (
                p.value_tier == "gold"
                and p.segment in ("wealth_white_collar", "small_business_owner")
            )
        )
        assert p.preferred_channel != "rm_task" or p.rm_id
    other_seed = generated_profiles(generate(catalog, GeneratorSettings(clients=3_000, seed=12)))
    assert [p.client_id for p in other_seed] != [p.client_id for p in first]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("url", "http://localhost:6379"),
        ("profile_ttl_s", -1.0),
        ("live_state_ttl_s", 0),
        ("live_state_ttl_s", 10 * 365 * 86_400 + 1),  # Redis would overflow the expiry
        ("live_state_ttl_s", 2**63 - 1),
        ("profile_ttl_s", 86_401.0),
        ("timeout_s", 0.0),
        ("timeout_s", 3_601.0),
        ("outage_wait_s", 8 * 86_400.0),
        ("live_state_interval_ms", 86_400_001),
        ("max_deferred", 0),
    ],
)
def test_bad_redis_settings_name_the_key(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"redis.{field}"):
        RedisSettings(**{field: value})


def test_redis_settings_hide_the_password() -> None:
    settings = RedisSettings(url="redis://ato:inurl@h:1/0", password=SECRET)
    assert SECRET not in repr(settings) and "inurl" not in repr(settings)
    assert RedisSettings(url="redis://ato@h:1/0", password="p w").connection_url() == (
        "redis://ato:p%20w@h:1/0"
    )
    assert settings.connection_url() == settings.url  # a password in the url wins
