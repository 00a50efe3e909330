"""Event-time watermark over input partitions, driven by an explicit wall clock (BRIEF §3)."""

import pickle

from operators.watermark import MIN_WATERMARK, WatermarkTracker

T0 = 1_767_600_000_000  # event time
W0 = 5_000_000  # wall clock at construction
LATE = 500
IDLE = 10_000


def tracker(partitions: tuple[str, ...] = ("p0", "p1"), live: bool = False) -> WatermarkTracker:
    return WatermarkTracker(list(partitions), LATE, IDLE, live, W0)


def test_single_partition_subtracts_lateness() -> None:
    """Watermark = partition max event time - allowed lateness."""
    wm = tracker(("p0",))
    wm.observe("p0", T0, W0 + 1)
    assert wm.advance(W0 + 1) == T0 - LATE


def test_minimum_over_partitions() -> None:
    """The slowest active partition sets the watermark."""
    wm = tracker()
    wm.observe("p0", T0 + 9_000, W0)
    wm.observe("p1", T0 + 2_000, W0)
    assert wm.advance(W0) == T0 + 2_000 - LATE
    wm.observe("p1", T0 + 20_000, W0 + 1)
    assert wm.advance(W0 + 1) == T0 + 9_000 - LATE


def test_never_heard_partition_holds_until_its_source_reports_caught_up() -> None:
    """A partition never heard of holds at MIN however long; caught up and quiet, it idles."""
    wm = tracker()
    wm.observe("p0", T0, W0 + 100)
    assert wm.advance(W0 + 100) == MIN_WATERMARK
    wm.observe("p1", None, W0 + IDLE // 2, caught_up=True)  # an empty read
    assert wm.advance(W0 + IDLE - 1) == MIN_WATERMARK  # quiet since the start, not yet IDLE
    assert wm.advance(W0 + IDLE) == T0 - LATE


def test_silent_partition_with_a_backlog_holds_forever() -> None:
    """Its source said more is queued: silence is a busy source, not an idle partition."""
    wm = tracker()
    wm.observe("p0", T0, W0)
    wm.observe("p1", T0 + 5, W0, caught_up=False)
    for k in range(1, 20):
        wm.observe("p0", T0 + k * 60_000, W0 + k * IDLE)
        assert wm.advance(W0 + k * IDLE) == T0 + 5 - LATE
    wm.observe("p1", T0 + 1_000, W0 + 20 * IDLE)
    assert wm.advance(W0 + 20 * IDLE) == T0 + 1_000 - LATE


def test_idle_partition_released_then_holds_again_without_going_back() -> None:
    """An idle partition stops holding; when it speaks again it holds, but never lowers it."""
    wm = tracker()
    wm.observe("p0", T0, W0)
    wm.observe("p1", T0, W0, caught_up=True)
    assert wm.advance(W0) == T0 - LATE
    wm.observe("p0", T0 + 50_000, W0 + IDLE)
    assert wm.advance(W0 + IDLE) == T0 + 50_000 - LATE  # p1 silent for IDLE: released
    wm.observe("p1", T0 + 1_000, W0 + IDLE + 1)  # p1 resumes, far behind
    assert wm.advance(W0 + IDLE + 1) == T0 + 50_000 - LATE  # never goes back
    wm.observe("p0", T0 + 90_000, W0 + IDLE + 2)
    assert wm.advance(W0 + IDLE + 2) == T0 + 50_000 - LATE  # p1 holds it again
    wm.observe("p1", T0 + 70_000, W0 + IDLE + 3)
    assert wm.advance(W0 + IDLE + 3) == T0 + 70_000 - LATE


def test_all_idle_live_follows_wall_clock() -> None:
    """Live clock and every partition idle: watermark = wall clock - lateness."""
    wm = tracker(live=True)
    wm.observe("p0", 1_000, W0, caught_up=True)
    wm.observe("p1", 2_000, W0, caught_up=True)
    assert wm.advance(W0) == 1_000 - LATE
    assert wm.advance(W0 + IDLE - 1) == 1_000 - LATE
    assert wm.advance(W0 + IDLE) == W0 + IDLE - LATE
    assert wm.advance(W0 + IDLE + 777) == W0 + IDLE + 777 - LATE


def test_a_partition_whose_source_became_unsure_holds_the_live_watermark() -> None:
    """p1 said it was caught up, then that its broker does not answer: it holds the
    watermark however long it stays silent (before, silence after the last heartbeat made it
    idle, and a live watermark followed the wall clock past deadlines nobody could see)."""
    wm = tracker(live=True)
    wm.observe("p0", 1_000, W0, caught_up=True)
    wm.observe("p1", 2_000, W0, caught_up=True)
    wm.observe("p1", None, W0 + 100, unsure=True)
    assert wm.advance(W0 + 10 * IDLE) == 2_000 - LATE  # p0 is idle; p1 holds
    wm.observe("p1", 2_500, W0 + 10 * IDLE, caught_up=True)  # it answers again
    assert wm.advance(W0 + 12 * IDLE) == W0 + 12 * IDLE - LATE


def test_an_unsure_report_is_not_bad_input() -> None:
    """Repeated unsure reports (no messages) never make a partition idle the way a run of
    bad messages does."""
    wm = tracker(("p0",))
    wm.observe("p0", 1_000, W0)
    for k in range(1, 30):
        wm.observe("p0", None, W0 + k * 1_000, unsure=True)
    assert wm.advance(W0 + 30 * 1_000) == 1_000 - LATE
    assert not wm.parts["p0"].idle(wm.idle_ms, IDLE)


def test_all_idle_replay_stays_put() -> None:
    """Replay clock: idleness alone never moves the watermark."""
    wm = tracker(live=False)
    wm.observe("p0", T0, W0)
    wm.observe("p1", T0 + 5, W0)
    assert wm.advance(W0) == T0 - LATE
    assert wm.advance(W0 + 10 * IDLE) == T0 - LATE
    assert wm.advance(W0 + 100 * IDLE) == T0 - LATE


def test_never_seen_partitions_replay_stay_at_min() -> None:
    """Nothing ever arrived and all idle in replay: the watermark stays at MIN."""
    wm = tracker(live=False)
    assert wm.advance(W0 + 10 * IDLE) == MIN_WATERMARK


def test_out_of_order_batches_keep_the_max() -> None:
    """A batch with older events does not lower a partition's max event time."""
    wm = tracker(("p0",))
    wm.observe("p0", T0 + 3_000, W0)
    wm.observe("p0", T0 + 1_000, W0 + 1)
    assert wm.advance(W0 + 1) == T0 + 3_000 - LATE
    wm.observe("p0", None, W0 + 2)  # a batch with no valid event
    assert wm.advance(W0 + 2) == T0 + 3_000 - LATE


def test_equal_timestamps() -> None:
    """Partitions at the same event time give that time minus lateness."""
    wm = tracker()
    wm.observe("p0", T0, W0)
    wm.observe("p1", T0, W0)
    wm.observe("p0", T0, W0 + 1)
    assert wm.advance(W0 + 1) == T0 - LATE


def test_zero_lateness() -> None:
    """With no allowed lateness the watermark is the minimum max event time itself."""
    wm = WatermarkTracker(["p0"], 0, IDLE, False, W0)
    wm.observe("p0", T0, W0)
    assert wm.advance(W0) == T0


def test_unknown_partition_joins() -> None:
    """A partition not named at construction joins when it first delivers."""
    wm = tracker(("p0",))
    wm.observe("p0", T0 + 10_000, W0)
    wm.observe("p9", T0, W0)
    assert wm.advance(W0) == T0 - LATE


def test_final_is_greatest_event_time() -> None:
    """At end of input the watermark jumps to the greatest event time on any partition."""
    wm = tracker(("p0", "p1", "never"))
    wm.observe("p0", T0 + 4_000, W0)
    wm.observe("p1", T0 + 9_000, W0)
    assert wm.advance(W0) == MIN_WATERMARK
    assert wm.max_event_ts() == T0 + 9_000
    assert wm.final() == T0 + 9_000
    assert wm.current == T0 + 9_000


def test_final_without_events_keeps_current() -> None:
    """No events at all: final() returns the current watermark."""
    wm = tracker()
    assert wm.max_event_ts() is None
    assert wm.final() == MIN_WATERMARK


def test_snapshot_restore_round_trip() -> None:
    """A restored tracker has the same watermark and per-partition progress."""
    wm = tracker()
    wm.observe("p0", T0 + 8_000, W0)
    wm.observe("p1", T0 + 3_000, W0)
    wm.advance(W0)
    snap = pickle.loads(pickle.dumps(wm.snapshot()))
    back = tracker()
    back.restore(snap, W0 + 100 * IDLE)  # a restart much later in wall time
    assert back.current == wm.current == T0 + 3_000 - LATE
    assert back.max_event_ts() == T0 + 8_000
    # every partition got a fresh idle window, so p1 still holds the watermark
    back.observe("p0", T0 + 20_000, W0 + 100 * IDLE + 1)
    assert back.advance(W0 + 100 * IDLE + 1) == T0 + 3_000 - LATE
    back.observe("p1", T0 + 15_000, W0 + 100 * IDLE + 2)
    assert back.advance(W0 + 100 * IDLE + 2) == T0 + 15_000 - LATE


def test_snapshot_is_a_copy() -> None:
    """Later observations do not change an earlier snapshot."""
    wm = tracker(("p0",))
    wm.observe("p0", T0, W0)
    wm.advance(W0)
    snap = wm.snapshot()
    wm.observe("p0", T0 + 1_000, W0)
    wm.advance(W0)
    assert snap == {"current": T0 - LATE, "max_ts": {"p0": T0}}


def test_is_late_at_the_boundary() -> None:
    """An event exactly at the watermark is on time; one millisecond earlier is late."""
    wm = tracker(("p0",))
    assert not wm.is_late(-(2**61))  # nothing is late before any progress
    wm.observe("p0", T0, W0)
    w = wm.advance(W0)
    assert not wm.is_late(w)
    assert wm.is_late(w - 1)
    assert not wm.is_late(T0)


def test_partition_with_only_bad_messages_goes_idle() -> None:
    """Batches without valid events (max_ts None) for a whole idle timeout do not keep a
    partition active."""
    wm = tracker()
    wm.observe("p0", T0, W0)
    for k in range(1, 11):
        wm.observe("p1", None, W0 + k * 1_000)  # all dead letters, from W0 + 1 s on
        wm.observe("p0", T0 + k, W0 + k * 1_000)
    assert wm.advance(W0 + 1_000 + IDLE - 1) == MIN_WATERMARK
    wm.observe("p1", None, W0 + 1_000 + IDLE)
    wm.observe("p0", T0 + 11, W0 + 1_000 + IDLE)
    assert wm.advance(W0 + 1_000 + IDLE) == T0 + 11 - LATE


def test_one_bad_batch_and_then_silence_holds() -> None:
    """A partition behind its traffic (valid events queued) that happened to read one batch
    of only bad messages is not one that keeps sending bad input: it still holds."""
    wm = tracker()
    wm.observe("p0", T0, W0)
    wm.observe("p1", T0, W0)
    wm.observe("p1", None, W0 + IDLE - 200)  # the one bad batch, then nothing
    for k in range(1, 30):
        wm.observe("p0", T0 + k * 60_000, W0 + k * 1_000)
        assert wm.advance(W0 + k * 1_000) == T0 - LATE
    wm.observe("p1", T0 + 1, W0 + 30_000)
    assert not wm.is_late(T0 + 1)


def test_a_valid_event_ends_a_run_of_bad_batches() -> None:
    """Bad batches before a valid event do not count towards a later run of them."""
    wm = tracker()
    wm.observe("p0", T0, W0)
    wm.observe("p1", None, W0 + 1_000)
    wm.observe("p1", T0, W0 + 2_000)
    for k in range(3, 2 * IDLE // 1_000 + 2):
        wm.observe("p0", T0 + k, W0 + k * 1_000)
        if W0 + k * 1_000 >= W0 + 2_000 + IDLE:
            wm.observe("p1", None, W0 + k * 1_000)  # bad only, from 12 s on
    # p1: last valid at 2 s, bad from 12 s; at 21 s the bad run has lasted 9 s, not IDLE
    assert wm.advance(W0 + 2 * IDLE + 1_000) == T0 - LATE


def test_a_long_gap_counts_at_most_max_gap() -> None:
    """A worker blocked for 12 s (a kernel compiling) does not make a partition look idle."""
    wm = WatermarkTracker(["p0", "p1"], LATE, IDLE, False, W0, max_gap_ms=1_000)
    wm.observe("p0", T0 + 5_000, W0)
    wm.observe("p1", T0, W0, caught_up=True)
    assert wm.advance(W0) == T0 - LATE
    wm.observe("p0", T0 + 9_000, W0 + 12_000)  # the first call after the pause
    assert wm.advance(W0 + 12_000) == T0 - LATE  # p1 has been silent for 1 s of idle clock
    assert wm.idle_ms == 1_000


def test_idleness_accrues_in_regular_ticks() -> None:
    """With calls every 200 ms the idle clock keeps pace with the wall clock."""
    wm = WatermarkTracker(["p0", "p1"], LATE, IDLE, False, W0, max_gap_ms=1_000)
    wm.observe("p0", T0, W0)
    wm.observe("p1", T0, W0, caught_up=True)
    now = W0
    while now < W0 + IDLE - 200:
        now += 200
        wm.observe("p0", T0 + now - W0, now)
        assert wm.advance(now) == T0 - LATE  # p1 still holds
    now += 200
    wm.observe("p0", T0 + now - W0, now)
    assert wm.advance(now) == T0 + IDLE - LATE  # p1 silent for IDLE: released


def test_wall_clock_going_back_adds_no_idle_time() -> None:
    """A wall clock stepping backwards neither lowers nor advances the idle clock."""
    wm = WatermarkTracker(["p0"], LATE, IDLE, False, W0, max_gap_ms=1_000)
    wm.advance(W0 + 500)
    wm.advance(W0 - 60_000)
    assert wm.idle_ms == 500
    wm.advance(W0 + 700)
    assert wm.idle_ms == 700


def test_live_an_event_stamped_ahead_of_the_wall_clock_counts_as_now() -> None:
    """A skewed device clock: one event an hour ahead must not carry the watermark an hour
    ahead, which would make every on-time event after it late. Replay is history: no cap."""
    live = tracker(("p0",), live=True)
    live.observe("p0", W0 + 3_600_000, W0)
    assert live.advance(W0) == W0 - LATE
    assert not live.is_late(W0 + 10)
    live.observe("p0", W0 + 10, W0 + 20)
    assert live.advance(W0 + 20) == W0 + 10 - LATE
    replay = tracker(("p0",), live=False)
    replay.observe("p0", W0 + 3_600_000, W0)
    assert replay.advance(W0) == W0 + 3_600_000 - LATE


def test_replay_an_event_stamped_ahead_of_its_arrival_counts_as_arrived() -> None:
    """Replayed from Kafka, a batch's arrival time plays the wall clock's part: an event
    stamped 6 h ahead (a skewed device clock) does not drag the watermark past the on-time
    events that follow it, as it would not have live."""
    hour = 3_600_000
    wm = tracker(("p0",))
    wm.observe("p0", T0 + 6 * hour, W0, arrived_ms=T0 + 3_000)
    assert wm.advance(W0) == T0 + 3_000 - LATE
    assert not wm.is_late(T0 + 4_000)  # the on-time events after it
    wm.observe("p0", T0 + 30_000, W0 + 1, arrived_ms=T0 + 31_000)
    assert wm.advance(W0 + 1) == T0 + 30_000 - LATE
    unknown = tracker(("p0",))  # a file: no arrival time, the event counts as stamped
    unknown.observe("p0", T0 + 6 * hour, W0)
    assert unknown.advance(W0) == T0 + 6 * hour - LATE
