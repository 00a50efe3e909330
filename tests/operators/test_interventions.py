"""Intervention ids and priorities: vectorised versions equal the one-row definitions."""

import uuid

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.interventions import (
    ID_NAMESPACE,
    intervention_id,
    intervention_ids,
    priorities,
    priority,
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
