"""Bytewax's panic text kept off stderr when ato reports the error itself."""

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, run_main

from ato import panic_text
from ato.exceptions import AtoError, reported_by_ato
from ato.panic_text import panic_text_dropped, without_panics

HINT_PANIC = (
    b"thread '<unnamed>' panicked at src/outputs.rs:552:29:\n"
    b"Box<dyn Any>\n"
    b"note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n"
    b"\n"
)
BACKTRACE_PANIC = (
    b"thread 'timely:work-0' panicked at src/outputs.rs:552:29:\n"
    b"Box<dyn Any>\n"
    b"stack backtrace:\n"
    b"   0: std::panicking::begin_panic\n"
    b"  15: cfunction_vectorcall_FASTCALL_KEYWORDS\n"
    b"             at /tmp/Python-3.11.7/Objects/methodobject.c:443:24\n"
    b"note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.\n"
)


def test_without_panics_keeps_every_other_line() -> None:
    text = b"progress 1\n" + HINT_PANIC + b"a warning\n" + BACKTRACE_PANIC + b"progress 2\n"
    assert without_panics(text) == b"progress 1\na warning\nprogress 2\n"
    assert without_panics(HINT_PANIC + b"\nthen a blank line\n") == b"\nthen a blank line\n"
    assert without_panics(b"no panic here\nthread 'x' did fine\n") == (
        b"no panic here\nthread 'x' did fine\n"
    )


def _write_through(error: BaseException | None) -> None:
    with panic_text_dropped(reported_by_ato):
        os.write(2, b"before\n")
        os.write(2, HINT_PANIC)
        os.write(2, b"after, unfinished")
        if error is not None:
            raise error


def test_an_error_ato_reports_drops_the_panic_text(capfd: pytest.CaptureFixture[str]) -> None:
    wrapped = RuntimeError("error writing output batch")
    wrapped.__cause__ = AtoError("clear")
    with pytest.raises(RuntimeError):
        _write_through(wrapped)
    assert capfd.readouterr().err == "before\nafter, unfinished"


def test_an_interrupt_drops_the_panic_text(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(KeyboardInterrupt):
        _write_through(KeyboardInterrupt())
    assert capfd.readouterr().err == "before\nafter, unfinished"


@pytest.mark.parametrize("error", [None, ValueError("a bug")])
def test_other_endings_keep_every_line(
    error: BaseException | None, capfd: pytest.CaptureFixture[str]
) -> None:
    if error is None:
        _write_through(None)
    else:
        with pytest.raises(ValueError, match="a bug"):
            _write_through(error)
    assert capfd.readouterr().err == "before\n" + HINT_PANIC.decode() + "after, unfinished"


def test_lines_pass_through_while_the_block_runs(capfd: pytest.CaptureFixture[str]) -> None:
    with panic_text_dropped(reported_by_ato):
        print("progress line", file=sys.stderr, flush=True)
        deadline = 200
        while "progress line" not in capfd.readouterr().err:  # relayed before the block ends
            deadline -= 1
            assert deadline, "the line was not relayed while the block ran"
            time.sleep(0.01)


class _Failing(StatelessSinkPartition[int]):
    def write_batch(self, items: list[int]) -> None:
        msg = "ClickHouse is gone (a clear message)"
        raise AtoError(msg)


class _FailingSink(DynamicSink[int]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Failing:
        return _Failing()


def test_a_real_bytewax_panic_leaves_only_the_error(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUST_BACKTRACE", "1")
    flow = Dataflow("failing")
    op.output("out", op.input("in", flow, TestingSource([1, 2, 3])), _FailingSink())
    with pytest.raises(Exception) as raised, panic_text_dropped(reported_by_ato):  # noqa: PT011
        run_main(flow)
    assert reported_by_ato(raised.value)
    err = capfd.readouterr().err
    assert "panicked at" not in err
    assert "backtrace" not in err


def test_a_process_with_many_open_files_still_relays(capfd: pytest.CaptureFixture[str]) -> None:
    """The relay's pipe past fd 1024, where select() refused it (the full test suite holds
    that many files open by its end) and the relay thread died."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:  # room for them (as ato run makes room for its files)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with pytest.raises(RuntimeError), panic_text_dropped(reported_by_ato):
            os.write(2, b"before\n" + HINT_PANIC)
            raise RuntimeError from AtoError("clear")
    finally:
        for fd in spare:
            os.close(fd)
    assert capfd.readouterr().err == "before\n"


def test_lines_held_too_long_are_written_while_the_flow_runs(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flow that neither ends nor fails soon after its panic (a slow teardown, a hang, a
    kill to come) gets the panic text written out: nothing waits on the flow's end."""
    monkeypatch.setattr(panic_text, "HOLD_S", 0.2)
    with pytest.raises(RuntimeError), panic_text_dropped(reported_by_ato):
        os.write(2, b"before\n" + HINT_PANIC)
        time.sleep(0.6)
        assert capfd.readouterr().err == "before\n" + HINT_PANIC.decode()
        os.write(2, b"later\n")
        raise RuntimeError from AtoError("clear")
    assert capfd.readouterr().err == "later\n"


def test_a_process_started_without_stderr_runs_as_before() -> None:
    """With fd 2 closed, Python has no sys.stderr and fd 2 is whatever file opened next
    (ato run's lock file): nothing is relayed into it."""
    code = (
        "import os\n"
        "from ato.panic_text import panic_text_dropped\n"
        "taken = os.open(os.devnull, os.O_WRONLY)\n"  # fd 2, as ato run's lock file took it
        "with panic_text_dropped(lambda error: True):\n"
        "    print('inside', taken)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False,
        cwd=Path(__file__).parents[1], preexec_fn=lambda: os.close(2),  # noqa: PLW1509
    )  # fmt: skip
    assert done.returncode == 0
    assert done.stdout == "inside 2\n"
