"""Intervention candidates from stall records: deterministic ids, priority, breakpoint context.

The document layout is ``ato/schemas/intervention.schema.json`` (version 1).
"""

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from ato.catalog import CHANNELS, SEGMENTS, TIERS, Catalog
from ato.columns import client_id_texts
from ato.threads import in_halves
from operators.batches import InterventionBatch
from operators.render import (
    FIXED4,
    INT,
    SPAN,
    TEXT,
    Template,
    Vocabulary,
    json_string_spans,
    render,
)
from operators.uuid5 import uuid5_rows
from policy.profiles import CONTACT_CHANNELS
from state.base import Records
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
_NAMESPACE_ARRAY = np.frombuffer(_NAMESPACE_BYTES, np.uint8)


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


def intervention_ids(
    client_ids: list[str],
    journeys: list[str],
    starts: list[int],
    steps: list[str],
    attempts: list[int],
) -> list[str]:
    """:func:`intervention_id` of many rows (the plain twin of :meth:`InterventionBuilder.ids`)."""
    return [
        intervention_id(c, j, t, s, a)
        for c, j, t, s, a in zip(client_ids, journeys, starts, steps, attempts, strict=True)
    ]


def priorities(
    journey_priority: np.ndarray,
    errors: np.ndarray,
    back_steps: np.ndarray,
    switches: np.ndarray,
    recent_calls: np.ndarray,
    abandoned: np.ndarray,
    attempt: np.ndarray,
) -> np.ndarray:
    """:func:`priority` over arrays."""
    score = (
        journey_priority
        + 6 * np.minimum(errors, 3)
        + 4 * np.minimum(back_steps, 3)
        + 4 * np.minimum(switches, 3)
        + 8 * np.minimum(recent_calls, 2.0)
        + 8 * (abandoned != 0)
        + 10 * (attempt - 1)
    )
    return np.clip(np.round(score), 0, 100).astype(np.int64)


def _template(routed: bool) -> Template:
    """One line per intervention; hole indices refer to the rows InterventionBuilder prepares.

    ``routed`` documents (contact policy on) also carry the channel, segment and RM.
    """
    routing: list[str | tuple[int, int]] = [
        ',"channel":', (TEXT, 6), ',"segment":', (TEXT, 7), ',"rm_id":', (SPAN, 2),
    ]  # fmt: skip
    return Template.compile(
        [
            '{"schema":' + orjson.dumps(SCHEMA).decode() + ',"intervention_id":', (SPAN, 0),
            ',"client_id":', (SPAN, 1),
            ',"journey":', (TEXT, 0),
            ',"step":', (TEXT, 1),
            ',"step_index":', (INT, 0),
            ',"attempt":', (INT, 1),
            ',"tier":', (TEXT, 2),
            ',"priority":', (INT, 2),
            *(routing if routed else []),
            ',"reason":', (TEXT, 3),
            ',"instance_start_ts":', (INT, 3),
            ',"deadline_ts":', (INT, 4),
            ',"last_progress_ts":', (INT, 5),
            ',"last_event":{"type":', (TEXT, 4),
            ',"channel":', (TEXT, 5),
            '},"features":{"events":', (INT, 6),
            ',"errors":', (INT, 7),
            ',"back_steps":', (INT, 8),
            ',"channel_switches":', (INT, 9),
            ',"time_on_step_ms":', (INT, 10),
            ',"elapsed_ms":', (INT, 11),
            ',"recent_calls":', (FIXED4, 0),
            ',"recent_app_sessions":', (FIXED4, 1),
            '},"emitted_at_ms":', (INT, 12),
            "}",
        ]
    )  # fmt: skip


_TEMPLATE = _template(routed=False)
_ROUTED_TEMPLATE = _template(routed=True)


@dataclass(frozen=True)
class Routing:
    """Where the contact policy sends each stall of a batch (aligned with its records)."""

    tier: list[str]  # ai, remote or offline
    channel: list[str]  # a contact channel of the tier (policy.profiles.CONTACT_CHANNELS)
    priority: list[int]  # 0-100, after the routing rule's adjustment
    segment: list[str]  # the client's segment from their profile
    rm_id: list[str]  # the RM for offline, else ""


_REASONS = ("step_timeout", "abandon_signal")
_ID_WIDTH = 38  # a quoted UUID


def deadline_id_order(deadline: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Row order by deadline, then intervention id (ASCII ``[n, 36]``).

    Sorts on the first 8 characters of the id as one big-endian integer (the same order as
    the text); only when two rows tie on that too does it sort on the whole id.
    """
    prefix = np.ascontiguousarray(ids[:, :8]).view(">u8").ravel()
    order = np.lexsort((prefix, deadline))
    d, p = deadline[order], prefix[order]
    if np.any((d[1:] == d[:-1]) & (p[1:] == p[:-1])):
        return np.lexsort((ids.view("S36").ravel(), deadline))
    return order


def quoted_ids(ids: np.ndarray, span_start: np.ndarray, span_len: np.ndarray) -> np.ndarray:
    """Client ids (``S``, UTF-8) as JSON strings in one buffer; fills each one's span.

    Ids of printable ASCII without quote or backslash (the usual case) are quoted as they
    are; otherwise orjson encodes them all.
    """
    n, width = len(ids), ids.dtype.itemsize
    chars = ids.view(np.uint8).reshape(n, width)
    lengths = np.strings.str_len(ids)
    inside = np.arange(width) < lengths[:, None]
    plain = (chars >= 0x20) & (chars < 0x7F) & (chars != ord('"')) & (chars != ord("\\"))
    if not (plain | ~inside).all():
        encoded = np.frombuffer(orjson.dumps(client_id_texts(ids)), np.uint8)
        found = json_string_spans(encoded, span_start, span_len)
        assert found == n, "client ids are strings"
        return encoded
    out = np.full((n, width + 2), ord('"'), np.uint8)
    out[:, 1:-1] = np.where(inside, chars, ord('"'))
    span_start[:] = np.arange(n) * (width + 2)
    span_len[:] = lengths + 2
    return out.ravel()


class InterventionBuilder:
    """Turns stall records into intervention documents for one catalog.

    :meth:`build` renders the documents as JSON lines with a numba kernel;
    :meth:`build_docs` builds the same documents as dicts, plainly: it is the definition
    the rendering is tested against.
    """

    def __init__(self, catalog: Catalog) -> None:
        journeys = catalog.journeys
        width = max(len(j.steps) for j in journeys)
        self.journey_names = np.array([j.name for j in journeys], dtype=object)
        self.step_names = np.array(catalog.step_names(), dtype=object)
        self.base_priority = np.array([j.priority for j in journeys], dtype=np.int64)
        self.tiers = np.array(catalog.ladder_tiers(), dtype=object)
        self.type_names = np.array(catalog.type_names, dtype=object)
        self.channels = np.array(CHANNELS, dtype=object)
        # one vocabulary of every name a document holds; sections start at these codes
        sections = [
            self.journey_names.ravel(), self.step_names.ravel(), self.tiers.ravel(),
            np.array(_REASONS, dtype=object), self.type_names, self.channels,
            np.array(TIERS, dtype=object), np.array(CONTACT_CHANNELS, dtype=object),
            np.array(SEGMENTS, dtype=object),
        ]  # fmt: skip
        self.vocabulary = Vocabulary.of([orjson.dumps(str(n)) for sec in sections for n in sec])
        # journey names, then step names (journey * width + step): the names ids hash
        names = [str(n).encode() for n in (*self.journey_names, *self.step_names.ravel())]
        self.name_bytes = np.frombuffer(b"".join(names) or b"\0", np.uint8)
        self.name_len = np.array([len(n) for n in names], np.int64)
        self.name_start = np.cumsum(self.name_len) - self.name_len
        bases = np.cumsum([0] + [len(sec) for sec in sections])
        self.base_journey, self.base_step, self.base_tier = bases[0], bases[1], bases[2]
        self.base_reason, self.base_type, self.base_channel = bases[3], bases[4], bases[5]
        self.base_routed_tier, self.base_contact, self.base_segment = bases[6], bases[7], bases[8]
        self.width = width

    def priorities(self, records: Records) -> np.ndarray:
        """:func:`priority` of each record (recent calls rounded to 4 decimals, as in the
        documents), int64."""
        ints = records.ints
        calls = np.rint(records.floats[OF_CALLS] * 10_000) / 10_000
        return priorities(
            self.base_priority[ints[O_JOURNEY]], ints[O_ERRORS], ints[O_BACK], ints[O_SWITCHES],
            calls, ints[O_ABANDONED], ints[O_ATTEMPT],
        )  # fmt: skip

    def ids(self, records: Records) -> np.ndarray:
        """Intervention id of each record (:func:`intervention_id`), as ASCII uint8
        ``[n, 36]``, computed by the numba kernel :func:`operators.uuid5.uuid5_rows`."""
        n = len(records)
        out = np.empty((n, 36), np.uint8)
        if not n:
            return out
        ints = np.ascontiguousarray(records.ints)  # a take of records may leave it F-ordered
        j = ints[O_JOURNEY]
        clients = records.client_id
        chars = clients.view(np.uint8).reshape(n, clients.dtype.itemsize)
        lengths = np.strings.str_len(clients)
        steps = len(self.journey_names) + j * self.width + ints[O_STEP]
        starts, attempts = ints[O_START], ints[O_ATTEMPT]

        def rows(a: int, b: int) -> None:
            uuid5_rows(
                _NAMESPACE_ARRAY, chars[a:b], lengths[a:b], self.name_bytes, self.name_start,
                self.name_len, j[a:b], steps[a:b], starts[a:b], attempts[a:b], out[a:b],
            )  # fmt: skip

        in_halves(n, rows)
        return out

    def build(
        self,
        stalls: Records,
        emitted_at_ms: int,
        ids: np.ndarray | None = None,
        routing: Routing | None = None,
    ) -> InterventionBatch:
        """One document per stall record, ordered by deadline then id.

        ``ids``: :meth:`ids` of ``stalls`` when the caller has them already. ``routing``:
        the contact policy's tier, priority, channel, segment and RM per record, which
        replace the catalog ladder's tier and the computed priority.
        """
        n = len(stalls)
        if n == 0:
            return InterventionBatch.empty()
        ints = stalls.ints
        j, s, attempt = ints[O_JOURNEY], ints[O_STEP], ints[O_ATTEMPT]
        start, deadline = ints[O_START], ints[O_DEADLINE]
        if ids is None:
            ids = self.ids(stalls)
        order = deadline_id_order(deadline, ids)
        fixed = np.rint(stalls.floats[[OF_CALLS, OF_SESSIONS]] * 10_000).astype(np.int64)
        prio = priorities(
            self.base_priority[j], ints[O_ERRORS], ints[O_BACK], ints[O_SWITCHES],
            fixed[0] / 10_000, ints[O_ABANDONED], attempt,
        )  # fmt: skip
        numbers = np.stack(
            [
                s, attempt, prio, start, deadline, ints[O_PROGRESS], ints[O_EVENTS],
                ints[O_ERRORS], ints[O_BACK], ints[O_SWITCHES], deadline - ints[O_ENTERED],
                deadline - start, np.full(n, emitted_at_ms, np.int64),
            ]
        )  # fmt: skip
        codes = np.stack(
            [
                self.base_journey + j,
                self.base_step + j * self.width + s,
                self.base_tier + j * 3 + np.minimum(attempt, 3) - 1,
                self.base_reason + (ints[O_ABANDONED] != 0),
                self.base_type + ints[O_LAST_TYPE],
                self.base_channel + ints[O_LAST_CHANNEL],
            ]
        )
        span_start = np.empty((3, n), np.int64)
        span_len = np.full((3, n), _ID_WIDTH, np.int64)
        client_json = quoted_ids(stalls.client_id, span_start[1], span_len[1])
        span_start[0] = len(client_json) + _ID_WIDTH * np.arange(n)
        quoted = np.full((n, _ID_WIDTH), ord('"'), np.uint8)
        quoted[:, 1:-1] = ids
        buffers = [client_json, quoted.ravel()]
        template = _TEMPLATE
        if routing is not None:
            template = _ROUTED_TEMPLATE
            numbers[2] = routing.priority
            codes[2] = self.base_routed_tier + np.array([TIERS.index(t) for t in routing.tier])
            contact = [CONTACT_CHANNELS.index(c) for c in routing.channel]
            segment = [SEGMENTS.index(seg) for seg in routing.segment]
            codes = np.vstack([codes, self.base_contact + np.array(contact, np.int64)])
            codes = np.vstack([codes, self.base_segment + np.array(segment, np.int64)])
            rm_json = np.frombuffer(orjson.dumps(routing.rm_id), np.uint8)
            found = json_string_spans(rm_json, span_start[2], span_len[2])
            assert found == n, "RM ids are strings"
            span_start[2] += len(client_json) + len(quoted.ravel())
            buffers.append(rm_json)
        else:
            span_start[2], span_len[2] = 0, 0
        span_buf = np.concatenate(buffers)
        lines, ends = render(
            template, self.vocabulary, order, numbers, fixed, codes, span_buf, span_start,
            span_len,
        )  # fmt: skip
        return InterventionBatch(
            ids[order].view("S36").ravel(), stalls.client_id[order], lines, ends
        )

    def build_docs(
        self, stalls: Records, emitted_at_ms: int, routing: Routing | None = None
    ) -> list[dict[str, Any]]:
        """The documents of :meth:`build` as dicts."""
        if len(stalls) == 0:
            return []
        ints = stalls.ints
        j, s, attempt = ints[O_JOURNEY], ints[O_STEP], ints[O_ATTEMPT]
        start, deadline = ints[O_START], ints[O_DEADLINE]
        calls = np.round(stalls.floats[OF_CALLS], 4)
        sessions = np.round(stalls.floats[OF_SESSIONS], 4)
        journey = self.journey_names[j].tolist()
        step = self.step_names[j, s].tolist()
        starts, attempts = start.tolist(), attempt.tolist()
        prio = priorities(
            self.base_priority[j], ints[O_ERRORS], ints[O_BACK], ints[O_SWITCHES], calls,
            ints[O_ABANDONED], attempt,
        )  # fmt: skip
        columns = zip(
            intervention_ids(stalls.client_texts(), journey, starts, step, attempts),
            stalls.client_texts(),
            journey,
            step,
            s.tolist(),
            attempts,
            self.tiers[j, np.minimum(attempt, 3) - 1].tolist(),
            prio.tolist(),
            np.where(ints[O_ABANDONED] != 0, _REASONS[1], _REASONS[0]).tolist(),
            starts,
            deadline.tolist(),
            ints[O_PROGRESS].tolist(),
            self.type_names[ints[O_LAST_TYPE]].tolist(),
            self.channels[ints[O_LAST_CHANNEL]].tolist(),
            ints[O_EVENTS].tolist(),
            ints[O_ERRORS].tolist(),
            ints[O_BACK].tolist(),
            ints[O_SWITCHES].tolist(),
            (deadline - ints[O_ENTERED]).tolist(),
            (deadline - start).tolist(),
            calls.tolist(),
            sessions.tolist(),
            strict=True,
        )
        docs = [
            {
                "schema": SCHEMA,
                "intervention_id": iid,
                "client_id": client,
                "journey": jname,
                "step": sname,
                "step_index": sindex,
                "attempt": att,
                "tier": tier,
                "priority": pr,
                "reason": reason,
                "instance_start_ts": st,
                "deadline_ts": dl,
                "last_progress_ts": prog,
                "last_event": {"type": ltype, "channel": lchannel},
                "features": {
                    "events": events,
                    "errors": errors,
                    "back_steps": back,
                    "channel_switches": switches,
                    "time_on_step_ms": on_step,
                    "elapsed_ms": elapsed,
                    "recent_calls": rc,
                    "recent_app_sessions": rs,
                },
                "emitted_at_ms": emitted_at_ms,
            }
            for (
                iid, client, jname, sname, sindex, att, tier, pr, reason, st, dl, prog, ltype,
                lchannel, events, errors, back, switches, on_step, elapsed, rc, rs,
            ) in columns
        ]  # fmt: skip
        if routing is not None:
            docs = [
                _routed(doc, routing, r) for r, doc in enumerate(docs)
            ]  # still in record order here
        docs.sort(key=lambda d: (d["deadline_ts"], d["intervention_id"]))
        return docs


def _routed(doc: dict[str, Any], routing: Routing, row: int) -> dict[str, Any]:
    """``doc`` with the routing of ``row``: tier and priority replaced, channel, segment and
    rm_id added after priority (the order of the rendered line)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "tier":
            out[key] = routing.tier[row]
        elif key == "priority":
            out[key] = routing.priority[row]
            out["channel"] = routing.channel[row]
            out["segment"] = routing.segment[row]
            out["rm_id"] = routing.rm_id[row]
        else:
            out[key] = value
    return out
