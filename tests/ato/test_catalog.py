"""Loading, validating and compiling journey catalogs."""

from pathlib import Path

import pytest

from ato.catalog import (
    FLAG_CALL,
    FLAG_ERROR,
    FLAG_SESSION,
    TERMINAL_FAILURE,
    TERMINAL_NONE,
    TERMINAL_SUCCESS,
    load_catalog,
    parse_catalog,
)
from ato.exceptions import CatalogError

MINUTE, DAY = 60_000, 86_400_000

JOURNEY = """
[[journeys]]
name = "{name}"
{extra}
steps = [
  {{ name = "start", on = ["{name}_start"], timeout = "5m" }},
  {{ name = "done", on = ["{name}_done"], terminal = "success" }},
]
"""


def journey(name: str = "demo", extra: str = "") -> str:
    return JOURNEY.format(name=name, extra=extra)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_default_catalog() -> None:
    """The shipped catalog loads; it has many journeys, timeouts from seconds to days."""
    catalog = load_catalog()
    assert len(catalog.journeys) >= 8
    timeouts = [s.timeout_ms for j in catalog.journeys for s in j.steps if s.terminal is None]
    assert min(timeouts) <= MINUTE and max(timeouts) >= DAY
    for j in catalog.journeys:
        assert catalog.journey(j.name) is j
        assert any(s.terminal == "success" for s in j.steps)
        assert all((s.timeout_ms == 0) == (s.terminal is not None) for s in j.steps)
    assert catalog.type_names[0] == "other"
    assert all(catalog.type_names[code] == name for name, code in catalog.type_codes.items())


def test_minimal_catalog_loads(tmp_path: Path) -> None:
    """The template the error cases below mutate is itself valid."""
    catalog = load_catalog(write(tmp_path, journey() + journey("other_demo")))
    assert [j.name for j in catalog.journeys] == ["demo", "other_demo"]
    demo = catalog.journey("demo")
    assert demo.step("start").timeout_ms == 5 * MINUTE and demo.close_after_ms == 3 * DAY
    assert demo.tiers == ("ai", "remote", "offline") and demo.priority == 50


BAD_STEPS = """
[[journeys]]
name = "demo"
steps = [
  {{ name = "start", on = ["a"]{start} }},
  {{ name = "done", on = ["{done_on}"]{done} }},
]
"""


def bad_steps(
    start: str = ', timeout = "5m"', done_on: str = "z", done: str = ', terminal = "success"'
) -> str:
    return BAD_STEPS.format(start=start, done_on=done_on, done=done)


@pytest.mark.parametrize(
    ("text", "where", "field"),
    [
        (journey(extra='colour = "red"'), "journey 'demo'", "colour"),
        (journey() + journey(), "journey 'demo'", "name"),
        (bad_steps(done=', terminal = "failure"'), "journey 'demo'", "steps"),
        (journey(extra='tiers = ["moon"]'), "journey 'demo'", "tiers"),
        (journey(extra="tiers = []"), "journey 'demo'", "tiers"),
        (journey(extra="priority = 101"), "journey 'demo'", "priority"),
        (journey(extra='close_after = "3 weeks"'), "journey 'demo'", "close_after"),
        (journey(extra='abandon = { page_view = "soon" }'), "journey 'demo'", "abandon.page_view"),
        (journey(extra='abandon = { "" = "1m" }'), "journey 'demo'", "abandon"),
        (journey(extra='abandon = { " page_view" = "1m" }'), "journey 'demo'", "abandon"),
        (journey(extra='tiers = ["ai", "ai"]'), "journey 'demo'", "tiers"),
        (bad_steps(done_on=" z"), "journey 'demo' step 'done'", "on"),
        (bad_steps(done_on="z\\u0007"), "journey 'demo' step 'done'", "on"),
        ("[features]\nerror_types = ['e', 'e']\n" + journey(), "features", "error_types"),
        (bad_steps(start=', timeout = "soon"'), "journey 'demo' step 'start'", "timeout"),
        (bad_steps(start=""), "journey 'demo' step 'start'", "timeout"),
        (bad_steps(start=', wait = "5m"'), "journey 'demo' step 'start'", "wait"),
        (
            bad_steps(done=', terminal = "success", timeout = "1m"'),
            "journey 'demo' step 'done'",
            "timeout",
        ),
        (bad_steps(done=', terminal = "maybe"'), "journey 'demo' step 'done'", "terminal"),
        (bad_steps(done_on="a"), "journey 'demo'", "steps"),  # "a" on two steps
        (journey(extra='abandon = { demo_start = "1m" }'), "journey 'demo'", "abandon"),
        ("[features]\nerror_types = 'error'\n" + journey(), "features", "error_types"),
        ("[features]\nfavourite = 1\n" + journey(), "features", "favourite"),
        (bad_steps(done_on="other"), "journey 'demo' step 'done'", "on"),
        (journey(extra='abandon = { other = "1m" }'), "journey 'demo'", "abandon"),
        ("[features]\nerror_types = ['other']\n" + journey(), "features", "error_types"),
    ],
    ids=[
        "unknown-journey-field",
        "duplicate-journey",
        "no-success-terminal",
        "bad-tier",
        "no-tier",
        "bad-priority",
        "bad-duration",
        "bad-abandon-duration",
        "empty-abandon-signal",
        "abandon-signal-with-space",
        "tier-twice",
        "type-with-space",
        "type-with-control-character",
        "type-listed-twice",
        "bad-step-duration",
        "missing-step-timeout",
        "unknown-step-field",
        "timeout-on-terminal",
        "bad-terminal",
        "type-on-two-steps",
        "abandon-is-step-event",
        "features-not-a-list",
        "unknown-feature",
        "reserved-type-on-a-step",
        "reserved-type-abandons",
        "reserved-type-is-an-error",
    ],
)
def test_validation_error_names_file_journey_and_field(
    tmp_path: Path, text: str, where: str, field: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {where}: ")
    assert f"field '{field}'" in message


def test_every_invalid_journey_is_named_at_once(tmp_path: Path) -> None:
    """A catalog with several broken journeys names each (it named only the first, so a
    user fixed them one run at a time)."""
    text = (
        journey("good")
        + journey("slow", 'close_after = "soon"')
        + '[[journeys]]\nname = "no_steps"\n'
        + journey("fast", "close_after = inf")
    )
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path}: 3 journeys are invalid:"
    assert [line.split(": ")[1] for line in lines[1:]] == [
        "journey 'slow'", "journey 'no_steps'", "journey 'fast'",
    ]  # fmt: skip


@pytest.mark.parametrize("value", ["inf", "nan", '"999999999999d"'])
def test_absurd_duration_is_a_catalog_error(tmp_path: Path, value: str) -> None:
    """Durations that do not fit the int64 tables are validation errors, not crashes."""
    path = write(tmp_path, journey(extra=f"close_after = {value}"))
    with pytest.raises(CatalogError, match="journey 'demo': field 'close_after'"):
        load_catalog(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(CatalogError, match="not found") as info:
        load_catalog(path)
    assert str(path) in str(info.value)


def test_a_directory_or_undecodable_file_is_named(tmp_path: Path) -> None:
    undecodable = tmp_path / "latin1.toml"
    undecodable.write_bytes(b"# caf\xe9\n")
    for path in (tmp_path, undecodable):
        with pytest.raises(CatalogError, match="cannot read the catalog file") as info:
            load_catalog(path)
        assert str(info.value).startswith(str(path))


def test_invalid_toml_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "[[journeys]\nname = ")
    with pytest.raises(CatalogError, match="not valid TOML") as info:
        load_catalog(path)
    assert str(info.value).startswith(str(path))


SHARED = """
[features]
error_types = ["otp_failed"]
call_types = ["call_started"]
session_types = ["app_session_start"]

[[journeys]]
name = "first"
close_after = "1d"
abandon = { otp_failed = "30s" }
steps = [
  { name = "start", on = ["first_start"], timeout = "2m" },
  { name = "otp", on = ["otp_sent"], timeout = "60s" },
  { name = "done", on = ["first_done"], terminal = "success" },
]

[[journeys]]
name = "second"
steps = [
  { name = "begin", on = ["second_start"], timeout = "1h" },
  { name = "review", on = ["second_review"], timeout = "2d" },
  { name = "otp", on = ["otp_sent"], timeout = "90s" },
  { name = "done", on = ["second_done"], terminal = "success" },
  { name = "refused", on = ["second_refused", "call_started"], terminal = "failure" },
]
"""


def test_tables_for_a_type_shared_by_two_journeys(tmp_path: Path) -> None:
    """A type on a step of two journeys maps to no journey globally, and per journey exactly."""
    catalog = load_catalog(write(tmp_path, SHARED))
    t, code = catalog.tables, catalog.type_codes
    first, second = catalog.journey_codes["first"], catalog.journey_codes["second"]
    otp = code["otp_sent"]
    assert t.type_journey[otp] == -1 and t.type_step[otp] == -1
    assert t.type_step_in_journey[first, otp] == 1
    assert t.type_step_in_journey[second, otp] == 2
    assert (t.type_journey[code["second_review"]], t.type_step[code["second_review"]]) == (
        second,
        1,
    )
    assert t.type_step[code["call_started"]] == 4  # a step type may carry a flag, too
    assert t.type_step_in_journey[first, code["second_start"]] == -1
    assert t.step_by_name[first, catalog.step_name_codes["otp"]] == 1
    assert t.step_by_name[second, catalog.step_name_codes["otp"]] == 2
    assert t.step_by_name[first, catalog.step_name_codes["refused"]] == -1
    assert t.step_count.tolist() == [3, 5]
    assert t.step_timeout[first].tolist() == [2 * MINUTE, MINUTE, 0, 0, 0]
    assert t.step_timeout[second, 1] == 2 * DAY
    assert t.step_terminal[second].tolist() == [
        TERMINAL_NONE,
        TERMINAL_NONE,
        TERMINAL_NONE,
        TERMINAL_SUCCESS,
        TERMINAL_FAILURE,
    ]
    assert t.close_after.tolist() == [DAY, 3 * DAY]
    assert t.abandon_grace[first, code["otp_failed"]] == 30_000
    assert t.abandon_grace[second, code["otp_failed"]] == -1
    assert t.abandon_grace[first, otp] == -1
    assert t.type_flags[code["otp_failed"]] == FLAG_ERROR
    assert t.type_flags[code["call_started"]] == FLAG_CALL
    assert t.type_flags[code["app_session_start"]] == FLAG_SESSION
    assert t.type_flags[0] == 0 and t.type_flags[otp] == 0


@pytest.mark.parametrize("version", ["true", "1.0", "2"])
def test_version_must_be_the_integer_1(tmp_path: Path, version: str) -> None:
    """``true`` and ``1.0`` equal 1 in Python; they are not the format version 1."""
    path = write(tmp_path, f"version = {version}\n" + journey())
    with pytest.raises(CatalogError, match="field 'version'"):
        load_catalog(path)


@pytest.mark.parametrize(
    ("journeys", "steps", "types_per_step", "problem"),
    [(600, 60, 0, "36,000 distinct step names"), (2, 2, 8_192, "32,768 distinct event types")],
    ids=["step-names", "event-types"],
)
def test_codes_must_fit_their_columns(
    journeys: int, steps: int, types_per_step: int, problem: str
) -> None:
    """Step-name and event-type codes are int16 columns: a catalog with more distinct names
    than they hold is refused at start-up (it used to load, then lose events or crash)."""
    raw = {
        "journeys": [
            {
                "name": f"j{j}",
                "steps": [
                    {
                        "name": f"j{j}s{s}",
                        "on": [f"j{j}s{s}t{t}" for t in range(types_per_step)],
                        **({"terminal": "success"} if s == steps - 1 else {"timeout": "1m"}),
                    }
                    for s in range(steps)
                ],
            }
            for j in range(journeys)
        ]
    }
    with pytest.raises(CatalogError, match=f"<big>: field 'journeys': {problem}"):
        parse_catalog(raw, "<big>")


def test_names_must_be_matchable(tmp_path: Path) -> None:
    """Journey and step names with white space around them or control characters are
    refused (events could never name them); the error quotes the name visibly."""
    with pytest.raises(CatalogError, match=r"journey ' demo': field 'name': ' demo' has white"):
        load_catalog(write(tmp_path, journey(name=" demo")))
    text = bad_steps().replace('name = "done"', 'name = "do\\nne"')
    with pytest.raises(CatalogError, match=r"step 'do\\nne': field 'name': .* control character"):
        load_catalog(write(tmp_path, text))
