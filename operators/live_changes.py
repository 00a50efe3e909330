"""Live journey state of one shard: which instances changed, and writing their state to Redis.

The shard step marks the (client, journey) pairs each call touched: events that counted in an
instance, stalls and outcomes. At most every ``interval_ms`` (and when input ends) the tracker
reads the current state of every marked pair from the shard store and writes it with
:class:`~policy.live_state.LiveStateWriter`: open instances as hash fields, closed ones
removed. Only the latest state is written, so a client's many events between two writes cost
one field write.

The state is read on the flow's thread; the values are rendered and the commands written
(numba kernels that release the GIL) and sent on the writer's own thread (in submission
order), so the flow goes on meanwhile; at most ``MAX_IN_FLIGHT`` writes per shard are on
their way (while that many are, new marks wait: a Redis that hangs slows the writes, not
the flow). A snapshot does not wait for them: it holds their marks as well as the waiting
ones, and writing a mark again is harmless (the state is read anew). When Redis is
unreachable, a failed write's marks are kept and written again after ``interval_ms``: the
state read then is the newest, so nothing needs replaying; each outage is counted (the
run's ``redis_outages``). When input ends, the tracker writes every mark, retrying for at
most the writer's ``outage_wait_s``, then fails the run: a run never ends with changes it
did not write. When input was cut in a run that resumes, it tries once and keeps what
fails for the snapshot. Other Redis errors (a key of the wrong type, say) are logged, and those
marks dropped.
"""

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numba import njit

from ato.columns import client_id_bytes
from operators.interventions import InterventionBuilder
from operators.render import INT, TEXT, Template, Vocabulary, render
from policy.exceptions import LiveStateError
from policy.live_commands import CLOSED, commands_of_rows
from policy.live_state import KEY_PREFIX, LiveStateWriter, where
from state.hashing import fibonacci_slot, table_bits
from state.lanes import LanedStore

log = logging.getLogger(__name__)
MAX_IN_FLIGHT = 4  # writes handed to the writer's thread and not yet done, per shard
RETRY_S = 1.0  # at end of input, pause between attempts while Redis does not answer


@dataclass(frozen=True)
class ValueFields:
    """The fields of the open instances among ``pairs`` marked pairs: ``rows`` are their
    indices, ``ints`` and ``codes`` the template's numbers and vocabulary codes by row."""

    pairs: int
    rows: np.ndarray
    ints: np.ndarray
    codes: np.ndarray


@dataclass(frozen=True)
class InFlight:
    """A write handed to the writer's thread, and the marks it covers."""

    write: "Future[int]"
    keys: np.ndarray
    journeys: np.ndarray
    client_ids: np.ndarray


# a live-state value, in the member order of policy.live_state.encode_value
_VALUE = Template.compile(
    [
        '{"step":', (TEXT, 0),
        ',"since_ms":', (INT, 0),
        ',"last_type":', (TEXT, 1),
        ',"last_channel":', (TEXT, 2),
        ',"last_ms":', (INT, 1),
        ',"stalled":', (TEXT, 3),
        ',"attempt":', (INT, 2),
        ',"updated_ms":', (INT, 3),
        "}",
    ]
)  # fmt: skip


class LiveStateTracker:
    """Marks of changed instances and their periodic write (one per shard)."""

    def __init__(
        self,
        names: InterventionBuilder,
        writer: LiveStateWriter,
        interval_ms: int,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.writer = writer
        self.interval_ms = interval_ms
        self.sleep = sleep
        self.name_bytes = [str(name).encode() for name in names.journey_names]
        self.key_prefix = KEY_PREFIX.encode()
        self.width = names.step_names.shape[1]
        sections = [
            names.step_names.ravel(), names.type_names, names.channels,
            np.array([False, True], dtype=object),
        ]  # fmt: skip
        self.vocabulary = Vocabulary.of([orjson.dumps(v) for sec in sections for v in sec])
        bases = np.cumsum([0] + [len(sec) for sec in sections]).tolist()
        self.base_type, self.base_channel, self.base_bool = bases[1], bases[2], bases[3]
        self.keys: list[np.ndarray] = []  # uint64 client hashes
        self.journeys: list[np.ndarray] = []  # int64 journey codes
        self.client_ids: list[np.ndarray] = []  # S: client ids as UTF-8
        self.next_write_ms = 0
        self.in_flight: list[InFlight] = []
        self.failing = False
        self.stats = {"writes": 0, "rows": 0, "failures": 0, "errors": 0, "outages": 0}
        self.outages_reported = 0  # of stats["outages"], those already on a shard output

    def mark(
        self, keys: np.ndarray, journeys: np.ndarray, client_ids: Sequence[str] | np.ndarray
    ) -> None:
        """Mark instances as changed; ``journeys`` < 0 (events outside any instance) are
        ignored."""
        keep = np.asarray(journeys) >= 0
        if not keep.any():
            return
        ids = client_id_bytes(client_ids)
        self.keys.append(np.asarray(keys, np.uint64)[keep])
        self.journeys.append(np.asarray(journeys, np.int64)[keep])
        self.client_ids.append(ids[keep])

    def pending(self) -> int:
        """Marks waiting (duplicates included)."""
        return sum(len(k) for k in self.keys)

    def maybe_write(self, store: LanedStore, now_ms: int, force: bool = False) -> int:
        """Hand the marked instances' state to the writer's thread when ``interval_ms`` has
        passed (or ``force``, at end of input: see :meth:`_write_all`); return the rows
        handed over. Writes that failed since the last call are marked again."""
        self._collect(wait=False)
        if now_ms < self.next_write_ms - self.interval_ms:
            self.next_write_ms = now_ms  # the clock went back: the interval counts from now
        if force:
            return self._write_all(store, now_ms)
        if not self.keys or now_ms < self.next_write_ms:
            return 0
        if len(self.in_flight) >= MAX_IN_FLIGHT:
            return 0  # Redis is behind (or hangs): the marks wait for a later call, not the flow
        return self._hand_over(store, now_ms)

    def new_outages(self) -> int:
        """Outages met since the last call (for the shard's next output)."""
        new = self.stats["outages"] - self.outages_reported
        self.outages_reported = self.stats["outages"]
        return new

    def _write_all(self, store: LanedStore, now_ms: int) -> int:
        """End of input: write every mark and wait; while Redis does not answer, try again
        every :data:`RETRY_S` for at most the writer's ``outage_wait_s``, then raise
        :class:`LiveStateError` (the changes would be lost silently otherwise)."""
        started = time.monotonic()
        handed = 0
        while True:
            if self.keys:
                handed += self._hand_over(store, now_ms, final=True)
            self._collect(wait=True)
            if not self.keys:
                self.writer.flush()
                return handed
            waited = time.monotonic() - started
            limit = self.writer.outage_wait_s
            if waited >= limit:
                msg = (
                    f"live state: waited {waited:.0f} s at end of input for Redis at"
                    f" {where(self.writer.client)} to answer, {self.pending()} instance"
                    f" changes not written (redis.outage_wait_s = {limit:g})"
                )
                self.writer.flush()  # no idle thread outlives the input
                raise LiveStateError(msg, transient=False)
            self.sleep(min(RETRY_S, limit - waited))

    def write_before_pause(self, store: LanedStore, now_ms: int) -> int:
        """The input was cut in a run that resumes: try every mark once and wait for the
        writes; what fails stays marked, for the snapshot (the resumed run writes it)."""
        self._collect(wait=False)
        handed = self._hand_over(store, now_ms, final=True) if self.keys else 0
        self._collect(wait=True)
        self.writer.flush()
        return handed

    def _hand_over(self, store: LanedStore, now_ms: int, final: bool = False) -> int:
        """Read the marked instances' state and hand its write to the writer's thread
        (``final``: tried even while the writer pauses after a failure)."""
        self.next_write_ms = now_ms + self.interval_ms
        keys, journeys, ids = self._unique()
        fields = self.value_fields(store, keys, journeys, now_ms)
        self._clear()
        write = self.writer.submit(
            lambda: commands_of_rows(
                self.writer.ttl_s,
                self.key_prefix,
                ids,
                journeys,
                self.name_bytes,
                *self.render_spans(fields),
            ),
            final=final,
        )
        self.in_flight.append(InFlight(write, keys, journeys, ids))
        return len(keys)

    def _collect(self, wait: bool, keep: int = 0) -> None:
        """Settle finished writes (with ``wait``: all but the newest ``keep``, waiting):
        a transient failure marks its instances again, other errors drop them, logged."""
        while self.in_flight and (
            self.in_flight[0].write.done() or (wait and len(self.in_flight) > keep)
        ):
            done = self.in_flight.pop(0)
            n = len(done.keys)
            try:
                done.write.result()
            except LiveStateError as exc:
                if exc.transient:
                    self.keys.insert(0, done.keys)
                    self.journeys.insert(0, done.journeys)
                    self.client_ids.insert(0, done.client_ids)
                    self.stats["failures"] += 1
                    if not self.failing:
                        self.stats["outages"] += 1
                        log.warning(
                            "live state: %s; %d instances kept to retry", exc, len(done.keys)
                        )
                    self.failing = True
                else:
                    self.stats["errors"] += 1
                    log.error("live state: %s; %d instance changes dropped", exc, n)
                continue
            if self.failing:
                log.warning("live state: Redis answers again")
            self.failing = False
            self.stats["writes"] += 1
            self.stats["rows"] += n

    def values(
        self, store: LanedStore, keys: np.ndarray, journeys: np.ndarray, now_ms: int
    ) -> list[str | None]:
        """The JSON value of each (client, journey) pair's open instance in the store, None
        where none is open (``policy.live_state.encode_value`` of the same state)."""
        buf, start, length = self.value_spans(store, keys, journeys, now_ms)
        return [
            None if n == CLOSED else buf[a : a + n].tobytes().decode()
            for a, n in zip(start.tolist(), length.tolist(), strict=True)
        ]

    def value_spans(
        self, store: LanedStore, keys: np.ndarray, journeys: np.ndarray, now_ms: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`values` as spans of one buffer, rendered by the numba template kernel:
        (buffer, start, length), length ``CLOSED`` where no instance is open."""
        return self.render_spans(self.value_fields(store, keys, journeys, now_ms))

    def value_fields(
        self, store: LanedStore, keys: np.ndarray, journeys: np.ndarray, now_ms: int
    ) -> "ValueFields":
        """What :meth:`render_spans` renders, read from the store (on the flow's thread:
        the store changes with the next call)."""
        rows, f = store.open_fields(keys, journeys)
        n = len(rows)
        if not n:
            empty = np.zeros((0, 0), np.int64)
            return ValueFields(len(keys), rows, empty, empty)
        j = journeys[rows]
        ints = np.stack(
            [f["since_ms"], f["last_ms"], f["attempt"], np.full(n, now_ms, np.int64)]
        ).astype(np.int64)
        codes = np.stack(
            [
                j * self.width + f["step"],
                self.base_type + f["last_type"],
                self.base_channel + f["last_channel"],
                self.base_bool + (f["stalled"] != 0),
            ]
        ).astype(np.int64)
        return ValueFields(len(keys), rows, ints, codes)

    def render_spans(self, fields: "ValueFields") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The values of :meth:`value_fields` as (buffer, start, length) (the kernel
        releases the GIL: the writer's thread renders while the flow goes on)."""
        rows = fields.rows
        start = np.zeros(fields.pairs, np.int64)
        length = np.full(fields.pairs, CLOSED, np.int64)
        n = len(rows)
        if not n:
            return np.zeros(0, np.uint8), start, length
        empty = np.zeros((0, n), np.int64)
        lines, ends = render(
            _VALUE, self.vocabulary, np.arange(n), fields.ints, empty, fields.codes,
            np.zeros(0, np.uint8), empty, empty,
        )  # fmt: skip
        begins = np.concatenate([[0], ends[:-1]])
        start[rows] = begins
        length[rows] = ends - begins - 1  # without the newline
        return np.frombuffer(lines, np.uint8), start, length

    def _unique(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The marked (client, journey) pairs once each, a client's rows adjacent."""
        return _unique_marks(self.keys, self.journeys, self.client_ids)

    def _clear(self) -> None:
        self.keys, self.journeys, self.client_ids = [], [], []

    def snapshot(self) -> dict[str, Any]:
        """The marks not yet written, those of the writes still on their way included (a
        resumed run writes them again, harmlessly): never waits for a Redis that hangs."""
        self._collect(wait=False)
        keys = [*self.keys, *(w.keys for w in self.in_flight)]
        if not keys:
            return {"keys": None}
        journeys = [*self.journeys, *(w.journeys for w in self.in_flight)]
        client_ids = [*self.client_ids, *(w.client_ids for w in self.in_flight)]
        keys_once, journeys_once, ids_once = _unique_marks(keys, journeys, client_ids)
        return {"keys": keys_once, "journeys": journeys_once, "client_ids": ids_once}

    def restore(self, snap: dict[str, Any]) -> None:
        """Marks from :meth:`snapshot`."""
        if snap.get("keys") is not None:
            self.keys, self.journeys = [snap["keys"]], [snap["journeys"]]
            self.client_ids = [client_id_bytes(snap["client_ids"])]


def _unique_marks(
    keys: list[np.ndarray], journeys: list[np.ndarray], client_ids: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (client, journey) pairs of parts of marks once each, a client's rows adjacent."""
    all_keys, all_journeys = np.concatenate(keys), np.concatenate(journeys)
    rows = unique_pairs(all_keys, all_journeys)
    return all_keys[rows], all_journeys[rows], np.concatenate(client_ids)[rows]


@njit(cache=True, nogil=True)
def unique_pairs(keys: np.ndarray, journeys: np.ndarray) -> np.ndarray:
    """The first row of each distinct (``keys``, ``journeys``) pair, grouped by key: keys in
    the order they first appear, a key's journeys likewise. Two open-addressing tables (pairs,
    keys) and a counting sort by key, instead of sorting every mark (``np.lexsort`` was most
    of a live-state write's time on the flow's thread). Twin: :func:`unique_pairs_twin`."""
    n = len(keys)
    bits = table_bits(n)
    mask = (1 << bits) - 1
    pair_slots = np.full(1 << bits, -1, np.int64)  # -> index into first
    key_slots = np.full(1 << bits, -1, np.int64)  # -> group number
    first = np.empty(n, np.int64)  # row of each distinct pair, in order of appearance
    group_of = np.empty(n, np.int64)  # its key's group
    group_key = np.empty(n, np.uint64)
    group_size = np.zeros(n, np.int64)
    pairs = groups = 0
    for i in range(n):
        key, journey = np.uint64(keys[i]), journeys[i]
        h = fibonacci_slot(key ^ np.uint64(journey), bits)
        while True:
            u = pair_slots[h]
            if u < 0 or (np.uint64(keys[first[u]]) == key and journeys[first[u]] == journey):
                break
            h = (h + 1) & mask
        if u >= 0:
            continue  # a pair seen before
        pair_slots[h] = pairs
        first[pairs] = i
        g_slot = fibonacci_slot(key, bits)
        while key_slots[g_slot] >= 0 and group_key[key_slots[g_slot]] != key:
            g_slot = (g_slot + 1) & mask
        if key_slots[g_slot] < 0:
            key_slots[g_slot] = groups
            group_key[groups] = key
            groups += 1
        group_of[pairs] = key_slots[g_slot]
        group_size[group_of[pairs]] += 1
        pairs += 1
    at = np.zeros(groups, np.int64)  # where each group starts in the output
    for g in range(1, groups):
        at[g] = at[g - 1] + group_size[g - 1]
    out = np.empty(pairs, np.int64)
    for u in range(pairs):
        g = group_of[u]
        out[at[g]] = first[u]
        at[g] += 1
    return out


def unique_pairs_twin(keys: np.ndarray, journeys: np.ndarray) -> np.ndarray:
    """Plain-Python twin of :func:`unique_pairs`."""
    by_key: dict[int, dict[int, int]] = {}
    for i, (key, journey) in enumerate(zip(keys.tolist(), journeys.tolist(), strict=True)):
        by_key.setdefault(key, {}).setdefault(journey, i)
    return np.array([i for rows in by_key.values() for i in rows.values()], np.int64)
