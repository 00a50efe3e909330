"""The run's progress lines and its summary time the same thing: the flow, not the set-up."""

import io
import re
import time
from pathlib import Path

import pytest

import ato.runner
from ato.config import Settings
from ato.generator import GeneratedTraffic


def test_progress_lines_count_from_the_flows_start_like_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Traffic generation (made 2 s slower here) is set-up: the last progress line's elapsed
    time, which its events/s divide by, is the summary's ``seconds``."""
    real_generate = ato.runner.generate

    def slow_generate(*args: object, **kwargs: object) -> GeneratedTraffic:
        time.sleep(2.0)
        return real_generate(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ato.runner, "generate", slow_generate)
    settings = Settings().with_overrides("", out_dir=tmp_path / "run")
    settings = settings.with_overrides("generator", clients=500)
    settings = settings.with_overrides("clickhouse", enabled=False)
    out = io.StringIO()
    result = ato.runner.run(settings, progress=out)
    last = out.getvalue().splitlines()[-1]
    found = re.match(r"\[\s*([\d.]+)s\] events ([\d,]+) \(([\d,]+)/s\)", last)
    assert found, last
    elapsed, events = float(found[1]), int(found[2].replace(",", ""))
    assert events == result.stats.events_in
    assert result.seconds - 0.1 <= elapsed <= result.seconds + 0.15
