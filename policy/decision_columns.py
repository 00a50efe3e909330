"""A batch of contact-policy decisions as columns: what the policy step emits.

The policy step decides hundreds of thousands of stalls in a run, and one
:class:`policy.rules.Decision` object per candidate cost more of the flow's thread than the
checks themselves. :class:`DecisionColumns` keeps codes and arrays; names, documents and
``Decision`` objects are made only when something reads them (the decisions sink, the
metrics rows, tests).
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ato.catalog import SEGMENTS, TIERS
from policy.batch_checks import REASONS
from policy.profiles import CONTACT_CHANNELS
from policy.rules import OUTCOMES, SENT, Decision, decisions_of_columns

SENT_CODE = OUTCOMES.index(SENT)
_FIELDS = tuple(f.name for f in fields(Decision))
# names of the codes, indexed by code
SEGMENT_NAMES, TIER_NAMES, CHANNEL_NAMES, REASON_NAMES, DECISION_NAMES = (
    np.array(names, dtype=object)
    for names in (SEGMENTS, TIERS, CONTACT_CHANNELS, REASONS, OUTCOMES)
)


@dataclass(frozen=True)
class DecisionColumns:
    """Decisions aligned by row, one column per :class:`~policy.rules.Decision` field.

    ``journey`` and ``step`` are catalog codes, named by ``journey_names`` and
    ``step_names[journey, step]``; ``segment``, ``outcome``, ``reason``, ``tier`` and
    ``channel`` index ``ato.catalog.SEGMENTS``, ``policy.rules.OUTCOMES``,
    ``policy.batch_checks.REASONS``, ``ato.catalog.TIERS`` and
    ``policy.profiles.CONTACT_CHANNELS``.
    """

    journey_names: np.ndarray  # object [journeys]
    step_names: np.ndarray  # object [journeys, steps]
    ids: np.ndarray  # uint8 [n, 36]: intervention ids
    client_id: list[str]
    journey: np.ndarray  # int64
    step: np.ndarray  # int64
    attempt: np.ndarray  # int64
    segment: np.ndarray  # int64
    outcome: np.ndarray  # int64
    reason: np.ndarray  # int64
    tier: np.ndarray  # int64
    channel: np.ndarray  # int64
    priority: np.ndarray  # int64, after the routing rule's adjustment
    rm_id: list[str]  # the RM for the offline tier, else ""
    decided_at_ms: np.ndarray  # int64
    recheck_at_ms: np.ndarray  # int64: when a deferred decision is made again, else 0
    replayed: np.ndarray  # bool: an id the caps had recorded as sent already

    def __len__(self) -> int:
        return len(self.journey)

    @staticmethod
    def empty(journey_names: np.ndarray, step_names: np.ndarray) -> "DecisionColumns":
        """No decisions."""
        no = np.empty(0, np.int64)
        return DecisionColumns(
            journey_names, step_names, np.empty((0, 36), np.uint8), [], no, no, no, no, no, no,
            no, no, no, [], no, no, np.empty(0, bool),
        )  # fmt: skip

    @staticmethod
    def concat(parts: Sequence["DecisionColumns"]) -> "DecisionColumns":
        """The rows of ``parts`` (at least one), in order."""
        full = [p for p in parts if len(p)]
        if len(full) <= 1:
            return full[0] if full else parts[0]
        first = full[0]
        columns: dict[str, Any] = {}
        for name in _ROW_FIELDS:
            values = [getattr(p, name) for p in full]
            if isinstance(values[0], list):
                columns[name] = [v for part in values for v in part]
            else:
                columns[name] = np.concatenate(values)
        return DecisionColumns(first.journey_names, first.step_names, **columns)

    def take(self, rows: np.ndarray) -> "DecisionColumns":
        """The decisions at ``rows`` (indices)."""
        index = rows.tolist()
        columns: dict[str, Any] = {}
        for name in _ROW_FIELDS:
            value = getattr(self, name)
            columns[name] = [value[i] for i in index] if isinstance(value, list) else value[rows]
        return DecisionColumns(self.journey_names, self.step_names, **columns)

    def sent_rows(self) -> np.ndarray:
        """Rows of the sent decisions (indices, in order)."""
        return np.flatnonzero(self.outcome == SENT_CODE)

    def counts(self) -> Counter[str]:
        """Decisions per outcome name."""
        found = np.bincount(self.outcome, minlength=len(OUTCOMES))
        return Counter({name: int(n) for name, n in zip(OUTCOMES, found.tolist(), strict=True)})

    def texts(self) -> dict[str, list[Any]]:
        """Every field as a list of the values a ``Decision`` holds, in field order."""
        return {
            "intervention_id": self.ids.view("S36").ravel().astype("U36").tolist(),
            "client_id": self.client_id,
            "journey": self.journey_names[self.journey].tolist(),
            "step": self.step_names[self.journey, self.step].tolist(),
            "attempt": self.attempt.tolist(),
            "segment": SEGMENT_NAMES[self.segment].tolist(),
            "outcome": DECISION_NAMES[self.outcome].tolist(),
            "reason": REASON_NAMES[self.reason].tolist(),
            "tier": TIER_NAMES[self.tier].tolist(),
            "channel": CHANNEL_NAMES[self.channel].tolist(),
            "priority": self.priority.tolist(),
            "rm_id": self.rm_id,
            "decided_at_ms": self.decided_at_ms.tolist(),
            "recheck_at_ms": self.recheck_at_ms.tolist(),
            "replayed": self.replayed.tolist(),
        }

    def docs(self) -> list[dict[str, Any]]:
        """One dict per decision, keys in ``Decision`` field order (its ``asdict``)."""
        texts = self.texts()
        return [dict(zip(_FIELDS, row, strict=True)) for row in zip(*texts.values(), strict=True)]

    def decisions(self) -> list[Decision]:
        """One ``Decision`` per row."""
        return decisions_of_columns(self.texts())


_ROW_FIELDS = tuple(f.name for f in fields(DecisionColumns))[2:]
