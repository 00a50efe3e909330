"""Layout of a shard store: field indices of its 2-D arrays and of the stall records.

State arrays are ``[slot, field]``: the fields of one client or one instance sit together,
so touching a random client costs a few cache lines rather than one per field (a 20-field
random update took about 210 ns per event laid out ``[field, slot]`` and 50 ns
``[slot, field]``). Instance deadlines are a separate 1-D array, so the expiry scan reads
them contiguously. The stall records stay ``[field, record]`` (they are read by field).
Kernels, twins and the Python wrapper share these names.
"""

import numpy as np

NO_DEADLINE = np.iinfo(np.int64).max

# Instance deadlines, int64 [cap] (``dl``): the stall deadline; after a stall, the close
# deadline; NO_DEADLINE when the slot is free.

# Instance timestamps, int64 [cap, 5].
T_START = 0  # event time of the instance's first event
T_PROGRESS = 1  # event time of its last progress event
T_ENTERED = 2  # event time it entered its current step
T_STALLED_AT = 3  # the deadline at which the instance last stalled
T_LAST_EVENT = 4  # event time of the last event attributed to the instance
N_TIMES = 5

# Instance integers, int32 [cap, 7].
I_CLIENT = 0  # client slot, -1 when the instance slot is free
I_NEXT = 1  # the client's next open instance (higher journey code), -1 at the end
I_EVENTS = 2  # events attributed to the instance
I_ERRORS = 3
I_BACK = 4  # back-steps (moved to an earlier step)
I_SWITCHES = 5  # channel switches between consecutive events
I_ATTEMPT = 6  # stalls so far
N_INTS = 7

# Small instance integers, int16 [cap, 7].
H_JOURNEY = 0
H_STEP = 1
H_LAST_TYPE = 2  # type code of the last event attributed to the instance
H_LAST_CHANNEL = 3
H_STALLED = 4  # 1 after a stall until the client progresses again
H_ABANDONED = 5  # 1 when an abandon signal shortened the current deadline
H_SEGMENT = 6  # client segment code (ato.catalog.SEGMENTS) last seen on its events, -1
N_HALVES = 7
MAX_HALF = np.iinfo(np.int16).max  # journeys, steps and type codes must fit

# Client columns.
C_LAST_TS = 0  # int64 [cap, 1]: event time of the client's last event
N_CLIENT_TIMES = 1
F_CALLS = 0  # float64 [cap, 2]: decayed count of calls
F_SESSIONS = 1  # decayed count of app sessions
C_LAST_INST = 0  # int32 [cap, 3]: the instance that last progressed, -1 if none
C_OPEN = 1  # open instances; -1 when the client slot is free
C_FIRST = 2  # its open instance with the lowest journey code, -1 if none
N_CLIENT_INTS = 3

# meta int64 [6]. Slots at or above the high-water mark were never used (and never
# initialised); freed slots below it wait on the free stack.
M_C_FREE = 0  # freed client slots on the stack
M_I_FREE = 1  # freed instance slots on the stack
M_NEXT_DEADLINE = 2  # lower bound of all instance deadlines
M_NEXT_CLIENT_EXPIRY = 3  # lower bound of idle-client expiry times
M_C_HIGH = 4  # client slots ever used (the high-water mark)
M_I_HIGH = 5  # instance slots ever used
N_META = 6

# counters int64 [9]
K_EVENTS = 0
K_STARTED = 1
K_ADVANCED = 2  # progress events on an open instance
K_COMPLETED = 3
K_FAILED = 4
K_STALLED = 5
K_RESUMED = 6  # progress after a stall
K_CLOSED = 7  # stalled instances closed without progress (close_after passed)
K_ABANDON_SIGNALS = 8
N_COUNTERS = 9
COUNTER_NAMES = (
    "events",
    "started",
    "advanced",
    "completed",
    "failed",
    "stalled",
    "resumed",
    "closed",
    "abandon_signals",
)

# A record, int64 [20, n] + float64 [2, n]: a stall (O_KIND = KIND_STALL) or the outcome of
# an earlier stall (KIND_OUTCOME: O_STEP, O_ATTEMPT, O_DEADLINE are those of the stall).
O_CLIENT = 0  # client slot (kernels) or client hash (twins); the wrapper reports both
O_JOURNEY = 1
O_STEP = 2
O_START = 3
O_DEADLINE = 4
O_ENTERED = 5
O_PROGRESS = 6
O_LAST_TYPE = 7
O_LAST_CHANNEL = 8
O_EVENTS = 9
O_ERRORS = 10
O_BACK = 11
O_SWITCHES = 12
O_ATTEMPT = 13
O_ABANDONED = 14
O_KIND = 15
O_OUTCOME = 16  # OUTCOME_* for outcome records, 0 for stalls
O_RESOLVED_AT = 17  # event time of the outcome, -1 for stalls
O_RESOLVE_CHANNEL = 18  # channel of the event that resolved it, -1 when none
O_SEGMENT = 19
N_OUT = 20
OF_CALLS = 0
OF_SESSIONS = 1
N_OUT_F = 2

KIND_STALL = 0
KIND_OUTCOME = 1
OUTCOME_PROGRESSED = 1  # the client moved on (not to a terminal step) after the stall
OUTCOME_COMPLETED = 2  # ... reached a success step
OUTCOME_FAILED = 3  # ... reached a failure step
OUTCOME_LAPSED = 4  # close_after (the attribution window) passed without progress
OUTCOME_NAMES = ("", "progressed", "completed", "failed", "lapsed")

# What an event did (the apply kernel's per-event effect output), for funnel counts.
EFFECT_NONE = 0  # not attributed to any instance
EFFECT_COUNTED = 1  # attributed to an open instance without moving it
EFFECT_STARTED = 2
EFFECT_ADVANCED = 3  # moved an open instance to a non-terminal step
EFFECT_COMPLETED = 4
EFFECT_FAILED = 5

# Idle clients are freed when the watermark passes a multiple of this (ms): the pass reads
# every client slot, and run at each move of the watermark past the next expiry it read 21
# slots for each client it freed. When a slot is freed changes no output: a client idle for
# the TTL starts afresh at its next event, freed or not.
CLIENT_SWEEP_MS = 6 * 3_600_000


def client_sweep_time(watermark: int) -> int:
    """Idle clients whose expiry is at or before this are freed at ``watermark``."""
    return watermark - watermark % CLIENT_SWEEP_MS
