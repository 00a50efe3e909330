"""Intervention candidates from stall records: deterministic ids, priority, breakpoint context.

The document layout is ``ato/schemas/intervention.schema.json`` (version 1).
"""

import hashlib
import uuid
from typing import Any

from ato.catalog import CHANNELS, Catalog
from state.base import Stalls
from state.layout import (
    O_ABANDONED,
    O_ATTEMPT,
    O_BACK,
    O_DEADLINE,
    O_ENTERED,
    O_ERRORS,
    O_EVENTS,
    O_JOURNEY,
    O_LAST_CHANNEL,
    O_LAST_TYPE,
    O_PROGRESS,
    O_START,
    O_STEP,
    O_SWITCHES,
    OF_CALLS,
    OF_SESSIONS,
)

SCHEMA = "ato.intervention/1"
ID_NAMESPACE = uuid.UUID("6f1c9a52-6a4e-4d0b-9f0e-2b8f4c1d7a31")
_NAMESPACE_BYTES = ID_NAMESPACE.bytes


def intervention_id(client_id: str, journey: str, start_ts: int, step: str, attempt: int) -> str:
    """Pure function of (client, journey, instance start, step, attempt): replays repeat it.

    A UUID version 5 (SHA-1, RFC 4122) of the fields joined by U+001F in ``ID_NAMESPACE``;
    equal to ``uuid.uuid5(ID_NAMESPACE, ...)`` but without building UUID objects.
    """
    name = f"{client_id}\x1f{journey}\x1f{start_ts}\x1f{step}\x1f{attempt}".encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def priority(
    journey_priority: int,
    errors: int,
    back_steps: int,
    switches: int,
    recent_calls: float,
    abandoned: bool,
    attempt: int,
) -> int:
    """0-100: the journey's base priority raised by signs of a client in trouble."""
    score = (
        journey_priority
        + 6 * min(errors, 3)
        + 4 * min(back_steps, 3)
        + 4 * min(switches, 3)
        + 8 * min(recent_calls, 2.0)
        + (8 if abandoned else 0)
        + 10 * (attempt - 1)
    )
    return int(max(0, min(100, round(score))))


def build_interventions(
    stalls: Stalls, catalog: Catalog, emitted_at_ms: int
) -> list[dict[str, Any]]:
    """One intervention document per stall record, ordered by deadline then id."""
    rows = stalls.ints.tolist()
    calls = [round(x, 4) for x in stalls.floats[OF_CALLS].tolist()]
    sessions = [round(x, 4) for x in stalls.floats[OF_SESSIONS].tolist()]
    journeys, type_names = catalog.journeys, catalog.type_names
    docs = []
    for i, client_id in enumerate(stalls.client_id):
        journey = journeys[rows[O_JOURNEY][i]]
        step = journey.steps[rows[O_STEP][i]]
        attempt = rows[O_ATTEMPT][i]
        start = rows[O_START][i]
        deadline = rows[O_DEADLINE][i]
        abandoned = bool(rows[O_ABANDONED][i])
        errors, back, switches = rows[O_ERRORS][i], rows[O_BACK][i], rows[O_SWITCHES][i]
        docs.append(
            {
                "schema": SCHEMA,
                "intervention_id": intervention_id(
                    client_id, journey.name, start, step.name, attempt
                ),
                "client_id": client_id,
                "journey": journey.name,
                "step": step.name,
                "step_index": step.index,
                "attempt": attempt,
                "tier": journey.tiers[min(attempt, len(journey.tiers)) - 1],
                "priority": priority(
                    journey.priority, errors, back, switches, calls[i], abandoned, attempt
                ),
                "reason": "abandon_signal" if abandoned else "step_timeout",
                "instance_start_ts": start,
                "deadline_ts": deadline,
                "last_progress_ts": rows[O_PROGRESS][i],
                "last_event": {
                    "type": type_names[rows[O_LAST_TYPE][i]],
                    "channel": CHANNELS[rows[O_LAST_CHANNEL][i]],
                },
                "features": {
                    "events": rows[O_EVENTS][i],
                    "errors": errors,
                    "back_steps": back,
                    "channel_switches": switches,
                    "time_on_step_ms": deadline - rows[O_ENTERED][i],
                    "elapsed_ms": deadline - start,
                    "recent_calls": calls[i],
                    "recent_app_sessions": sessions[i],
                },
                "emitted_at_ms": emitted_at_ms,
            }
        )
    docs.sort(key=lambda d: (d["deadline_ts"], d["intervention_id"]))
    return docs
