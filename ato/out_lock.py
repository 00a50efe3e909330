"""One run at a time in an output directory: a lock file held for the whole run."""

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from ato.exceptions import ConfigError

LOCK_FILE = ".ato-run.lock"


def lock_out_dir(out: Path) -> IO[str]:
    """Hold ``out``'s run lock (released when the returned file closes or the process ends);
    another run writing there is a :class:`ConfigError`, raised before this run touches
    anything, since a fresh run starts every output file empty."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        file = open(out / LOCK_FILE, "a+")  # noqa: SIM115 - held until the run ends
    except OSError as exc:
        msg = f"out_dir {out}: cannot write the run's outputs there: {exc}"
        raise ConfigError(msg) from exc
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.seek(0)
        holder = file.read().strip() or "unknown"
        file.close()
        msg = f"out_dir {out}: another ato run (pid {holder}) is writing there; give another --out"
        raise ConfigError(msg) from None
    try:
        file.seek(0)
        file.truncate()
        file.write(str(os.getpid()))
        file.flush()
    except OSError as exc:  # a full disk
        with contextlib.suppress(OSError):  # its flush fails again
            file.close()
        msg = f"out_dir {out}: cannot write the run's outputs there: {exc}"
        raise ConfigError(msg) from exc
    return file
