"""The policy file: the shipped default parses, errors name the file and the field."""

import tomllib
from pathlib import Path

import pytest

from ato.catalog import load_catalog
from policy.exceptions import PolicyError
from policy.localtime import Window
from policy.settings import Policy, check_names, default_policy_path, load_policy, parse_policy


def test_shipped_default_policy() -> None:
    policy = load_policy()
    assert policy.source == str(default_policy_path())
    assert policy.quiet_default == Window.parse("21:00-08:00")
    assert policy.quiet_window("senior") == Window.parse("20:00-09:00")
    assert policy.quiet_window("car_owner") == Window.parse("21:00-08:00")
    assert (policy.per_day, policy.per_week) == (2, 5)
    assert policy.cooldown_for("open_account") == 12 * 3_600_000
    assert policy.cooldown_for("card_activation") == 2 * 86_400_000
    assert policy.rules[0].ladder == ("remote", "offline")
    check_names(policy, load_catalog())


def test_empty_file_gives_the_documented_defaults() -> None:
    assert parse_policy({}) == Policy(source="<policy>")
    assert parse_policy({"quiet_hours": {"default": "none"}}).quiet_default is None


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ("colour = 1", "colour"),
        ("version = 2", "version"),
        ("version = true", "version"),
        ("version = 1.0", "version"),
        (
            "[[routing.rules]]\njourney = ['*', 'nojourney']\nladder = ['ai']",
            "routing.rules[0].journey",
        ),
        ("[routing]\noffline_without_rm = 'offline'", "routing.offline_without_rm"),
        ("[[routing.rules]]\nsegment = 'pirates'\nladder = ['ai']", "routing.rules[0].segment"),
        ("[[routing.rules]]\nvalue_tier = []\nladder = ['ai']", "routing.rules[0].value_tier"),
        ("[[routing.rules]]\nladder = ['ai', 'robot']", "routing.rules[0].ladder"),
        ("[[routing.rules]]\njourney = 'x'", "routing.rules[0].ladder"),
        ("[[routing.rules]]\nladder = ['ai']\npriority = 101", "routing.rules[0].priority"),
        ("[[routing.rules]]\nladder = ['ai']\nsegmnet = 'senior'", "routing.rules[0].segmnet"),
        ("[channels]\nai = ['phone']", "channels.ai"),
        ("[quiet_hours]\ndefault = '21:00-21:00'", "quiet_hours.default"),
        ("[quiet_hours]\ndefault = '25:00-08:00'", "quiet_hours.default"),
        ("[quiet_hours.segments]\nsenior = '9pm-8am'", "quiet_hours.segments.senior"),
        ("[quiet_hours.segments]\npirates = '21:00-08:00'", "quiet_hours.segments.pirates"),
        ("[caps]\nper_day = -1", "caps.per_day"),
        ("[caps]\nper_week = 'many'", "caps.per_week"),
        ("[cooldown]\ndefault = 'soon'", "cooldown.default"),
        ("[cooldown.journeys]\nopen_account = 'x'", "cooldown.journeys.open_account"),
        ("[dispatch]\nmax_delay = '1 week'", "dispatch.max_delay"),
        ("[resume]\non = 'vibes'", "resume.on"),
        ("[resume]\non = 'activity'", "resume.on"),
        ("[resume]\nchannels = ['pigeon']", "resume.channels"),
    ],
)
def test_errors_name_file_and_field(tmp_path: Path, doc: str, field: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(doc + "\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value).startswith(f"{path}: field '{field}': ")


def test_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[caps\n")
    with pytest.raises(PolicyError, match=r"policy.toml: not valid TOML"):
        load_policy(path)


def test_names_checked_against_the_catalog() -> None:
    catalog = load_catalog()
    doc = "[[routing.rules]]\njourney = 'open_acount'\nladder = ['ai']"
    with pytest.raises(PolicyError, match=r"routing.rules\[0\].journey': no journey 'open_acount'"):
        check_names(parse_policy(tomllib.loads(doc)), catalog)
    doc = "[[routing.rules]]\njourney = 'open_account'\nstep = 'confirm'\nladder = ['ai']"
    with pytest.raises(PolicyError, match=r"routing.rules\[0\].step': no step 'confirm'"):
        check_names(parse_policy(tomllib.loads(doc)), catalog)
    doc = "[cooldown.journeys]\nnope = '1h'"
    with pytest.raises(PolicyError, match=r"cooldown.journeys.nope"):
        check_names(parse_policy(tomllib.loads(doc)), catalog)
