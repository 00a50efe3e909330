"""`ato dev up`, `ato run --config examples/kafka.toml`, `ato dev down`: the README path."""

import subprocess
from pathlib import Path

import orjson
import pytest

from ato import cli, dev
from ato.devservers import free_port
from ato.process import process_start_time

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
        same_ports = argv[argv.index("--broker-port") :]
        assert cli.main(["dev", "up", "--dir", str(servers), "--clients", "5", *same_ports]) == 0
        assert "already run in" in capsys.readouterr().out  # it said nothing, loaded nothing
        other_ports = ["--broker-port", str(free_port()), "--redis-port", str(free_port())]
        assert cli.main(["dev", "up", "--dir", str(servers), *other_ports]) == 2
        assert "not on the ports asked for: `ato dev down` first" in capsys.readouterr().err

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


def test_a_pid_reused_by_another_process_is_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The state file names a pid that now belongs to another process (started at another
    time): status calls the server gone and down signals nothing (it killed the process)."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        started = process_start_time(other.pid)
        assert started is not None
        state = {"redis": {"address": "127.0.0.1:1", "log": "-", "stop_signal": 15,
                           "pid": other.pid, "started": started - 1}}  # fmt: skip
        (tmp_path / dev.STATE_FILE).write_bytes(orjson.dumps(state))
        assert dev.status(tmp_path)["redis"]["alive"] is False
        assert dev.down(tmp_path) == []
        assert other.poll() is None, "the other process still runs"
    finally:
        other.kill()
        other.wait()


def test_an_unreadable_state_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / dev.STATE_FILE).write_text('{"redis": {"pid": 12')
    assert cli.main(["dev", "status", "--dir", str(tmp_path)]) == 2
    assert "is not a state file `ato dev up` wrote" in capsys.readouterr().err
