"""Intervention candidates from stall records: deterministic ids, priority, breakpoint context.

The document layout is ``ato/schemas/intervention.schema.json`` (version 1).
"""

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


def intervention_id(client_id: str, journey: str, start_ts: int, step: str, attempt: int) -> str:
    """Pure function of (client, journey, instance start, step, attempt): replays repeat it."""
    return str(
        uuid.uuid5(ID_NAMESPACE, f"{client_id}\x1f{journey}\x1f{start_ts}\x1f{step}\x1f{attempt}")
    )


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
    docs = []
    ints = stalls.ints
    for i in range(len(stalls)):
        journey = catalog.journeys[int(ints[O_JOURNEY, i])]
        step = journey.steps[int(ints[O_STEP, i])]
        attempt = int(ints[O_ATTEMPT, i])
        client_id = stalls.client_id[i]
        start = int(ints[O_START, i])
        deadline = int(ints[O_DEADLINE, i])
        abandoned = bool(ints[O_ABANDONED, i])
        features = {
            "events": int(ints[O_EVENTS, i]),
            "errors": int(ints[O_ERRORS, i]),
            "back_steps": int(ints[O_BACK, i]),
            "channel_switches": int(ints[O_SWITCHES, i]),
            "time_on_step_ms": deadline - int(ints[O_ENTERED, i]),
            "elapsed_ms": deadline - start,
            "recent_calls": round(float(stalls.floats[OF_CALLS, i]), 4),
            "recent_app_sessions": round(float(stalls.floats[OF_SESSIONS, i]), 4),
        }
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
                    journey.priority,
                    features["errors"],
                    features["back_steps"],
                    features["channel_switches"],
                    features["recent_calls"],
                    abandoned,
                    attempt,
                ),
                "reason": "abandon_signal" if abandoned else "step_timeout",
                "instance_start_ts": start,
                "deadline_ts": deadline,
                "last_progress_ts": int(ints[O_PROGRESS, i]),
                "last_event": {
                    "type": catalog.type_names[int(ints[O_LAST_TYPE, i])],
                    "channel": CHANNELS[int(ints[O_LAST_CHANNEL, i])],
                },
                "features": features,
                "emitted_at_ms": emitted_at_ms,
            }
        )
    docs.sort(key=lambda d: (d["deadline_ts"], d["intervention_id"]))
    return docs
