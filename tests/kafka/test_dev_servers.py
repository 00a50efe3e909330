"""`ato dev up`, `ato run --config examples/kafka.toml`, `ato dev down`: the README path."""

from pathlib import Path

import orjson
import pytest

from ato import cli, dev
from ato.devservers import free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kafka.toml"


def test_dev_up_run_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    servers = tmp_path / "dev"
    argv = ["dev", "up", "--dir", str(servers), "--clients", "800"]
    argv += ["--broker-port", str(free_port()), "--redis-port", str(free_port())]
    try:
        assert cli.main(argv) == 0
        state = dev.status(servers)
        assert {name: s["alive"] for name, s in state.items()} == {"tansu": True, "redis": True}
        assert "loaded" in capsys.readouterr().out

        monkeypatch.setenv("ATO_KAFKA_BROKERS", state["tansu"]["address"])
        monkeypatch.setenv("ATO_OUT_DIR", str(tmp_path / "out"))
        assert cli.main(["run", "--config", str(EXAMPLE)]) == 0
        summary = orjson.loads(capsys.readouterr().out.splitlines()[-1])
        assert summary["events"] > 1_000 and summary["interventions"] > 0
        assert summary["dead_letters"] == 0
    finally:
        assert cli.main(["dev", "down", "--dir", str(servers)]) == 0
    assert "stopped: tansu, redis" in capsys.readouterr().out
    assert dev.status(servers) == {}
