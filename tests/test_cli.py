"""`ato run` end to end on a small generated population and on a JSON-lines file."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from ato.catalog import default_catalog_path
from ato.cli import _merge_summaries, main
from ato.process import process_running
from sinks.exceptions import SinkError
from sinks.progress import _ProgressPartition


def test_ato_run_generator_reports_perfect_detection(tmp_path: Path, capsys) -> None:
    code = main(["run", "--clients", "800", "--out", str(tmp_path), "--span-s", "86400"])
    assert code == 0
    summary = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["events"] > 1000
    assert summary["interventions"] == summary["truth_stalls"] > 0
    assert summary["precision"] == 1.0 and summary["recall"] == 1.0
    assert summary["deadline_mismatches"] == 0
    lines = (tmp_path / "interventions.jsonl").read_bytes().splitlines()
    assert len(lines) == summary["interventions"]


def test_a_generator_shuffling_past_the_lateness_is_warned_of(tmp_path: Path, capsys) -> None:
    # small batches: events of one batch are never late to each other
    args = ["run", "--clients", "2000", "--out", str(tmp_path), "--span-s", "600"]
    args += ["--batch-size", "50"]
    assert main([*args, "--lateness-ms", "400"]) == 0  # the default disorder: 400 ms
    assert "warning" not in capsys.readouterr().err
    assert main([*args, "--lateness-ms", "20"]) == 0
    captured = capsys.readouterr()
    assert "generator.disorder_ms (400) is above engine.allowed_lateness_ms (20)" in captured.err
    assert orjson.loads(captured.out.strip().splitlines()[-1])["late_events"] > 0


def test_ato_run_file_input_dead_letters_bad_lines(tmp_path: Path, capsys) -> None:
    good = {
        "event_id": "e1",
        "client_id": "C1",
        "ts": 1_767_600_000_000,
        "channel": "app",
        "type": "order_confirm_viewed",
        "journey": "wealth_purchase",
    }
    later = dict(good, event_id="e2", type="page_view", ts=good["ts"] + 3_600_000)
    events = tmp_path / "events.jsonl"
    events.write_bytes(orjson.dumps(good) + b"\nnot json\n" + orjson.dumps(later) + b"\n")
    code = main(["run", "--input", str(events), "--out", str(tmp_path / "out")])
    assert code == 0
    summary = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["events"] == 3 and summary["dead_letters"] == 1
    dead = orjson.loads((tmp_path / "out" / "dead_letters.jsonl").read_bytes())
    assert dead["reason"] == "not_json" and dead["offset"] > 0
    [intervention] = (tmp_path / "out" / "interventions.jsonl").read_bytes().splitlines()
    assert orjson.loads(intervention)["step"] == "confirm"


def test_bad_catalog_is_a_clear_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("version = 1\n[[journeys]]\nname = 'x'\n")
    assert main(["run", "--catalog", str(bad), "--out", str(tmp_path)]) == 2
    assert "bad.toml" in capsys.readouterr().err


def test_live_clock_run_stops_after_its_duration(tmp_path: Path, capsys) -> None:
    """Live traffic lasts as long as its journeys; --duration-s bounds the run."""
    code = main(
        ["run", "--clock", "live", "--clients", "200", "--span-s", "5", "--duration-s", "3",
         "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    summary = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["events"] > 0
    assert summary["seconds"] < 20
    assert "precision" not in summary  # the ground truth assumes the whole traffic


def test_a_run_failing_mid_flow_prints_ato_error_without_bytewax_panic_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A step raising ato's own error stops the flow by a Bytewax panic, whose Rust text (a
    backtrace with RUST_BACKTRACE set) used to come before ato's one line."""
    monkeypatch.setenv("RUST_BACKTRACE", "1")

    def fail(self: _ProgressPartition, items: list[object]) -> None:
        msg = "the progress sink failed (a clear message)"
        raise SinkError(msg)

    monkeypatch.setattr(_ProgressPartition, "write_batch", fail)
    assert main(["run", "--clients", "200", "--out", str(tmp_path)]) == 2
    err = capfd.readouterr().err
    assert "panicked at" not in err
    assert "backtrace" not in err
    assert err.strip().splitlines()[-1] == "ato: error: the progress sink failed (a clear message)"


def test_a_new_run_starts_every_output_empty(tmp_path: Path, capsys) -> None:
    """Outputs left by an earlier run in the same --out never count in a new run, even when
    the new run writes none of its own."""
    for name in ("interventions", "dead_letters", "late_events", "decisions"):
        (tmp_path / f"{name}.jsonl").write_bytes(b'{"stale": true}\n')
    event = {
        "event_id": "e1", "client_id": "C1", "ts": 1_767_600_000_000, "channel": "app",
        "type": "page_view",
    }  # fmt: skip
    events = tmp_path / "events.jsonl"
    events.write_bytes(orjson.dumps(event) + b"\n")
    assert main(["run", "--input", str(events), "--out", str(tmp_path)]) == 0
    summary = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["interventions"] == 0
    for name in ("interventions", "dead_letters", "late_events", "decisions"):
        assert (tmp_path / f"{name}.jsonl").read_bytes() == b""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "workers: must be >= 1, got 0"),
        (["--processes", "-1"], "processes: must be >= 1, got -1"),
        (["--input", "nope.jsonl"], "input file not found (or not a file): nope.jsonl"),
        (["--input", "a-file", "--seed", "4"], "--seed: only for generated traffic, not --input"),
        (["--input", "a-file", "--duration-s", "3"], "--duration-s: only for generated traffic"),
        (["--out", "a-file"], "out_dir a-file: cannot write the run's outputs there"),
        (["--duration-s", "-1"], "--duration-s: must be a number > 0, got -1.0"),
        (["--duration-s", "nan"], "--duration-s: must be a number > 0, got nan"),
        (["--duration-s", "inf"], "--duration-s: must be a number > 0, got inf"),
        (["--rate", "inf"], "generator.rate: must be a finite number >= 0, got inf"),
        (["--rate", "nan"], "generator.rate: must be a finite number >= 0, got nan"),
        (["--processes", "2", "--clients", "0"], "generator.clients: must be > 0, got 0"),
        (["--clock", "live", "--rate", "500"], "--rate (generator.rate): only with the replay"),
        (["--recovery-dir", "a-file"], "--recovery-dir a-file: not a directory"),
        (["--process-id", "0", "--addresses", "nohost"], "--addresses: expected HOST:PORT"),
        (["--process-id", "3", "--addresses", "127.0.0.1:2101"], "must be from 0 to 0"),
    ],
)
def test_bad_run_options_are_clear_errors_before_the_flow_starts(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("x")
    argv = ["run", *args] if "--input" in args else ["run", "--clients", "50", *args]
    if "--out" not in args:
        argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("start_ms", ["0", "4102444800000"])  # 1970, 2100
def test_a_generator_start_every_event_of_which_is_absurd_is_refused(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, start_ms: str
) -> None:
    """Events before engine.min_event_ts_ms or far in the future are dead letters: a run
    generating only such events is refused (it used to dead-letter them all and exit 0)."""
    monkeypatch.setenv("ATO_GENERATOR_START_MS", start_ms)
    assert main(["run", "--clients", "50", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"generator.start_ms ({start_ms}) is outside the event times" in err
    assert not (tmp_path / "out").exists()


def test_resuming_with_another_shard_count_is_refused_by_name(tmp_path: Path, capsys) -> None:
    """Clients hash into shards by the shard count: state saved under 8 shards would sit in
    shards the resumed run's clients no longer reach."""
    base = ["run", "--clients", "100", "--span-s", "3600", "--out", str(tmp_path / "out")]
    recovery = ["--recovery-dir", str(tmp_path / "recovery")]
    assert main([*base, *recovery, "--shards", "8"]) == 0
    capsys.readouterr()
    assert main([*base, *recovery, "--shards", "4"]) == 2
    err = capsys.readouterr().err
    assert "holds a run with engine.shards = 8, this run has 4: resume with the same shards" in err


def test_input_files_with_the_same_name_are_a_clear_error(tmp_path: Path, capsys) -> None:
    """A file's name is its partition: two files of one name are refused, naming them."""
    files = []
    for day in ("mon", "tue"):
        (tmp_path / day).mkdir()
        files.append(tmp_path / day / "events.jsonl")
        files[-1].write_text("")
    assert main(["run", "--input", *map(str, files), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "distinct names" in err and str(files[0]) in err and str(files[1]) in err
    assert "Traceback" not in err


def test_a_cluster_run_cut_short_pauses_in_a_process_without_input(tmp_path: Path) -> None:
    """Two processes, one generator partition: process 1 reads nothing, yet its shards learn
    from the cut batch that --duration-s stopped the input and pause (no flush), so the
    resumed run finds no event late and detects every stall."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ATO_")},
        "ATO_GENERATOR_PARTITIONS": "1",
        "ATO_CLICKHOUSE_ENABLED": "false",
    }
    argv = [
        sys.executable, "-m", "ato.cli", "run", "--processes", "2", "--clients", "2000",
        "--span-s", "60", "--rate", "1000", "--recovery-dir", str(tmp_path / "recovery"),
        "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    summaries = []
    for extra in (["--duration-s", "3"], []):
        done = subprocess.run(
            [*argv, *extra], env=env, capture_output=True, text=True, timeout=240, check=False
        )
        assert done.returncode == 0, done.stderr[-2_000:]
        summaries.append(orjson.loads(done.stdout.strip().splitlines()[-1]))
    cut, resumed = summaries
    assert cut["processes"] == 2 and 0 < cut["events"] < resumed["events"]
    assert "precision" not in cut  # the ground truth is of the whole traffic
    assert resumed["late_events"] == 0
    assert resumed["recall"] == 1.0 and resumed["precision"] == 1.0


FAIL_IN_PROCESS = """
import sys

from sinks.exceptions import SinkError
from sinks.progress import _ProgressPartition

original = _ProgressPartition.write_batch


def write_batch(self, items):
    if sys.argv[-2:] != ["--process-id", str(PROCESS)]:
        return original(self, items)
    if KIND == "ato":
        raise SinkError("the progress sink failed (a clear message)")
    raise RuntimeError("a bug in the progress sink")


_ProgressPartition.write_batch = write_batch
"""


@pytest.mark.parametrize(("kind", "process"), [("ato", 0), ("bug", 0), ("ato", 1)])
def test_a_cluster_process_failing_says_why_and_the_others_say_they_lost_it(
    tmp_path: Path, kind: str, process: int
) -> None:
    """A step failing in one process of `ato run --processes 2` shows its own error: an ato
    error's one line, a bug's traceback. Before, Bytewax lost it: each process printed
    `PanicException: Send thread panic` and one aborted with `FATAL: exception not
    rethrown`. The parent names the process that failed, not the one that lost its
    connection to it (exit code 3; both exited 2, and the parent named process 0)."""
    inject = tmp_path / "inject"
    inject.mkdir()
    injected = f"KIND = {kind!r}\nPROCESS = {process}\n{FAIL_IN_PROCESS}"
    (inject / "sitecustomize.py").write_text(injected)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ATO_")},
        "ATO_CLICKHOUSE_ENABLED": "false",
        "PYTHONPATH": str(inject),
    }
    argv = [
        sys.executable, "-m", "ato.cli", "run", "--processes", "2", "--clients", "2000",
        "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240, check=False)
    err = done.stderr
    assert done.returncode == (2 if kind == "ato" else 1), err[-2_000:]  # as alone
    if kind == "ato":
        assert "ato: error: the progress sink failed (a clear message)\n" in err
    else:
        assert "Traceback" in err and "RuntimeError: a bug in the progress sink\n" in err
    code = 2 if kind == "ato" else 1
    assert f"ato: error: cluster process {process} exited with {code};" in err, err[-2_000:]
    for noise in ("PanicException", "FATAL: exception not rethrown"):
        assert noise not in err, err[-2_000:]


def test_the_processes_of_a_cluster_run_share_its_run_id(tmp_path: Path) -> None:
    """Their flow_health rows carry one run_id, the parent's (each process made its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATO_")}
    out = tmp_path / "out"
    argv = [
        sys.executable, "-m", "ato.cli", "run", "--processes", "2", "--clients", "2000",
        "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-2_000:]
    sql = "SELECT uniqExact(run_id), uniqExact(splitByChar(':', worker)[2]) FROM flow_health"
    query = [sys.executable, "-m", "ato.cli", "query", sql, "--format", "csv",
             "--url", f"chdb://{out / 'clickhouse'}"]  # fmt: skip
    done = subprocess.run(query, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2_000:]
    assert done.stdout.strip().splitlines()[-1] == "1,2"  # one run, two processes


def test_a_live_cluster_generates_one_traffic_from_one_start(tmp_path: Path) -> None:
    """Live, without a recovery directory, every process of a cluster generates its traffic
    from the start its parent took (each took its own wall clock before, so the processes'
    traffic differed by the milliseconds between their starts)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ATO_")},
        "ATO_CLICKHOUSE_ENABLED": "false",
    }
    argv = [
        sys.executable, "-m", "ato.cli", "run", "--processes", "2", "--clock", "live",
        "--clients", "200", "--span-s", "5", "--duration-s", "1", "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2_000:]
    starts = re.findall(r"live traffic from (\d+)", done.stderr)
    assert len(starts) == 2 and starts[0] == starts[1], done.stderr[-2_000:]


def test_live_start_ms_sets_the_first_event_time(tmp_path: Path, capsys) -> None:
    """--live-start-ms places the live traffic (here an hour back, so all of it is due at
    once); with a recovery directory that recorded another start it is an error."""
    start = int(time.time() * 1000) - 3_600_000
    recovery = tmp_path / "recovery"
    argv = ["run", "--clock", "live", "--clients", "200", "--span-s", "5", "--duration-s", "1",
            "--out", str(tmp_path / "out"), "--recovery-dir", str(recovery)]  # fmt: skip
    assert main([*argv, "--live-start-ms", str(start)]) == 0
    assert (recovery / "live_start_ms").read_text() == str(start)
    assert f"live traffic from {start}" in capsys.readouterr().err
    assert main([*argv, "--live-start-ms", str(start + 1)]) == 2
    assert f"started at {start}" in capsys.readouterr().err
    assert main(["run", "--live-start-ms", "1", "--out", str(tmp_path)]) == 2
    assert "only with the live clock" in capsys.readouterr().err


def test_a_second_run_in_the_same_out_dir_is_refused_before_it_touches_anything(
    tmp_path: Path, capsys
) -> None:
    """A fresh run empties the output files, so a run that another run's output directory
    refuses (ClickHouse in use, or the run lock) must not have started: before, a refused
    run emptied the files of the run in progress first."""
    from ato.out_lock import lock_out_dir  # noqa: PLC0415

    (tmp_path / "interventions.jsonl").write_bytes(b'{"from": "the run in progress"}\n')
    held = lock_out_dir(tmp_path)  # as the run in progress holds it
    try:
        assert main(["run", "--clients", "50", "--out", str(tmp_path)]) == 2
    finally:
        held.close()
    assert "another ato run (pid" in capsys.readouterr().err
    assert (tmp_path / "interventions.jsonl").read_bytes() == b'{"from": "the run in progress"}\n'
    assert main(["run", "--clients", "50", "--out", str(tmp_path)]) == 0  # released


def _live_cluster(
    out: Path, stderr: int = subprocess.DEVNULL, own_group: bool = False
) -> tuple["subprocess.Popen[bytes]", list[int]]:
    """`ato run --processes 2` on live generated traffic (it runs for minutes), once both
    its members run; the parent and the members' pids. ``own_group``: the parent leads a
    process group of its own, as a terminal's foreground job does."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ATO_")},
        "ATO_CLICKHOUSE_ENABLED": "false",
    }
    argv = [
        sys.executable, "-m", "ato.cli", "run", "--processes", "2", "--clock", "live",
        "--clients", "200", "--span-s", "600", "--out", str(out),
    ]  # fmt: skip
    parent = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=own_group
    )
    deadline = time.monotonic() + 60
    members = _members_of(parent.pid)
    while len(members) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        members = _members_of(parent.pid)
    if len(members) != 2:
        parent.kill()
        parent.wait()
    assert len(members) == 2
    return parent, members


def test_sigterm_to_a_cluster_stops_its_processes(tmp_path: Path) -> None:
    """A supervisor's SIGTERM to `ato run --processes 2` stops its processes too (they kept
    running, re-parented, for as long as their traffic lasted) and exits 143."""
    parent, members = _live_cluster(tmp_path)
    try:
        time.sleep(2)  # the members are running their flows
        parent.terminate()
        assert parent.wait(timeout=30) == 143
        assert not [pid for pid in members if Path(f"/proc/{pid}").exists()]
    finally:
        if parent.poll() is None:
            parent.kill()


def test_ctrl_c_to_a_cluster_says_interrupted_once(tmp_path: Path) -> None:
    """Ctrl-C reaches the parent and its processes (one process group): the parent says the
    run was interrupted, once (each process said it too before), and exits 130."""
    parent, _ = _live_cluster(tmp_path, stderr=subprocess.PIPE, own_group=True)
    try:
        time.sleep(3)  # the members are running their flows
        os.killpg(parent.pid, signal.SIGINT)  # as a terminal's Ctrl-C
        _, err = parent.communicate(timeout=60)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert parent.returncode == 130, err[-2_000:]
    assert err.decode().count("ato: interrupted") == 1, err[-2_000:]


def test_a_cluster_whose_parent_is_killed_leaves_no_process(tmp_path: Path) -> None:
    """SIGKILL skips the parent's cleanup: its members ran on (re-parented to init), and a
    resume then wrote the same outputs beside them (duplicate interventions). Now the
    kernel kills them with their parent."""
    parent, members = _live_cluster(tmp_path)
    try:
        parent.kill()
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _running(members) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(members)
    finally:
        for pid in _running(members):
            os.kill(pid, signal.SIGKILL)


def _running(pids: list[int]) -> list[int]:
    """Those of ``pids`` that run (a zombie, exited but not reaped, does not)."""
    return [pid for pid in pids if process_running(pid)]


def _members_of(parent: int) -> list[int]:
    """Pids of the processes whose parent is ``parent``."""
    children = Path(f"/proc/{parent}/task/{parent}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def test_a_resume_with_other_lanes_is_refused_before_the_flow(tmp_path: Path, capsys) -> None:
    """Refused by name before Bytewax starts (in a cluster, the shards' own refusal ended in
    Bytewax panics naming nothing), the outputs left as they were. The summary names the
    lanes a run used."""
    out = tmp_path / "out"
    argv = ["run", "--clients", "300", "--span-s", "3600", "--out", str(out),
            "--recovery-dir", str(tmp_path / "recovery"), "--lanes", "2"]  # fmt: skip
    assert main(argv) == 0
    before = (out / "interventions.jsonl").read_bytes()
    assert before
    summary = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["lanes"] == 2 and summary["shards"] >= 1 and summary["batch_size"] > 0
    assert main([*argv, "--lanes", "1"]) == 2
    err = capsys.readouterr().err
    assert "engine.lanes = 2, this run has 1: resume with the same lanes (--lanes 2)" in err
    assert (out / "interventions.jsonl").read_bytes() == before
    assert main(argv) == 0


def test_a_resume_into_another_out_dir_is_refused_before_it_cuts_anything(
    tmp_path: Path, capsys
) -> None:
    """A resume cuts each output file back to its snapshot's size; a file still empty at
    the snapshot (no late events, say) has nothing to tell another run's file by, so a
    resume with a wrong --out emptied that run's file. Now the directory is recorded."""
    recovery = tmp_path / "recovery"
    argv = ["run", "--clients", "300", "--span-s", "3600", "--recovery-dir", str(recovery)]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    other = tmp_path / "b"
    other.mkdir()
    (other / "late_events.jsonl").write_bytes(b'{"from": "another run"}\n')
    assert main([*argv, "--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"outputs went to {tmp_path / 'a'}, not to {other}" in err
    assert (other / "late_events.jsonl").read_bytes() == b'{"from": "another run"}\n'
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0


def test_a_resume_with_other_generator_options_is_refused(tmp_path: Path, capsys) -> None:
    """Resumed, the generator makes its traffic again; with other options it is other
    traffic, and the snapshots' positions point into it (898 late events and recall 0.82
    before). The pace (--rate) may change."""
    argv = ["run", "--clients", "300", "--span-s", "3600", "--out", str(tmp_path / "out"),
            "--recovery-dir", str(tmp_path / "recovery")]  # fmt: skip
    assert main(argv) == 0
    assert main([*argv, "--clients", "400"]) == 2
    assert "other generated traffic (clients 300 -> 400)" in capsys.readouterr().err
    assert main([*argv, "--clock", "live", "--duration-s", "1"]) == 2  # other events
    assert "clock 'replay' -> 'live'" in capsys.readouterr().err
    catalog = tmp_path / "catalog.toml"  # the same catalog with one timeout changed
    text = default_catalog_path().read_text()
    catalog.write_text(text.replace('timeout = "30m"', 'timeout = "31m"', 1))
    assert text != catalog.read_text()
    assert main([*argv, "--catalog", str(catalog)]) == 2
    assert "catalog '" in capsys.readouterr().err
    assert main([*argv, "--rate", "100000"]) == 0


def test_a_cluster_process_failing_at_start_stops_the_run(tmp_path: Path) -> None:
    """Process 0 cannot reach ClickHouse and exits; the others, which would wait for it
    forever, are stopped and the run fails naming it, with the exit code one process has
    on that error (it was 1). Process 1 waits in Bytewax's Rust code, where SIGTERM is not
    handled: the parent kills it 3 s after SIGTERM (it waited 10 s)."""
    events = tmp_path / "events.jsonl"
    events.write_text("")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ATO_")},
        "ATO_CLICKHOUSE_URL": "http://127.0.0.1:1",
    }
    argv = [sys.executable, "-m", "ato.cli", "run", "--input", str(events), "--processes", "2"]
    argv += ["--out", str(tmp_path / "out")]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr[-2_000:]
    assert "cannot connect to ClickHouse" in done.stderr
    assert "cluster process" in done.stderr and "were stopped" in done.stderr


def test_brokers_that_do_not_answer_are_one_clear_error(
    tmp_path: Path, capfd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No broker at the address: the run stops at start-up with one error line, not after
    librdkafka's log line per connection attempt (hundreds, written straight to stderr)."""
    from ato.devservers import free_port  # noqa: PLC0415

    monkeypatch.setenv("ATO_KAFKA_BROKERS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("ATO_CLICKHOUSE_ENABLED", "false")
    assert main(["run", "--out", str(tmp_path)]) == 2
    err = capfd.readouterr().err
    assert "cannot reach Kafka at 127.0.0.1:" in err
    assert "rdkafka" not in err and len(err.splitlines()) <= 3


@pytest.mark.parametrize("client", ["producer", "consumer"])
def test_kafka_client_properties_librdkafka_refuses_are_an_error_at_start(
    client: str, tmp_path: Path, capsys
) -> None:
    """Before, a bad producer property passed start-up and failed at the first output (hours
    in, say) as a Bytewax traceback."""
    config = tmp_path / "kafka.toml"
    config.write_text(
        f'out_dir = "{tmp_path}"\n[clickhouse]\nenabled = false\n'
        f'[kafka]\nbrokers = "127.0.0.1:1"\n[kafka.{client}_config]\n"no.such.thing" = "1"\n'
    )
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"ato: error: librdkafka refuses the {client}'s properties" in err
    assert f"{client}_config): No such configuration property" in err
    assert "no.such.thing" in err


def test_a_cluster_summary_has_no_precision_when_any_process_cut_its_input() -> None:
    """Only a process that owns a cut partition knows of the cut; its word wins."""
    base = {"events": 10, "dead_letters": 0, "late_events": 0, "open_instances": 1,
            "state_mb": 1.0, "seconds": 2.0, "interventions": 4, "outputs": "runs/x"}  # fmt: skip
    truth = {"truth_stalls": 4, "precision": 1.0, "recall": 0.5}
    merged = _merge_summaries([{**base, **truth}, dict(base)])
    assert "precision" not in merged and "recall" not in merged
    assert merged["interventions"] == 4 and merged["events"] == 20
    both = _merge_summaries([{**base, **truth}, {**base, **truth}])
    assert both["precision"] == 1.0 and both["interventions"] == 4
    # files without a ground truth (--input, or every process cut): still one shared file
    # (this summed the processes' counts, twice the file's lines with 2 processes)
    files = _merge_summaries([dict(base), {**base, "interventions": 3}])
    assert files["interventions"] == 4
    kafka = {**base, "outputs": "kafka topics ato.interventions, ato.dead_letters"}
    assert _merge_summaries([kafka, dict(kafka)])["interventions"] == 8


def test_a_resumed_live_run_generates_the_traffic_of_the_run_it_resumes(
    tmp_path: Path, capsys
) -> None:
    """Live, the generator's traffic starts at the wall clock; resumed from a recovery
    directory, it starts where the first run's did, so the snapshots' positions point at the
    same events (a new start made them point into other traffic)."""
    recovery = tmp_path / "recovery"
    argv = ["run", "--clock", "live", "--clients", "100", "--span-s", "5", "--duration-s", "1",
            "--recovery-dir", str(recovery), "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    first = (recovery / "live_start_ms").read_text()
    time.sleep(0.05)
    assert main(argv) == 0
    assert (recovery / "live_start_ms").read_text() == first
    runs = [orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line[:1] == "{"]
    # the resumed run reads on from where the first stopped, what fell due meanwhile and in
    # its own second (about as much as the first read); from a new start it skipped as many
    # events of the new traffic as the first had read, nearly all that were due
    assert [r["late_events"] for r in runs] == [0, 0]
    assert runs[1]["events"] > runs[0]["events"] // 2 > 0
