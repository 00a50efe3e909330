"""Bytewax's Rust panic text, kept off stderr when ``ato`` reports the error itself.

Bytewax stops a flow whose step raised by panicking in Rust. Rust's panic hook then writes
``thread '...' panicked at src/....rs:...`` and a payload line (``Box<dyn Any>``) to stderr,
then a hint to set ``RUST_BACKTRACE`` or, when it is set, a backtrace, all before the
exception reaches ``ato``, which prints one clear ``ato: error:`` line. None of that text
helps an operator, and its hint misleads.

:func:`panic_text_dropped` routes the process's stderr (file descriptor 2) through a pipe
while the flow runs. Lines pass through as they come until a panic's first line; from there
they are held, and when the flow ends they are written out, less the panics' own lines if
``quiet(error)`` says that ``ato`` reports the error (an error of its own, an interrupt).
Any other failure keeps every line, for a Bytewax bug's panic is the only trace of it. A
flow still running ``HOLD_S`` (10 s) after its panic (a slow teardown, a hang) gets the held
lines written out then, so that a hang, or a kill after that, never hides them.

A process of a cluster whose flow failed has more to hide: its threads that talk to the other
processes panic later, as those processes stop, and their panic hook (which takes the GIL)
prints ``MergeQueue poisoned`` or, during the interpreter's exit, aborts the process with
``FATAL: exception not rethrown`` (exit code -6). Such a process ends as soon as ``ato``
has reported its error (:func:`exit_after_report` marks the error, :func:`reported` exits):
Bytewax has closed its
sink partitions (flushed their files) by then, and its threads are beyond use.
"""

import contextlib
import fcntl
import os
import re
import select
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PANIC_START = re.compile(rb"^thread '[^']*' panicked at ")
PANIC_TAIL = re.compile(  # lines a panic's text goes on with
    rb"^(stack backtrace:|note: run with `RUST_BACKTRACE|note: Some details are omitted"
    rb"|\s+\d+: |\s+at )"
)
PIPE_BYTES = 1 << 20  # room for a panic's text while the relay waits for the GIL
READ_BYTES = 1 << 16
POLL_S = 0.1
HOLD_S = 10.0  # a flow stops within this of its panic (sinks' closes included), else the
# held lines are written: a hang, or a kill within it, would otherwise hide them


def without_panics(text: bytes) -> bytes:
    """``text`` less each panic's lines: its first line, the payload line after it, the hint
    or backtrace lines that follow, and the blank line that ends them."""
    kept: list[bytes] = []
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        if PANIC_START.match(lines[i]):
            i += 2  # the panic's location, then its payload
            while i < len(lines) and PANIC_TAIL.match(lines[i]):
                i += 1
            if i < len(lines) and not lines[i].strip():
                i += 1
            continue
        kept.append(lines[i])
        i += 1
    return b"".join(kept)


class _Relay(threading.Thread):
    """Copies the pipe to the real stderr line by line until a panic begins, then holds."""

    def __init__(self, read_fd: int, out_fd: int) -> None:
        super().__init__(name="ato-stderr", daemon=True)
        self.read_fd = read_fd
        self.out_fd = out_fd
        self.partial = b""
        self.held = b""
        self.held_since = 0.0
        self.released = False  # held too long: everything written as it comes
        self.stop = threading.Event()

    def run(self) -> None:
        for _attempt in range(2):
            try:
                self._relay()
                return
            except Exception:  # never leave the pipe unread: once full, it stops the flow
                self._release()  # from here every line as it comes

    def _relay(self) -> None:
        poller = select.poll()  # not select(): a busy process has fds past FD_SETSIZE
        poller.register(self.read_fd, select.POLLIN)
        while True:
            ready = poller.poll(POLL_S * 1000)
            if self.held and time.monotonic() - self.held_since > HOLD_S:
                self._release()
            if not ready:
                if self.stop.is_set():
                    return  # drained (a child may still hold the pipe open: not waited for)
                continue
            chunk = os.read(self.read_fd, READ_BYTES)
            if not chunk:
                return
            self._take(chunk)

    def _release(self) -> None:
        write_all(self.out_fd, self.held + self.partial)
        self.held = self.partial = b""
        self.released = True

    def _take(self, chunk: bytes) -> None:
        if self.released:
            write_all(self.out_fd, chunk)
            return
        if self.held:
            self.held += chunk
            return
        data = self.partial + chunk
        end = data.rfind(b"\n") + 1
        self.partial = data[end:]
        lines = data[:end].splitlines(keepends=True)
        for n, line in enumerate(lines):
            if PANIC_START.match(line):
                self.held = b"".join(lines[n:]) + self.partial
                self.held_since = time.monotonic()
                self.partial = b""
                write_all(self.out_fd, b"".join(lines[:n]))
                return
        write_all(self.out_fd, data[:end])

    def finish(self) -> bytes:
        """Stop once the pipe is drained; the text not written yet."""
        self.stop.set()
        self.join()
        return self.held + self.partial


def write_all(fd: int, data: bytes) -> None:
    """Write ``data`` to ``fd`` (stderr: a closed one is not an error of the flow)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except OSError:
            return


EXIT_AFTER_REPORT = "ato_exit_after_report"  # attribute of an error that asks it


def exit_after_report(error: BaseException) -> None:
    """Mark ``error`` so that :func:`reported` ends the process once ``ato`` reported it."""
    setattr(error, EXIT_AFTER_REPORT, True)


def exit_after_report_asked(error: BaseException) -> bool:
    """Whether ``error`` was marked by :func:`exit_after_report`."""
    return bool(getattr(error, EXIT_AFTER_REPORT, False))


def reported(error: BaseException, code: int) -> None:
    """``ato`` has reported ``error``, which it exits with ``code`` for: if the error was
    marked (:func:`exit_after_report`), flush the standard streams and end the process now
    (``os._exit``)."""
    if not exit_after_report_asked(error):
        return
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    os._exit(code)


@contextmanager
def panic_text_dropped(quiet: Callable[[BaseException], bool]) -> Iterator[None]:
    """Run the block with stderr relayed; drop the panic text if it fails and
    ``quiet(error)`` (see the module's docstring)."""
    if sys.stderr is None:  # started without stderr: fd 2 may be any file opened since
        yield
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep tidy
        yield
        return
    read_fd, write_fd = os.pipe()
    try:
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:  # above the system's limit: the default size still works
        pass
    os.dup2(write_fd, 2)
    os.close(write_fd)
    relay = _Relay(read_fd, saved)
    relay.start()
    failure: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        failure = exc
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        try:
            rest = relay.finish()
            if failure is not None and quiet(failure):
                rest = without_panics(rest)
            write_all(saved, rest)
        finally:
            if not relay.is_alive():  # a second interrupt in finish(): left to the exit
                os.close(read_fd)
                os.close(saved)
