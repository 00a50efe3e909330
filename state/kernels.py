"""numba kernels of the shard store: index, apply a batch of events, expire deadlines.

Semantics (the twin in ``state/twins.py`` implements the same in plain Python):

* An instance is one client's run through one journey, keyed by (client, journey).
* A *progress* event (one mapped to a step) starts an instance or moves it to that step
  (back-steps allowed and counted) and sets ``deadline = ts + timeout(step)``; a terminal
  step closes the instance.
* An event that maps to no step is attributed to the journey it names, else to the
  client's open instance that last progressed (when that one closes, the open instance that
  progressed last before it takes its place); it counts in the features, and an abandon signal
  of that journey shortens the deadline to ``min(deadline, ts + grace)``.
* The instance must progress strictly before its deadline. When any event of the client at
  ``ts >= deadline`` arrives (before that event counts anywhere), or the watermark reaches the
  deadline, the instance stalls once: a stall record is emitted, ``attempt`` grows, and the
  deadline becomes ``deadline + close_after``; progress before then resumes it, otherwise it
  is closed.
* ``close_after`` is also the attribution window of that stall's intervention: the first
  progress after the stall (or the close) emits one outcome record (progressed, completed,
  failed, lapsed) carrying the stall's step, attempt and deadline.
* A client with nothing open and no event for ``client_ttl_ms`` is forgotten: its next event
  starts it afresh (decayed counts at zero) whether or not ``expire_clients`` has freed its
  slot yet, so the features never depend on how the watermark moved.
* Every applied event reports its effect (``EFFECT_*``) and the journey and step of the
  instance it counted in, for funnel counts; an event's segment (>= 0) is kept on its
  instance.

Events must be given in the order the caller sorted them (event time, see
``state.shard_store.order_events``).
"""

import numpy as np
from numba import njit

from ato.jit import njit_no_refcount, prefetch
from state.hashing import mix64
from state.layout import (
    C_FIRST,
    C_LAST_INST,
    C_LAST_TS,
    C_OPEN,
    EFFECT_ADVANCED,
    EFFECT_COMPLETED,
    EFFECT_COUNTED,
    EFFECT_FAILED,
    EFFECT_NONE,
    EFFECT_STARTED,
    F_CALLS,
    F_SESSIONS,
    H_ABANDONED,
    H_JOURNEY,
    H_LAST_CHANNEL,
    H_LAST_TYPE,
    H_SEGMENT,
    H_STALLED,
    H_STEP,
    I_ATTEMPT,
    I_BACK,
    I_CLIENT,
    I_ERRORS,
    I_EVENTS,
    I_NEXT,
    I_SWITCHES,
    K_ABANDON_SIGNALS,
    K_ADVANCED,
    K_CLOSED,
    K_COMPLETED,
    K_EVENTS,
    K_FAILED,
    K_RESUMED,
    K_STALLED,
    K_STARTED,
    KIND_OUTCOME,
    KIND_STALL,
    M_C_FREE,
    M_C_HIGH,
    M_I_FREE,
    M_I_HIGH,
    M_NEXT_CLIENT_EXPIRY,
    M_NEXT_DEADLINE,
    NO_DEADLINE,
    O_ABANDONED,
    O_ATTEMPT,
    O_BACK,
    O_CLIENT,
    O_DEADLINE,
    O_ENTERED,
    O_ERRORS,
    O_EVENTS,
    O_JOURNEY,
    O_KIND,
    O_LAST_CHANNEL,
    O_LAST_TYPE,
    O_OUTCOME,
    O_PROGRESS,
    O_RESOLVE_CHANNEL,
    O_RESOLVED_AT,
    O_SEGMENT,
    O_START,
    O_STEP,
    O_SWITCHES,
    OF_CALLS,
    OF_SESSIONS,
    OUTCOME_COMPLETED,
    OUTCOME_FAILED,
    OUTCOME_LAPSED,
    OUTCOME_PROGRESSED,
    T_ENTERED,
    T_LAST_EVENT,
    T_PROGRESS,
    T_STALLED_AT,
    T_START,
)

FLAG_ERROR = 1
FLAG_CALL = 2
FLAG_SESSION = 4
TERMINAL_SUCCESS = 1
# How many events ahead the apply kernel prefetches: the index bucket of the client, then
# the client's record, then its first instance (each stage reads what the one before
# fetched). Measured on 1 M clients in 16 shards, together with the [slot, field] layout:
# the kernel alone 325-344 -> 218-238 ns per event; inside the state-only flow 1.12-1.20 ->
# 1.04-1.15 s for 6.7 M events.
AHEAD_BUCKET = 16
AHEAD_CLIENT = 8
AHEAD_INSTANCE = 2


# ---------------------------------------------------------------- client index
# Linear probing over a power-of-two table of client slots (int32, -1 marks an empty bucket);
# the key of a slot is read from the slot-key column, so the table holds no keys. Deletion
# shifts later entries back so no tombstones accumulate.


@njit_no_refcount
def _home(key: np.uint64, mask: int) -> np.int64:
    # The hash's halves swapped: a shard is chosen by ``mix64(key) % shards``, so the clients
    # of one shard share the low bits (all 4 of them with 16 shards), and a bucket taken from
    # them left 15 of 16 buckets unused as homes (6.7 probes a lookup instead of 2.1).
    h = mix64(key)
    return np.int64(((h >> np.uint64(32)) | (h << np.uint64(32))) & np.uint64(mask))


@njit_no_refcount
def ht_find(table: np.ndarray, slot_keys: np.ndarray, key: np.uint64) -> int:
    """Slot whose key is ``key``, or -1."""
    mask = len(table) - 1
    i = _home(key, mask)
    while True:
        s = table[i]
        if s < 0:
            return -1
        if slot_keys[s] == key:
            return int(s)
        i = (i + 1) & mask


@njit_no_refcount
def ht_insert(table: np.ndarray, slot_keys: np.ndarray, slot: int) -> None:
    """Index ``slot`` under its key ``slot_keys[slot]`` (which must be absent)."""
    mask = len(table) - 1
    i = _home(slot_keys[slot], mask)
    while table[i] >= 0:
        i = (i + 1) & mask
    table[i] = slot


@njit_no_refcount
def ht_delete(table: np.ndarray, slot_keys: np.ndarray, slot: int) -> None:
    """Remove ``slot`` (which must be indexed), shifting its probe run back."""
    mask = len(table) - 1
    i = _home(slot_keys[slot], mask)
    while table[i] != slot:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        if table[j] < 0:
            break
        home = _home(slot_keys[table[j]], mask)
        # keep the entry at j where it is if its home lies cyclically in (i, j]
        if i <= j:
            stays = i < home <= j
        else:
            stays = home > i or home <= j
        if not stays:
            table[i] = table[j]
            i = j
    table[i] = -1


@njit_no_refcount
def ht_rebuild(table: np.ndarray, slot_keys: np.ndarray, used: np.ndarray) -> None:
    """Fill ``table`` with every used slot (``used`` may be shorter than ``slot_keys``)."""
    table[:] = -1
    for s in range(len(used)):
        if used[s]:
            ht_insert(table, slot_keys, s)


# ---------------------------------------------------------------- slots and instance lists
# Free slots: those at or above the high-water mark were never used; freed ones wait on a
# stack. A client's open instances form a list (``C_FIRST``, ``I_NEXT``) ordered by journey.


@njit_no_refcount
def _take_slot(free: np.ndarray, meta: np.ndarray, m_free: int, m_high: int) -> int:
    """A free slot: the last one freed, else the next never used."""
    if meta[m_free] > 0:
        meta[m_free] -= 1
        return int(free[meta[m_free]])
    meta[m_high] += 1
    return int(meta[m_high] - 1)


@njit_no_refcount
def find_instance(ci: np.ndarray, ii: np.ndarray, ih: np.ndarray, cs: int, journey: int) -> int:
    """The open instance of client slot ``cs`` in ``journey``, or -1."""
    slot = ci[cs, C_FIRST]
    while slot >= 0:
        j = ih[slot, H_JOURNEY]
        if j == journey:
            return int(slot)
        if j > journey:
            return -1
        slot = ii[slot, I_NEXT]
    return -1


@njit_no_refcount
def _link(ci: np.ndarray, ii: np.ndarray, ih: np.ndarray, cs: int, slot: int) -> None:
    """Put instance ``slot`` in its client's list, in journey order."""
    journey = ih[slot, H_JOURNEY]
    prev = -1
    cur = ci[cs, C_FIRST]
    while cur >= 0 and ih[cur, H_JOURNEY] < journey:
        prev = cur
        cur = ii[cur, I_NEXT]
    ii[slot, I_NEXT] = cur
    if prev < 0:
        ci[cs, C_FIRST] = slot
    else:
        ii[prev, I_NEXT] = slot


@njit_no_refcount
def _unlink(ci: np.ndarray, ii: np.ndarray, cs: int, slot: int) -> None:
    """Take instance ``slot`` out of its client's list."""
    prev = -1
    cur = ci[cs, C_FIRST]
    while cur != slot:
        prev = cur
        cur = ii[cur, I_NEXT]
    if prev < 0:
        ci[cs, C_FIRST] = ii[slot, I_NEXT]
    else:
        ii[prev, I_NEXT] = ii[slot, I_NEXT]
    ii[slot, I_NEXT] = -1


@njit_no_refcount
def find_instances(
    c_ht: np.ndarray,
    ckey: np.ndarray,
    ci: np.ndarray,
    ii: np.ndarray,
    ih: np.ndarray,
    client_keys: np.ndarray,
    journeys: np.ndarray,
    out: np.ndarray,
) -> None:
    """``out[k]``: the open instance slot of (``client_keys[k]``, ``journeys[k]``), or -1."""
    for k in range(len(client_keys)):
        cs = ht_find(c_ht, ckey, client_keys[k])
        out[k] = -1 if cs < 0 else find_instance(ci, ii, ih, cs, journeys[k])


@njit(cache=True, nogil=True)  # (slice copies need numba's runtime; not on the hot path)
def pack_ids(
    src: np.ndarray, off: np.ndarray, length: np.ndarray, used: np.ndarray, dst: np.ndarray
) -> int:
    """Copy the id bytes of each used slot to ``dst``, back to back in slot order, and point
    ``off`` at them; return the bytes written."""
    end = 0
    for s in range(len(used)):
        if used[s]:
            n = length[s]
            dst[end : end + n] = src[off[s] : off[s] + n]
            off[s] = end
            end += n
    return end


@njit_no_refcount
def _prefetch_ahead(
    e: int,
    e_ckey: np.ndarray,
    c_ht: np.ndarray,
    ckey: np.ndarray,
    cts: np.ndarray,
    cf: np.ndarray,
    ci: np.ndarray,
    it: np.ndarray,
    dl: np.ndarray,
    ii: np.ndarray,
    ih: np.ndarray,
) -> None:
    """Start loading the state later events of the batch will touch (no effect on results)."""
    n = len(e_ckey)
    mask = len(c_ht) - 1
    if e + AHEAD_BUCKET < n:
        prefetch(c_ht, _home(e_ckey[e + AHEAD_BUCKET], mask))
    if e + AHEAD_CLIENT < n:
        cs = c_ht[_home(e_ckey[e + AHEAD_CLIENT], mask)]  # the first probe is enough here
        if cs >= 0:
            prefetch(ckey, cs)
            prefetch(ci, cs)
            prefetch(cts, cs)
            prefetch(cf, cs)
    if e + AHEAD_INSTANCE < n:
        cs = ht_find(c_ht, ckey, e_ckey[e + AHEAD_INSTANCE])
        slot = ci[cs, C_FIRST] if cs >= 0 else -1
        if slot >= 0:
            prefetch(ii, slot)
            prefetch(ih, slot)
            prefetch(it, slot)
            prefetch(dl, slot)


# ---------------------------------------------------------------- instance life cycle


@njit_no_refcount
def _emit_record(
    slot: int,
    deadline: int,
    kind: int,
    outcome: int,
    resolved_at: int,
    channel: int,
    it: np.ndarray,
    ii: np.ndarray,
    ih: np.ndarray,
    out_i: np.ndarray,
    n_out: int,
) -> None:
    """Write record ``n_out``'s integers: the instance's fields, then the given ones."""
    out_i[O_CLIENT, n_out] = ii[slot, I_CLIENT]
    out_i[O_JOURNEY, n_out] = ih[slot, H_JOURNEY]
    out_i[O_STEP, n_out] = ih[slot, H_STEP]
    out_i[O_START, n_out] = it[slot, T_START]
    out_i[O_DEADLINE, n_out] = deadline
    out_i[O_ENTERED, n_out] = it[slot, T_ENTERED]
    out_i[O_PROGRESS, n_out] = it[slot, T_PROGRESS]
    out_i[O_LAST_TYPE, n_out] = ih[slot, H_LAST_TYPE]
    out_i[O_LAST_CHANNEL, n_out] = ih[slot, H_LAST_CHANNEL]
    out_i[O_EVENTS, n_out] = ii[slot, I_EVENTS]
    out_i[O_ERRORS, n_out] = ii[slot, I_ERRORS]
    out_i[O_BACK, n_out] = ii[slot, I_BACK]
    out_i[O_SWITCHES, n_out] = ii[slot, I_SWITCHES]
    out_i[O_ATTEMPT, n_out] = ii[slot, I_ATTEMPT]
    out_i[O_ABANDONED, n_out] = ih[slot, H_ABANDONED]
    out_i[O_KIND, n_out] = kind
    out_i[O_OUTCOME, n_out] = outcome
    out_i[O_RESOLVED_AT, n_out] = resolved_at
    out_i[O_RESOLVE_CHANNEL, n_out] = channel
    out_i[O_SEGMENT, n_out] = ih[slot, H_SEGMENT]


@njit_no_refcount
def _emit_stall(
    slot: int,
    deadline: int,
    half_life_ms: float,
    cts: np.ndarray,
    cf: np.ndarray,
    it: np.ndarray,
    ii: np.ndarray,
    ih: np.ndarray,
    out_i: np.ndarray,
    out_f: np.ndarray,
    n_out: int,
) -> None:
    _emit_record(slot, deadline, KIND_STALL, 0, -1, -1, it, ii, ih, out_i, n_out)
    client = ii[slot, I_CLIENT]
    age = deadline - cts[client, C_LAST_TS]
    decay = 2.0 ** (-age / half_life_ms) if age > 0 else 1.0
    out_f[OF_CALLS, n_out] = cf[client, F_CALLS] * decay
    out_f[OF_SESSIONS, n_out] = cf[client, F_SESSIONS] * decay


@njit_no_refcount
def _emit_outcome(
    slot: int,
    outcome: int,
    resolved_at: int,
    channel: int,
    it: np.ndarray,
    ii: np.ndarray,
    ih: np.ndarray,
    out_i: np.ndarray,
    out_f: np.ndarray,
    n_out: int,
) -> None:
    """Record the outcome of the instance's last stall (fields of the stall, then the result)."""
    deadline = it[slot, T_STALLED_AT]
    _emit_record(
        slot, deadline, KIND_OUTCOME, outcome, resolved_at, channel, it, ii, ih, out_i, n_out
    )
    out_f[OF_CALLS, n_out] = 0.0
    out_f[OF_SESSIONS, n_out] = 0.0


@njit_no_refcount
def _close(
    slot: int,
    client_ttl_ms: int,
    cts: np.ndarray,
    ci: np.ndarray,
    dl: np.ndarray,
    ii: np.ndarray,
    it: np.ndarray,
    i_free: np.ndarray,
    meta: np.ndarray,
) -> None:
    """Free instance ``slot``. When it was the client's last-progressed instance, that role
    passes to the client's open instance that progressed last (ties: the higher journey
    code, applied later), so events that name no journey still reach an open instance."""
    client = ii[slot, I_CLIENT]
    _unlink(ci, ii, client, slot)
    ii[slot, I_CLIENT] = -1
    dl[slot] = NO_DEADLINE
    i_free[meta[M_I_FREE]] = slot
    meta[M_I_FREE] += 1
    ci[client, C_OPEN] -= 1
    if ci[client, C_LAST_INST] == slot:
        best = -1
        cur = ci[client, C_FIRST]
        while cur >= 0:  # in journey-code order: >= lets the higher code win a tie
            if best < 0 or it[cur, T_PROGRESS] >= it[best, T_PROGRESS]:
                best = cur
            cur = ii[cur, I_NEXT]
        ci[client, C_LAST_INST] = best
    if ci[client, C_OPEN] == 0:
        expiry = cts[client, C_LAST_TS] + client_ttl_ms
        meta[M_NEXT_CLIENT_EXPIRY] = min(meta[M_NEXT_CLIENT_EXPIRY], expiry)


@njit_no_refcount
def _settle(
    slot: int,
    now: int,
    close_after: np.ndarray,
    half_life_ms: float,
    client_ttl_ms: int,
    cts: np.ndarray,
    cf: np.ndarray,
    ci: np.ndarray,
    it: np.ndarray,
    dl: np.ndarray,
    ii: np.ndarray,
    ih: np.ndarray,
    i_free: np.ndarray,
    meta: np.ndarray,
    counters: np.ndarray,
    out_i: np.ndarray,
    out_f: np.ndarray,
    n_out: int,
) -> tuple[int, bool]:
    """Apply what the passage of time to ``now`` does to an instance whose deadline passed.

    Returns the new number of stall records and whether the instance was closed.
    """
    deadline = dl[slot]
    if ih[slot, H_STALLED] == 0:
        ii[slot, I_ATTEMPT] += 1
        ih[slot, H_STALLED] = 1
        _emit_stall(slot, deadline, half_life_ms, cts, cf, it, ii, ih, out_i, out_f, n_out)
        n_out += 1
        counters[K_STALLED] += 1
        it[slot, T_STALLED_AT] = deadline
        deadline = deadline + close_after[ih[slot, H_JOURNEY]]
        dl[slot] = deadline
        meta[M_NEXT_DEADLINE] = min(meta[M_NEXT_DEADLINE], deadline)
    if deadline <= now:
        _emit_outcome(slot, OUTCOME_LAPSED, deadline, -1, it, ii, ih, out_i, out_f, n_out)
        n_out += 1
        _close(slot, client_ttl_ms, cts, ci, dl, ii, it, i_free, meta)
        counters[K_CLOSED] += 1
        return n_out, True
    return n_out, False


@njit_no_refcount
def apply_events(
    e_ckey: np.ndarray,
    e_ts: np.ndarray,
    e_channel: np.ndarray,
    e_type: np.ndarray,
    e_journey: np.ndarray,
    e_step: np.ndarray,
    e_flags: np.ndarray,
    e_segment: np.ndarray,
    step_timeout: np.ndarray,
    step_terminal: np.ndarray,
    abandon_grace: np.ndarray,
    close_after: np.ndarray,
    half_life_ms: float,
    client_ttl_ms: int,
    c_ht: np.ndarray,
    ckey: np.ndarray,
    cts: np.ndarray,
    cf: np.ndarray,
    ci: np.ndarray,
    c_free: np.ndarray,
    it: np.ndarray,
    dl: np.ndarray,
    ii: np.ndarray,
    ih: np.ndarray,
    i_free: np.ndarray,
    meta: np.ndarray,
    counters: np.ndarray,
    e_cslot: np.ndarray,
    e_new: np.ndarray,
    e_effect: np.ndarray,
    e_fjourney: np.ndarray,
    e_fstep: np.ndarray,
    out_i: np.ndarray,
    out_f: np.ndarray,
    start: int,
) -> tuple[int, int]:
    """Apply sorted events from index ``start``; return (records written, next event).

    Stops early when ``out_*`` might not hold the records of the next event (a stall and an
    outcome per journey, and one outcome). Fills ``e_effect``/``e_fjourney``/``e_fstep``.
    The caller guarantees enough free client and instance slots (one of each per event) and
    room in the client index.
    """
    n_out = 0
    n_journeys = step_timeout.shape[0]
    room = out_i.shape[1]
    for e in range(start, len(e_ts)):
        if n_out + 2 * n_journeys + 1 > room:
            return n_out, e
        _prefetch_ahead(e, e_ckey, c_ht, ckey, cts, cf, ci, it, dl, ii, ih)
        t = e_ts[e]
        counters[K_EVENTS] += 1
        cs = ht_find(c_ht, ckey, e_ckey[e])
        e_new[e] = cs < 0
        if cs < 0:
            cs = _take_slot(c_free, meta, M_C_FREE, M_C_HIGH)
            ckey[cs] = e_ckey[e]
            ht_insert(c_ht, ckey, cs)
            cts[cs, C_LAST_TS] = t
            cf[cs, F_CALLS] = 0.0
            cf[cs, F_SESSIONS] = 0.0
            ci[cs, C_LAST_INST] = -1
            ci[cs, C_OPEN] = 0
            ci[cs, C_FIRST] = -1
            meta[M_NEXT_CLIENT_EXPIRY] = min(meta[M_NEXT_CLIENT_EXPIRY], t + client_ttl_ms)
        e_cslot[e] = cs
        e_effect[e] = EFFECT_NONE
        e_fjourney[e] = -1
        e_fstep[e] = -1

        # time passes to t for this client first: its instances whose deadline passed stall
        # (or close) before the event counts in any feature
        slot = int(ci[cs, C_FIRST])
        while slot >= 0:
            after = int(ii[slot, I_NEXT])  # read first: settling may close the instance
            if dl[slot] <= t:
                n_out, _closed = _settle(
                    slot, t, close_after, half_life_ms, client_ttl_ms, cts, cf, ci,
                    it, dl, ii, ih, i_free, meta, counters, out_i, out_f, n_out,
                )  # fmt: skip
            slot = after
        if ci[cs, C_OPEN] == 0 and cts[cs, C_LAST_TS] + client_ttl_ms <= t:
            # idle long enough to be forgotten (its last instance may have just closed
            # above): start afresh whether or not the expiry pass (which depends on how
            # the watermark moved) has freed it yet
            cts[cs, C_LAST_TS] = t
            cf[cs, F_CALLS] = 0.0
            cf[cs, F_SESSIONS] = 0.0
            ci[cs, C_LAST_INST] = -1
            meta[M_NEXT_CLIENT_EXPIRY] = min(meta[M_NEXT_CLIENT_EXPIRY], t + client_ttl_ms)

        j = e_journey[e]
        s = e_step[e]
        if j >= 0:
            target = find_instance(ci, ii, ih, cs, j)
        else:
            target = int(ci[cs, C_LAST_INST])

        age = t - cts[cs, C_LAST_TS]
        if age > 0:
            decay = 2.0 ** (-age / half_life_ms)
            cf[cs, F_CALLS] *= decay
            cf[cs, F_SESSIONS] *= decay
            cts[cs, C_LAST_TS] = t
        flags = e_flags[e]
        if flags & FLAG_CALL:
            cf[cs, F_CALLS] += 1.0
        if flags & FLAG_SESSION:
            cf[cs, F_SESSIONS] += 1.0

        if s >= 0:
            terminal = step_terminal[j, s]
            if target < 0:
                if terminal != 0:
                    continue  # a terminal event with nothing open: nothing to track
                target = _take_slot(i_free, meta, M_I_FREE, M_I_HIGH)
                ii[target, I_CLIENT] = cs
                ih[target, H_JOURNEY] = j
                _link(ci, ii, ih, cs, target)
                ih[target, H_STEP] = s
                ii[target, I_EVENTS] = 0
                ii[target, I_ERRORS] = 0
                ii[target, I_BACK] = 0
                ii[target, I_SWITCHES] = 0
                ii[target, I_ATTEMPT] = 0
                ih[target, H_STALLED] = 0
                ih[target, H_SEGMENT] = -1
                ih[target, H_LAST_CHANNEL] = e_channel[e]
                it[target, T_START] = t
                it[target, T_ENTERED] = t
                it[target, T_STALLED_AT] = -1
                ci[cs, C_OPEN] += 1
                counters[K_STARTED] += 1
                e_effect[e] = EFFECT_STARTED
            else:
                counters[K_ADVANCED] += 1
                if ih[target, H_STALLED] == 1:
                    if terminal == 0:
                        outcome = OUTCOME_PROGRESSED
                    elif terminal == TERMINAL_SUCCESS:
                        outcome = OUTCOME_COMPLETED
                    else:
                        outcome = OUTCOME_FAILED
                    _emit_outcome(target, outcome, t, e_channel[e], it, ii, ih, out_i, out_f, n_out)
                    n_out += 1
                    ih[target, H_STALLED] = 0
                    counters[K_RESUMED] += 1
                previous = ih[target, H_STEP]
                if s < previous:
                    ii[target, I_BACK] += 1
                if s != previous:
                    it[target, T_ENTERED] = t
                e_effect[e] = EFFECT_ADVANCED
            if terminal != 0:
                e_effect[e] = EFFECT_COMPLETED if terminal == TERMINAL_SUCCESS else EFFECT_FAILED
            e_fjourney[e] = j
            e_fstep[e] = s
            if e_segment[e] >= 0:
                ih[target, H_SEGMENT] = e_segment[e]
            _attribute(target, t, e_type[e], e_channel[e], flags, ii, ih, it)
            ih[target, H_STEP] = s
            ih[target, H_ABANDONED] = 0
            it[target, T_PROGRESS] = t
            ci[cs, C_LAST_INST] = target
            if terminal != 0:
                counters[K_COMPLETED if terminal == TERMINAL_SUCCESS else K_FAILED] += 1
                _close(target, client_ttl_ms, cts, ci, dl, ii, it, i_free, meta)
            else:
                deadline = t + step_timeout[j, s]
                dl[target] = deadline
                meta[M_NEXT_DEADLINE] = min(meta[M_NEXT_DEADLINE], deadline)
        elif target >= 0:
            e_effect[e] = EFFECT_COUNTED
            e_fjourney[e] = ih[target, H_JOURNEY]
            e_fstep[e] = ih[target, H_STEP]
            if e_segment[e] >= 0:
                ih[target, H_SEGMENT] = e_segment[e]
            _attribute(target, t, e_type[e], e_channel[e], flags, ii, ih, it)
            grace = abandon_grace[ih[target, H_JOURNEY], e_type[e]]
            if grace >= 0 and ih[target, H_STALLED] == 0:
                counters[K_ABANDON_SIGNALS] += 1
                deadline = t + grace
                if deadline < dl[target]:
                    dl[target] = deadline
                    ih[target, H_ABANDONED] = 1
                    meta[M_NEXT_DEADLINE] = min(meta[M_NEXT_DEADLINE], deadline)
    return n_out, len(e_ts)


@njit_no_refcount
def _attribute(
    slot: int,
    t: int,
    type_code: int,
    channel: int,
    flags: int,
    ii: np.ndarray,
    ih: np.ndarray,
    it: np.ndarray,
) -> None:
    if ii[slot, I_EVENTS] > 0 and ih[slot, H_LAST_CHANNEL] != channel:
        ii[slot, I_SWITCHES] += 1
    ii[slot, I_EVENTS] += 1
    if flags & FLAG_ERROR:
        ii[slot, I_ERRORS] += 1
    ih[slot, H_LAST_TYPE] = type_code
    ih[slot, H_LAST_CHANNEL] = channel
    it[slot, T_LAST_EVENT] = t


@njit_no_refcount
def expire_instances(
    watermark: int,
    start: int,
    close_after: np.ndarray,
    half_life_ms: float,
    client_ttl_ms: int,
    cts: np.ndarray,
    cf: np.ndarray,
    ci: np.ndarray,
    it: np.ndarray,
    dl: np.ndarray,
    ii: np.ndarray,
    ih: np.ndarray,
    i_free: np.ndarray,
    meta: np.ndarray,
    counters: np.ndarray,
    out_i: np.ndarray,
    out_f: np.ndarray,
) -> tuple[int, int, int]:
    """Settle every instance from slot ``start`` on whose deadline is at or before ``watermark``.

    Stops early when ``out_*`` is full. Returns (records written, next slot to scan, smallest
    deadline left among the slots scanned); slots at or above the high-water mark are unused.
    """
    high = meta[M_I_HIGH]
    room = out_i.shape[1]
    n_out = 0
    smallest = NO_DEADLINE
    for slot in range(start, high):
        deadline = dl[slot]
        if deadline <= watermark:
            if n_out + 2 > room:
                return n_out, slot, smallest
            n_out, _closed = _settle(
                slot, watermark, close_after, half_life_ms, client_ttl_ms, cts, cf, ci,
                it, dl, ii, ih, i_free, meta, counters, out_i, out_f, n_out,
            )  # fmt: skip
            deadline = dl[slot]
        smallest = min(smallest, deadline)
    return n_out, high, smallest


@njit_no_refcount
def expire_clients(
    watermark: int,
    client_ttl_ms: int,
    c_ht: np.ndarray,
    ckey: np.ndarray,
    cts: np.ndarray,
    ci: np.ndarray,
    c_free: np.ndarray,
    meta: np.ndarray,
) -> int:
    """Free clients with no open instance idle since ``watermark - client_ttl_ms``.

    Returns how many were freed and sets the next client-expiry bound.
    """
    freed = 0
    smallest = NO_DEADLINE
    for cs in range(meta[M_C_HIGH]):
        if ci[cs, C_OPEN] != 0:
            continue
        expiry = cts[cs, C_LAST_TS] + client_ttl_ms
        if expiry <= watermark:
            ht_delete(c_ht, ckey, cs)
            ci[cs, C_OPEN] = -1
            ci[cs, C_LAST_INST] = -1
            c_free[meta[M_C_FREE]] = cs
            meta[M_C_FREE] += 1
            freed += 1
        elif expiry < smallest:
            smallest = expiry
    meta[M_NEXT_CLIENT_EXPIRY] = smallest
    return freed
