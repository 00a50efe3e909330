"""docs/configuration.md lists every setting with the default the code has."""

import re
from pathlib import Path

import pytest

from ato.config import (
    EngineSettings,
    GeneratorSettings,
    Settings,
    documented_defaults,
    toml_literal,
)
from ato.exceptions import ConfigError

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_key_is_documented_with_its_default() -> None:
    rows = dict(re.findall(r"^\| `([^`]+)` \| `([^`]*)` \|", DOC.read_text(), re.MULTILINE))
    expected = {k: toml_literal(d) for k, (d, _doc) in documented_defaults().items()}
    assert rows == expected


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (EngineSettings, "shards", 0),
        (EngineSettings, "clock", "wall"),
        (EngineSettings, "late_events", "drop"),
        (EngineSettings, "allowed_lateness_ms", -1),
        (GeneratorSettings, "stall_share", 1.5),
        (GeneratorSettings, "clients", 0),
    ],
)
def test_bad_values_name_the_key(cls: type, field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        cls(**{field: value})


def test_overrides_replace_only_given_values() -> None:
    s = Settings().with_overrides("engine", shards=4, clock=None)
    assert s.engine.shards == 4
    assert s.engine.clock == "replay"
