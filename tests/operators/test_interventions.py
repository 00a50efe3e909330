"""Intervention ids and priorities: vectorised versions equal the one-row definitions."""

import uuid

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ato.catalog import CHANNELS, SEGMENTS, TIERS, load_catalog
from ato.threads import SPLIT_MIN_ROWS
from operators.interventions import (
    ID_NAMESPACE,
    InterventionBuilder,
    Routing,
    deadline_id_order,
    intervention_id,
    intervention_ids,
    priorities,
    priority,
)
from policy.profiles import CONTACT_CHANNELS
from state.base import Records
from state.layout import (
    N_OUT,
    N_OUT_F,
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

rows = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=20),
        st.sampled_from(["open_account", "wealth_purchase", "large_transfer"]),
        st.integers(0, 2**42),
        st.sampled_from(["start", "confirm", "otp"]),
        st.integers(1, 5),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=2000)
@given(rows)
def test_intervention_ids_match_uuid5(items: list[tuple[str, str, int, str, int]]) -> None:
    """Vectorised ids equal the one-row id, which equals uuid.uuid5 of the joined fields."""
    columns = [list(col) for col in zip(*items, strict=True)] if items else [[]] * 5
    ids = intervention_ids(*columns)
    assert ids == [intervention_id(*row) for row in items]
    for (c, j, t, s, a), iid in zip(items, ids, strict=True):
        assert iid == str(uuid.uuid5(ID_NAMESPACE, f"{c}\x1f{j}\x1f{t}\x1f{s}\x1f{a}"))


CATALOG = load_catalog()
BUILDER = InterventionBuilder(CATALOG)
WIDTH = BUILDER.width

id_rows = st.lists(
    st.tuples(
        # any text but NUL (the decoder dead-letters it); long ones span SHA-1 blocks
        st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=90),
        st.integers(0, len(CATALOG.journeys) - 1),
        st.integers(0, WIDTH - 1),
        st.integers(-(2**62), 2**62),
        st.integers(1, 10**6),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(id_rows)
def test_id_kernel_matches_its_twin(items: list[tuple[str, int, int, int, int]]) -> None:
    """The numba UUID-5 kernel (InterventionBuilder.ids) equals intervention_id (hashlib)."""
    n = len(items)
    ints = np.zeros((N_OUT, n), np.int64)
    for r, (_, j, s, start, attempt) in enumerate(items):
        ints[O_JOURNEY, r], ints[O_STEP, r], ints[O_START, r], ints[O_ATTEMPT, r] = (
            j, s, start, attempt,
        )  # fmt: skip
    records = Records(np.zeros(n, np.uint64), [c for c, *_ in items], ints, np.zeros((N_OUT_F, n)))
    got = BUILDER.ids(records).view("S36").ravel().astype("U36").tolist()
    expected = [
        intervention_id(c, BUILDER.journey_names[j], start, BUILDER.step_names[j, s], attempt)
        for c, j, s, start, attempt in items
    ]
    assert got == expected


def test_ids_of_a_large_batch_in_two_halves_match_the_twin() -> None:
    """At SPLIT_MIN_ROWS records and more, two threads hash a half each."""
    rng = np.random.default_rng(5)
    n = SPLIT_MIN_ROWS * 2 + 3
    ints = np.zeros((N_OUT, n), np.int64)
    ints[O_JOURNEY] = rng.integers(0, len(CATALOG.journeys), n)
    ints[O_STEP] = rng.integers(0, WIDTH, n)
    ints[O_START] = rng.integers(0, 2**45, n)
    ints[O_ATTEMPT] = rng.integers(1, 4, n)
    clients = [f"client-{k}" * int(1 + k % 5) for k in range(n)]
    records = Records(np.zeros(n, np.uint64), clients, ints, np.zeros((N_OUT_F, n)))
    got = BUILDER.ids(records).view("S36").ravel().astype("U36").tolist()
    rows = ints[[O_JOURNEY, O_STEP, O_START, O_ATTEMPT]].T.tolist()
    assert got == [
        intervention_id(c, BUILDER.journey_names[j], t, BUILDER.step_names[j, s], a)
        for c, (j, s, t, a) in zip(clients, rows, strict=True)
    ]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3), st.sampled_from(["0", "7f", "ff"]), st.text("0af-", max_size=28)
        ),
        max_size=20,
    )
)
def test_deadline_id_order_sorts_by_deadline_then_whole_id(
    rows: list[tuple[int, str, str]],
) -> None:
    """Ties on the deadline and on the first 8 characters still sort by the whole id."""
    texts = [(head + "0" * 8)[:8] + tail.ljust(28, "0") for _, head, tail in rows]
    ids = np.array([list(t.encode()) for t in texts], np.uint8).reshape(len(rows), 36)
    deadline = np.array([d for d, _, _ in rows], np.int64)
    order = deadline_id_order(deadline, ids)
    assert [(deadline[i], texts[i]) for i in order] == sorted(zip(deadline, texts, strict=True))


def test_id_depends_on_every_field() -> None:
    base = ("C1", "open_account", 1000, "start", 1)
    variants = [
        ("C2", *base[1:]),
        (base[0], "wealth_purchase", *base[2:]),
        (*base[:2], 1001, *base[3:]),
        (*base[:3], "confirm", base[4]),
        (*base[:4], 2),
    ]
    assert len({intervention_id(*v) for v in [base, *variants]}) == 6


@settings(max_examples=100, deadline=2000)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 100),
            st.integers(0, 9),
            st.integers(0, 9),
            st.integers(0, 9),
            st.floats(0, 10, allow_nan=False),
            st.booleans(),
            st.integers(1, 5),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_priorities_match_priority(items: list[tuple]) -> None:
    """The numpy priority equals the scalar definition and stays within 0-100."""
    cols = [np.array(c) for c in zip(*items, strict=True)]
    got = priorities(*cols).tolist()
    assert got == [priority(*row) for row in items]
    assert all(0 <= p <= 100 for p in got)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=16),  # client id: quotes, escapes, any code point
            st.integers(0, 2**42),  # instance start
            st.integers(0, 10**9),  # deadline after start
            st.integers(0, 50),  # small counters
            st.integers(1, 5),  # attempt
            st.booleans(),  # abandoned
            st.floats(0, 50, allow_nan=False),  # decayed calls
            st.floats(0, 50, allow_nan=False),  # decayed sessions
        ),
        max_size=25,
    ),
    st.randoms(use_true_random=False),
)
def test_rendered_documents_equal_the_dict_definition(items: list[tuple], rnd) -> None:
    """``build`` (numba rendering) writes exactly ``orjson.dumps`` of ``build_docs``, in order."""
    catalog = load_catalog()
    builder = InterventionBuilder(catalog)
    n = len(items)
    ints = np.zeros((N_OUT, n), np.int64)
    floats = np.zeros((N_OUT_F, n), np.float64)
    for r, (_, start, after, small, attempt, abandoned, calls, sessions) in enumerate(items):
        journey = rnd.randrange(len(catalog.journeys))
        ints[O_JOURNEY, r] = journey
        ints[O_STEP, r] = rnd.randrange(len(catalog.journeys[journey].steps))
        ints[O_START, r] = start
        ints[O_DEADLINE, r] = start + after
        ints[O_ENTERED, r] = start + after // 2
        ints[O_PROGRESS, r] = start + after // 3
        ints[O_LAST_TYPE, r] = rnd.randrange(len(catalog.type_names))
        ints[O_LAST_CHANNEL, r] = rnd.randrange(len(CHANNELS))
        for field in (O_EVENTS, O_ERRORS, O_BACK, O_SWITCHES):
            ints[field, r] = small + field
        ints[O_ATTEMPT, r] = attempt
        ints[O_ABANDONED, r] = abandoned
        floats[OF_CALLS, r], floats[OF_SESSIONS, r] = calls, sessions
    clients = [row[0] for row in items]
    stalls = Records(np.arange(n, dtype=np.uint64), clients, ints, floats)
    routing = None
    if rnd.random() < 0.5:  # routed by the contact policy
        routing = Routing(
            tier=[rnd.choice(TIERS) for _ in range(n)],
            channel=[rnd.choice(CONTACT_CHANNELS) for _ in range(n)],
            priority=[rnd.randrange(101) for _ in range(n)],
            segment=[rnd.choice(SEGMENTS) for _ in range(n)],
            rm_id=[rnd.choice(["", "RM0001", 'R"M\\é']) for _ in range(n)],
        )
    batch = builder.build(stalls, 1_700_000_000_000, routing=routing)
    docs = builder.build_docs(stalls, 1_700_000_000_000, routing=routing)
    if routing is not None:
        assert all({"channel", "segment", "rm_id"} <= d.keys() for d in docs)
    assert batch.lines == b"".join(orjson.dumps(d, option=orjson.OPT_APPEND_NEWLINE) for d in docs)
    assert batch.ids == [d["intervention_id"] for d in docs]
    assert batch.client_ids == [d["client_id"] for d in docs]
    assert batch.docs() == docs
