"""Duration text ("90s", "10m", "2h", "3d", "250ms") and numbers of seconds."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ato.durations import MAX_SECONDS, format_duration_ms, parse_duration_ms


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("250ms", 250),
        ("90s", 90_000),
        ("10m", 600_000),
        ("2h", 7_200_000),
        ("3d", 259_200_000),
        ("1.5h", 5_400_000),
        ("0.5s", 500),
        (" 5 m ", 300_000),
        ("0s", 0),
        (30, 30_000),
        (0.25, 250),
        (0, 0),
    ],
)
def test_parse(value: object, ms: int) -> None:
    assert parse_duration_ms(value) == ms


@pytest.mark.parametrize(
    "value",
    ["", "5", "ms", "5 weeks", "5M", "-5s", "1e3s", "5s 3m", "s5", True, None, [], -1, -0.5],
)
def test_parse_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_ms(value)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), MAX_SECONDS + 1])
def test_parse_rejects_absurd_numbers(value: float) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_ms(value)


def test_parse_bounds_text_at_a_hundred_years() -> None:
    assert parse_duration_ms(f"{MAX_SECONDS}s") == MAX_SECONDS * 1000
    with pytest.raises(ValueError, match="duration"):
        parse_duration_ms(f"{MAX_SECONDS * 1000 + 1}ms")
    with pytest.raises(ValueError, match="duration"):
        parse_duration_ms("999999999999d")


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0ms"),
        (250, "250ms"),
        (1_500, "1500ms"),
        (90_000, "90s"),
        (60_000, "1m"),
        (7_200_000, "2h"),
        (129_600_000, "36h"),
        (86_400_000, "1d"),
        (172_800_000, "2d"),
    ],
)
def test_format(ms: int, text: str) -> None:
    assert format_duration_ms(ms) == text


@given(st.integers(0, MAX_SECONDS * 1000))
def test_format_round_trips(ms: int) -> None:
    assert parse_duration_ms(format_duration_ms(ms)) == ms
