"""The id a run's ``flow_health`` rows carry."""

import os
from datetime import UTC, datetime


def new_run_id() -> str:
    """A run's id: its start (UTC, to the second) and the id of the process that made it
    (the parent's, for the processes of ``ato run --processes N``)."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}"
