"""`ato run` on JSON-lines files: what a refused run leaves, and resumes of file runs."""

from pathlib import Path

import orjson
import pytest

from ato.cli import main

EVENT = {
    "event_id": "e1", "client_id": "C1", "ts": 1_767_600_000_000, "channel": "app",
    "type": "order_confirm_viewed", "journey": "wealth_purchase",
}  # fmt: skip
OUTPUTS = ("interventions", "dead_letters", "late_events")


def events_file(path: Path, clients: int, start: int = 0) -> Path:
    lines = [
        orjson.dumps(dict(EVENT, event_id=f"e{i}", client_id=f"C{i}", ts=EVENT["ts"] + i))
        for i in range(start, start + clients)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def earlier_outputs(out: Path) -> dict[str, bytes]:
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        (out / f"{name}.jsonl").write_bytes(b'{"earlier": "run"}\n')
    return {name: (out / f"{name}.jsonl").read_bytes() for name in OUTPUTS}


def test_an_unreadable_input_is_refused_before_the_outputs_are_touched(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It failed inside Bytewax with a traceback, after the earlier run's outputs had been
    emptied."""
    out = tmp_path / "out"
    before = earlier_outputs(out)
    good = events_file(tmp_path / "good.jsonl", 3)
    locked = events_file(tmp_path / "locked.jsonl", 3)
    real_open = Path.open

    def refusing_open(self: Path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self == locked:  # as for a file of another user, mode 600 (root reads any)
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refusing_open)
    assert main(["run", "--input", str(good), str(locked), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"input file {locked}: cannot read it: Permission denied" in err
    assert "Traceback" not in err
    assert {name: (out / f"{name}.jsonl").read_bytes() for name in OUTPUTS} == before


def test_a_refused_recovery_dir_leaves_the_outputs_as_they_are(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    before = earlier_outputs(out)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    events = events_file(tmp_path / "in.jsonl", 3)
    argv = ["run", "--input", str(events), "--out", str(out), "--recovery-dir", str(notes)]
    assert main(argv) == 2
    assert "holds files but no recovery partitions" in capsys.readouterr().err
    assert {name: (out / f"{name}.jsonl").read_bytes() for name in OUTPUTS} == before


def test_a_too_low_open_file_limit_is_raised_or_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytewax opens every input file at start: with more files than the process may open
    it failed with a traceback after the outputs were emptied."""
    from ato import runner

    files = [events_file(tmp_path / f"in{i}.jsonl", 1) for i in range(3)]
    limits: list[tuple[int, int]] = []
    monkeypatch.setattr(runner.resource, "getrlimit", lambda _which: (100, 10_000))
    monkeypatch.setattr(runner.resource, "setrlimit", lambda _which, value: limits.append(value))
    runner.check_input_files_readable(files)
    assert limits == [(3 + runner.OPEN_FILES_MARGIN, 10_000)]
    monkeypatch.setattr(runner.resource, "getrlimit", lambda _which: (100, 200))
    with pytest.raises(runner.ConfigError, match=r"3 input files need about 515 open files"):
        runner.check_input_files_readable(files)


def test_resumes_of_a_file_run_with_other_input_are_refused_by_name(tmp_path: Path, capsys) -> None:
    """Resumed without one of its files, or on the generator, the run stopped with a Bytewax
    panic (a snapshot of a partition no worker lists); resumed on a file that was replaced,
    it read on from an offset into other lines. A file that only grew, or a file added,
    resumes."""
    a = events_file(tmp_path / "a.jsonl", 20)
    b = events_file(tmp_path / "b.jsonl", 20, start=100)
    out, recovery = tmp_path / "out", tmp_path / "recovery"
    base = ["--out", str(out), "--recovery-dir", str(recovery)]
    assert main(["run", "--input", str(a), str(b), *base]) == 0
    capsys.readouterr()
    assert main(["run", "--input", str(a), *base]) == 2
    err = capsys.readouterr().err
    assert "holds the read positions of input files ['b.jsonl']" in err
    assert "Traceback" not in err
    assert main(["run", "--clients", "50", *base]) == 2
    assert "holds a run that read files input, and this run reads generator input" in (
        capsys.readouterr().err
    )
    events_file(b, 20, start=500)  # replaced: other lines at the same offsets
    assert main(["run", "--input", str(a), str(b), *base]) == 2
    assert f"input file {b} does not start as the file b.jsonl" in capsys.readouterr().err
    events_file(b, 20, start=100)  # the file it read, with more lines after
    with b.open("ab") as f:
        f.write(orjson.dumps(dict(EVENT, event_id="late-comer", client_id="C9")) + b"\n")
    c = events_file(tmp_path / "c.jsonl", 5, start=900)
    assert main(["run", "--input", str(a), str(b), str(c), *base]) == 0
    summary = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["events"] == 6  # the line added to b and the new file's


def test_a_refused_resume_with_an_added_file_does_not_bind_later_resumes(
    tmp_path: Path, capsys
) -> None:
    """A file added on a resume that was then refused (here: with another shard count)
    was recorded as read, and the right resume without it was refused ever after."""
    a = events_file(tmp_path / "a.jsonl", 20)
    c = events_file(tmp_path / "c.jsonl", 5, start=900)
    base = ["--out", str(tmp_path / "out"), "--recovery-dir", str(tmp_path / "recovery")]
    assert main(["run", "--input", str(a), *base]) == 0
    assert main(["run", "--input", str(a), str(c), *base, "--shards", "4"]) == 2
    assert "holds a run with engine.shards = 16, this run has 4" in capsys.readouterr().err
    assert main(["run", "--input", str(a), *base]) == 0
